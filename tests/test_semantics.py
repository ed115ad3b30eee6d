"""torch's semantics for the eager API: accumulation, retain_graph, retain_grad, no_grad,
autograd.grad, printing and the errors torch raises."""

import numpy as np
import pytest

import tapegrad as tg


def leaf(v):
    return tg.tensor(v, requires_grad=True)


def test_grad_accumulates_in_place_on_leaves_only():
    x = leaf(3.0)
    (x * x).backward()
    g = x.grad
    (x * 2.0).backward()
    assert x.grad is g and x.grad.item() == 8.0
    y = x * 2.0
    y.backward()
    assert y.grad is None and not y.is_leaf and x.is_leaf


def test_second_backward_through_saved_values_raises_and_retain_graph_allows_it():
    x = leaf(2.0)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_second_backward_through_ops_without_saved_values_is_allowed():
    x = leaf(2.0)
    y = x + 1.0
    y.backward()
    y.backward()
    assert x.grad.item() == 2.0


def test_partially_freed_graph_raises_only_where_values_were_freed():
    x = leaf(2.0)
    h = x * x
    a = h * 3.0
    a.backward()  # frees h's and a's saved values
    b = h + 1.0   # a new graph through h
    with pytest.raises(RuntimeError, match="second time"):
        b.backward()
    c = leaf(1.0) * 5.0  # unrelated graphs are unaffected
    c.backward()


def test_independent_graphs_on_one_tape():
    x = leaf(2.0)
    y = leaf(3.0)
    loss1 = x * x
    loss2 = y * y
    loss1.backward()
    assert y.grad is None  # not reached by loss1
    loss2.backward()
    assert (x.grad.item(), y.grad.item()) == (4.0, 6.0)


def test_reached_leaf_with_zero_gradient_gets_zero_not_none():
    x = leaf(-1.0)
    tg.relu(x).backward()
    assert x.grad is not None and x.grad.item() == 0.0


def test_gradient_argument_scales():
    x = leaf(3.0)
    (x * x).backward(gradient=tg.tensor(0.5))
    assert x.grad.item() == 3.0
    x.grad = None
    (x * x).backward(2.0)
    assert x.grad.item() == 12.0


def test_backward_on_a_leaf():
    x = leaf(3.0)
    x.backward()
    assert x.grad.item() == 1.0


def test_retain_grad():
    x = leaf(2.0)
    z = x * 3.0
    z.retain_grad()
    (z * z).backward()
    assert z.grad.item() == 12.0
    x.retain_grad()  # a no-op on leaves
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        tg.tensor(1.0).retain_grad()


def test_no_grad_enable_grad_set_grad_enabled():
    x = leaf(2.0)
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = x * x
        with tg.enable_grad():
            z = x * x
    assert tg.is_grad_enabled()
    assert not y.requires_grad and z.requires_grad

    @tg.no_grad()
    def f(t):
        return t * t

    assert not f(x).requires_grad
    with tg.set_grad_enabled(False):
        assert not (x * x).requires_grad
    assert (x * x).requires_grad


def test_autograd_grad_leaves_grad_alone_and_handles_options():
    x, y = leaf(2.0), leaf(5.0)
    z = x * y
    gx, gy = tg.autograd.grad(z, [x, y], retain_graph=True)
    assert (gx.item(), gy.item()) == (5.0, 2.0) and x.grad is None
    (gx,) = tg.autograd.grad([z], [x], grad_outputs=[tg.tensor(3.0)], retain_graph=True)
    assert gx.item() == 15.0
    unused = leaf(1.0)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        tg.autograd.grad(z, [unused], retain_graph=True)


def test_autograd_grad_allow_unused_returns_none():
    x, unused = leaf(2.0), leaf(1.0)
    gx, gu = tg.autograd.grad(x * x, [x, unused], allow_unused=True)
    assert gx.item() == 4.0 and gu is None


def test_autograd_grad_with_respect_to_a_non_leaf():
    x = leaf(2.0)
    h = x * 3.0
    (gh,) = tg.autograd.grad(h * h, h)
    assert gh.item() == 12.0


def test_errors_mirror_torch():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (tg.tensor(1.0) * 2.0).backward()
    with pytest.raises(RuntimeError, match="floating point"):
        tg.tensor(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="floating point"):
        tg.tensor(True).requires_grad_()
    with pytest.raises(RuntimeError, match="leaf variables"):
        (leaf(1.0) * 2.0).requires_grad_(False)
    with pytest.raises(RuntimeError, match="detach"):
        leaf(1.0).numpy()
    with pytest.raises(TypeError, match="complex"):
        tg.tensor(1 + 2j)
    with pytest.raises(TypeError, match="mul"):
        leaf(1.0) * "a"
    with pytest.raises(TypeError, match="exp"):
        tg.exp("a")
    with pytest.raises(RuntimeError, match="shape"):
        (leaf(1.0) * 2.0).backward(gradient=np.ones(3))
    with pytest.raises(ValueError, match="clamp"):
        tg.clamp(leaf(1.0))
    # and the library keeps working
    x = leaf(2.0)
    (x * x).backward()
    assert x.grad.item() == 4.0


def test_conversions():
    x = leaf(2.5)
    assert x.item() == 2.5 and float(x) == 2.5
    d = (x * 2.0).detach()
    assert d.is_leaf and not d.requires_grad and d.numpy() == np.array(5.0)
    assert x.requires_grad_(False) is x and not x.requires_grad
    assert tg.tensor(np.float64(1.5)).item() == 1.5 and tg.tensor(np.array(2.0)).item() == 2.0


@pytest.mark.parametrize(
    "value,text",
    [(2.0, "tensor(2.)"), (0.35355339, "tensor(0.3536)"), (-0.5, "tensor(-0.5000)"),
     (1e-5, "tensor(1.0000e-05)"), (123456789.0, "tensor(1.2346e+08)"), (3, "tensor(3)"),
     (True, "tensor(True)"), (float("nan"), "tensor(nan)"), (float("-inf"), "tensor(-inf)")],
)
def test_printing_like_torch(value, text):
    assert repr(tg.tensor(value)) == text


def test_printing_grad_fn_and_requires_grad():
    x = leaf(1.0)
    assert repr(x) == "tensor(1., requires_grad=True)"
    assert repr(x**2) == "tensor(1., grad_fn=<PowBackward>)"
    assert repr(x * 2.0 + 1.0) == "tensor(3., grad_fn=<AddBackward>)"
    assert repr(tg.exp(x)).endswith("grad_fn=<ExpBackward>)")


def test_dtypes_of_unrecorded_results():
    assert repr(tg.tensor(3) + tg.tensor(4)) == "tensor(7)"
    assert repr(tg.tensor(3) / 2) == "tensor(1.5000)"
    assert repr(tg.tensor(3.0) > 2) == "tensor(True)"
    assert tg.tensor(2).dtype == "int64" and tg.tensor(2.0).dtype == "float64"


def test_comparisons_and_guards_do_not_change_gradients():
    x = leaf(2.0)
    y = x * x if x > 1.0 else -x
    assert (x > 1.0).requires_grad is False
    y.backward()
    assert x.grad.item() == 4.0


def test_graph_continues_across_a_closed_tape():
    x = leaf(2.0)
    h = x * x
    h.backward(retain_graph=True)  # closes the tape: new ops go to a fresh one
    x.grad = None
    y = h * 3.0
    assert y.tape is not h.tape
    y.backward()
    assert x.grad.item() == 12.0


def test_training_loop_releases_each_graph():
    w = leaf(0.0)
    tapes = set()
    for _ in range(2000):
        loss = (w * 3.0 - 6.0) ** 2
        loss.backward()
        assert loss.tape.released and not loss.tape.rows
        tapes.add(id(loss.tape))
        with tg.no_grad():
            w._v -= 0.01 * w.grad.item()
        w.grad = None
    assert abs(w.item() - 2.0) < 1e-9
