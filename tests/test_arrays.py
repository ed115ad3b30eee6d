"""Array tensors: every array op against torch (float64) and central differences, broadcasting,
indexing, reductions, the error cases."""

import math

import numpy as np
import pytest
from tapegrad.kernels.table import OPS

import tapegrad as tg
import tapegrad.nn.functional as F
import tapegrad.numpy as tnp
from tapegrad import kernels

from .conftest import torch


def central_differences(f, arrays, weights, eps=1e-6):
    """d sum(f(*arrays) * weights) / d arrays, by central differences (no recording)."""
    grads = []
    for k, base in enumerate(arrays):
        g = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            values = []
            for sign in (1.0, -1.0):
                moved = [a.copy() for a in arrays]
                moved[k][i] += sign * eps
                with tg.no_grad():
                    out = f(*[tg.tensor(a) for a in moved])
                values.append(float(np.sum(np.asarray(out.detach().numpy()) * weights)))
            g[i] = (values[0] - values[1]) / (2 * eps)
        grads.append(g)
    return grads


def check(f, arrays, torch_f=None, fd=True, rtol=1e-6, atol=1e-8):
    """Value and gradient of sum(f(*arrays) * R) (R fixed, random) against torch and differences."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    inputs = [tg.tensor(a, requires_grad=True) for a in arrays]
    out = f(*inputs)
    weights = np.random.default_rng(7).normal(size=out.shape)
    loss = (out * tg.tensor(weights)).sum() if out.shape else out * float(weights)
    loss.backward()
    grads = [np.zeros_like(a) if t.grad is None else t.grad.numpy() for a, t in zip(arrays, inputs)]
    for a, g in zip(arrays, grads):
        assert g.shape == a.shape
    if torch is not None:
        torch_f = torch_f or f
        t_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
        t_out = torch_f(*t_inputs)
        np.testing.assert_allclose(out.detach().numpy(), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
        if t_out.requires_grad:
            (t_out * torch.tensor(weights)).sum().backward()
        for g, t in zip(grads, t_inputs):
            expected = np.zeros(g.shape) if t.grad is None else t.grad.numpy()
            np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-12)
    if fd:
        for g, d in zip(grads, central_differences(f, arrays, weights)):
            np.testing.assert_allclose(g, d, rtol=rtol, atol=atol)
    return out, grads


# ---------------------------------------------------------------------------- elementwise ops
BROADCASTS = [((4, 3), (3,)), ((4, 1), (1, 3)), ((), (2, 3)), ((2, 3), ()), ((2, 3), (2, 3)),
              ((2, 1, 3), (4, 1))]
PARAMS = {"clamp": (-0.5, 0.5)}
DIFFERENTIABLE = [s for s in OPS if s.differentiable]


def _sample(spec, shape, rng):
    lo, hi = spec.domain
    return rng.uniform(lo, hi, size=shape)


def _torch_op(spec):
    return lambda *t: eval(spec.torch, {"torch": torch, "x": t[0], "y": t[-1],
                                        "p0": PARAMS.get(spec.name, (0, 0))[0],
                                        "p1": PARAMS.get(spec.name, (0, 0))[1]})


@pytest.mark.parametrize("spec", [s for s in DIFFERENTIABLE if s.arity == 1], ids=lambda s: s.name)
def test_unary_op_on_arrays(spec, rng):
    params = PARAMS.get(spec.name, ())
    check(lambda x: getattr(tg, spec.name)(x, *params), [_sample(spec, (3, 4), rng)], _torch_op(spec))


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("spec", [s for s in DIFFERENTIABLE if s.arity == 2], ids=lambda s: s.name)
def test_binary_op_broadcasts(spec, shapes, rng):
    x, y = (_sample(spec, s, rng) for s in shapes)
    check(lambda a, b: getattr(tg, spec.name)(a, b), [x, y], _torch_op(spec))


@pytest.mark.parametrize("spec", [s for s in DIFFERENTIABLE if s.arity == 2], ids=lambda s: s.name)
def test_binary_op_with_a_python_number(spec, rng):
    x = _sample(spec, (2, 3), rng)
    c = 0.3 * spec.domain[0] + 0.7 * spec.domain[1]
    f = getattr(tg, spec.name)
    check(lambda a: f(a, c), [x], lambda a: _torch_op(spec)(a, torch.tensor(c)) if torch else None)
    check(lambda a: f(c, a), [x], lambda a: _torch_op(spec)(torch.tensor(c), a) if torch else None)


@pytest.mark.parametrize("c", sorted({y for s in OPS for y in s.literal_y} | {1.7, 0.0}))
def test_constant_exponents_with_loops_of_their_own(c, rng):
    """x ** c where the array kernels run a loop with c a literal (and two that take the general
    loop): eager values and gradients, and every replay sweep, against the formulas."""
    x = rng.uniform(0.2, 2.0, size=7)
    v = rng.normal(size=7)
    check(lambda a: a ** c, [x], lambda a: a ** c)
    cf = tg.compile(lambda a: tnp.sum(a ** c))
    np.testing.assert_allclose(cf(x), np.sum(x ** c), rtol=1e-14)
    np.testing.assert_allclose(cf.grad(x), c * x ** (c - 1), rtol=1e-14)
    np.testing.assert_allclose(cf.jvp((x,), (v,))[1], np.sum(c * x ** (c - 1) * v), rtol=1e-13)
    np.testing.assert_allclose(cf.hvp(x, v), c * (c - 1) * x ** (c - 2) * v, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("spec", [s for s in OPS if s.boolean], ids=lambda s: s.name)
def test_comparisons_give_bool_arrays_without_gradient(spec, rng):
    x = tg.tensor(rng.normal(size=(3, 2)), requires_grad=True)
    y = tg.tensor(rng.normal(size=(2,)))
    out = getattr(tg, spec.name)(x, y)
    assert out.dtype == "bool" and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), eval(spec.torch, {"x": x.detach().numpy(), "y": y.numpy()}))


def test_scalar_tensor_broadcasts_into_an_array_and_gets_the_summed_gradient():
    w = tg.tensor(2.0, requires_grad=True)
    x = tg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    (w * x).sum().backward()
    assert w.grad.item() == 10.0 and x.grad.numpy().tolist() == [[2.0, 2.0], [2.0, 2.0]]


def test_masked_partials_pass_nothing_at_the_branch_not_taken():
    # relu'(0) = 0, ties of maximum split, where() leaks no NaN from the other side
    x = tg.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    tg.relu(x).sum().backward()
    assert x.grad.numpy().tolist() == [0.0, 0.0, 1.0]
    a = tg.tensor([1.0, 2.0], requires_grad=True)
    b = tg.tensor([1.0, 3.0], requires_grad=True)
    tg.maximum(a, b).sum().backward()
    assert a.grad.numpy().tolist() == [0.5, 0.0] and b.grad.numpy().tolist() == [0.5, 1.0]
    x = tg.tensor([0.0, 4.0], requires_grad=True)
    tg.where(x > 0, tg.sqrt(x), 0.0).sum().backward()
    assert x.grad.numpy().tolist() == [0.0, 0.25]


# ---------------------------------------------------------------------------- linear algebra
MATMULS = [((3,), (3,)), ((2, 3), (3, 4)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 2, 3), (2, 3, 4)),
           ((2, 2, 3), (3, 4)), ((2, 3), (2, 3, 4)), ((3, 1, 2, 3), (2, 3, 2))]


@pytest.mark.parametrize("shapes", MATMULS, ids=str)
def test_matmul(shapes, rng):
    check(lambda a, b: a @ b, [rng.normal(size=s) for s in shapes])


@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("transposed", [False, True], ids=["v", "w.T"])
def test_a_tall_matrix_times_a_vector_sums_its_gradient_in_chunks(rng, batch, transposed):
    """The gradient of a vector multiplied by a matrix of more than a megabyte (whose rows the
    reverse sums in chunks, last first: array_math.matmul_reverse), eager and replayed, batched
    and as a linear layer's x @ w.T: the matrix's and the vector's against NumPy's."""
    lead = () if batch is None else (batch,)
    V, s = rng.normal(size=(*lead, 2100, 64)), rng.normal(size=(*lead, 2100, 2))
    w = rng.normal(size=(2, 64) if transposed else (64, 2))

    def f(V, w):
        r = V @ (w.T if transposed else w) - tg.tensor(s)
        return (r * r).sum() / 2.0

    r = V @ (w.T if transposed else w) - s
    gw = np.einsum("ri,rc->ci" if transposed else "ri,rc->ic", V.reshape(-1, 64), r.reshape(-1, 2))
    expected = (r @ (w if transposed else w.T), gw)
    for grads in (tg.grad(f, argnums=(0, 1))(V, w), tg.compile(f).grad(V, w, argnums=(0, 1))):
        for got, want in zip(grads, expected):
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_dot_and_outer(rng):
    x, y = rng.normal(size=3), rng.normal(size=3)
    check(tg.dot, [x, y], torch.dot if torch else None)
    check(tg.outer, [x, y], torch.outer if torch else None)


def test_seed_linear_layer_mean(rng):
    X, W, b = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    check(lambda X, W, b: tg.tanh(X @ W + b).mean(), [X, W, b],
          lambda X, W, b: torch.tanh(X @ W + b).mean() if torch else None)


# ---------------------------------------------------------------------------- reductions
REDUCTIONS = [dict(), dict(dim=0), dict(dim=1), dict(dim=(0, 2)), dict(dim=-1, keepdim=True)]


def _tg_kwargs(kw):
    return {"axis": kw.get("dim"), "keepdims": kw.get("keepdim", False)}


@pytest.mark.parametrize("kw", REDUCTIONS, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "prod", "logsumexp"])
def test_reduction(name, kw, rng):
    x = rng.uniform(0.5, 1.5, size=(2, 3, 4))
    if name == "logsumexp" and "dim" not in kw:
        kw = dict(dim=(0, 1, 2))

    def torch_f(t):
        if name == "prod" and isinstance(kw.get("dim"), tuple):  # torch's prod takes one dim
            for d in sorted(kw["dim"], reverse=True):
                t = t.prod(dim=d)
            return t
        return getattr(t, name)(**kw)

    check(lambda t: getattr(t, name)(**_tg_kwargs(kw)), [x], torch_f)


@pytest.mark.parametrize("kw", REDUCTIONS[1:], ids=str)
@pytest.mark.parametrize("name", ["max", "min", "var", "std"])
def test_reduction_along_axes(name, kw, rng):
    x = rng.normal(size=(2, 3, 4))

    def torch_f(t):
        if name in ("max", "min"):
            return getattr(t, "amax" if name == "max" else "amin")(**kw)
        return getattr(t, name)(**kw)

    check(lambda t: getattr(t, name)(**_tg_kwargs(kw)), [x], torch_f)


def test_max_splits_ties_and_prod_handles_zeros():
    x = tg.tensor([3.0, 1.0, 3.0], requires_grad=True)
    x.max().backward()
    assert x.grad.numpy().tolist() == [0.5, 0.0, 0.5]
    x = tg.tensor([2.0, 0.0, 5.0], requires_grad=True)
    x.prod().backward()
    assert x.grad.numpy().tolist() == [0.0, 10.0, 0.0]
    x = tg.tensor([0.0, 0.0, 5.0], requires_grad=True)
    x.prod().backward()
    assert x.grad.numpy().tolist() == [0.0, 0.0, 0.0]


def test_softmax_and_log_softmax(rng):
    x = rng.normal(size=(3, 4))
    check(lambda t: tg.softmax(t, -1), [x], lambda t: torch.softmax(t, -1) if torch else None)
    check(lambda t: tg.log_softmax(t, 0), [x], lambda t: torch.log_softmax(t, 0) if torch else None)
    big = tg.tensor([1000.0, 1000.0])
    assert tg.logsumexp(big, 0).item() == pytest.approx(1000.0 + np.log(2.0))


# ---------------------------------------------------------------------------- shapes and indexing
SHAPE_OPS = {
    "reshape": lambda t: t.reshape(4, 6),
    "T": lambda t: t.reshape(4, 6).T,
    "permute": lambda t: t.permute(2, 0, 1),
    "transpose": lambda t: t.transpose(0, 2),
    "unsqueeze-squeeze": lambda t: t.unsqueeze(1).squeeze(1) * 1.0,
    "flatten": lambda t: t.flatten(),
    "expand": lambda t: t[:, :1, :].expand(2, 5, 4),
}


@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_op(name, rng):
    f = SHAPE_OPS[name]
    torch_f = (lambda t: t.reshape(4, 6).T) if name == "T" else None
    check(f, [rng.normal(size=(2, 3, 4))], torch_f)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_concatenate_is_a_tree_of_join_rows(k, rng):
    """k pieces (array data among them): k - 1 join rows (one copy row for a single piece), whose
    value and gradient match torch's and differences along every axis; replayed, its gradient,
    tangents and Hessian too."""
    for axis in (0, 1, -1):
        shapes = [[2, 3, 4] for _ in range(k)]
        for j, shape in enumerate(shapes):
            shape[axis] = 1 + j % 3
        arrays = [rng.normal(size=shape) for shape in shapes]
        data = np.full(shapes[-1], 0.5)  # joined with the others: a data row's adjoint is never written

        def pieces(ts, data=data):
            return [ts[0], data, *ts[1:]] if k > 1 else list(ts)

        f = lambda *ts, axis=axis: tg.concatenate(pieces(ts), axis)  # noqa: E731
        torch_f = None if torch is None else (
            lambda *ts, axis=axis, data=data: torch.cat(pieces(ts, torch.tensor(data)), axis))
        out, _ = check(f, arrays, torch_f, fd=k <= 3)
        names = [out._tape.op_name(r) for r in range(out._slot + 1)]
        assert names.count("join") == (k if k > 1 else 0) and names.count("sum_into") == 0
    sizes = [math.prod(s) for s in shapes]
    ends = np.cumsum([0, *sizes])
    W = rng.normal(size=out.shape)

    def loss(x):  # the last axis's pieces, from one flat argument
        ts = [x[lo:hi].reshape(shape) for lo, hi, shape in zip(ends[:-1], ends[1:], shapes)]
        return tnp.sum(tnp.sin(tg.concatenate(pieces(ts), axis)) * W)

    cf = tg.compile(loss)
    x, v = rng.normal(size=ends[-1]), rng.normal(size=ends[-1])
    xt = tg.tensor(x, requires_grad=True)
    loss(xt).backward()
    value, grad = cf.value_and_grad(x)
    assert value == pytest.approx(loss(tg.tensor(x)).item(), rel=1e-14)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(cf.jvp((x,), (v,))[1], grad @ v, rtol=1e-12, atol=1e-14)
    eps = 1e-6
    H = np.stack([(cf.grad(x + eps * e) - cf.grad(x - eps * e)) / (2 * eps) for e in np.eye(len(x))])
    np.testing.assert_allclose(cf.hessian(x), H, rtol=1e-6, atol=1e-8)


def test_concatenate_a_piece_twice_and_an_empty_piece(rng):
    x = tg.tensor(rng.normal(size=(2, 3)), requires_grad=True)
    W = rng.normal(size=(4, 3))
    y = tg.concatenate([x, np.zeros((0, 3)), x], 0)
    np.testing.assert_array_equal(y.detach().numpy(), np.concatenate([x.detach().numpy()] * 2))
    (y * W).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), W[:2] + W[2:], rtol=1e-15)
    cf = tg.compile(lambda v: tnp.sum(tg.concatenate([v, v[:0], v * 2.0]) ** 2))
    v = rng.normal(size=5)
    value, grad = cf.value_and_grad(v)
    assert value == pytest.approx(5.0 * np.sum(v**2), rel=1e-14)
    np.testing.assert_allclose(grad, 10.0 * v, rtol=1e-14)


def test_broadcast_to_concatenate_stack(rng):
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(1, 3))
    check(lambda x: tg.broadcast_to(x, (4, 2, 3)), [a],
          lambda x: torch.broadcast_to(x, (4, 2, 3)) if torch else None)
    check(lambda x, y: tg.concatenate([x, y, x], 0), [a, b],
          lambda x, y: torch.cat([x, y, x], 0) if torch else None)
    check(lambda x, y: tg.stack([x, y], 1), [a, 2.0 * a + 1.0],
          lambda x, y: torch.stack([x, y], 1) if torch else None)


INDEXES = {
    "int": lambda t: t[1],
    "negative int": lambda t: t[-1, 2],
    "slice": lambda t: t[1:, ::2],
    "none": lambda t: t[None, :, 1],
    "ellipsis": lambda t: t[..., 1:3],
    "negative step": lambda t: t[::-1, 3:0:-2],
    "int and int array": lambda t: t[1, [3, 0, 3]],
    "repeated ints": lambda t: t[[0, 2, 0, 0]],
    "int pairs": lambda t: t[[0, 1, 1], [2, 0, 2]],
    "bool mask": lambda t: t[t.detach() > 0],
}


@pytest.mark.parametrize("name", list(INDEXES))
def test_indexing(name, rng):
    f = INDEXES[name]
    torch_f = {"bool mask": lambda t: t[t.detach() > 0],
               "negative step": lambda t: t.flip(0)[:, [3, 1]]}.get(name, f)  # torch: no negative steps
    check(f, [rng.normal(size=(3, 4))], torch_f)


def test_repeated_indices_accumulate():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    assert x.grad.numpy().tolist() == [3.0, 0.0, 1.0]


# ---------------------------------------------------------------------------- API
def test_tensor_interop_with_numpy(rng):
    data = rng.normal(size=(2, 3))
    t = tg.tensor(data)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert np.asarray(t) is t._v and t.dtype == "float64"
    x = tg.tensor(data, requires_grad=True)
    y = np.sum(np.sin(x) * 2.0)  # numpy functions record like tg's
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0 * np.cos(data))
    with pytest.raises(RuntimeError, match="requires grad"):
        np.asarray(x)
    ints = tg.tensor([1, 2, 3])
    assert ints.dtype == "int64" and (ints + ints).dtype == "int64"
    with pytest.raises(RuntimeError, match="floating point"):
        tg.tensor([1, 2], requires_grad=True)
    assert [r.item() for r in tg.tensor([[1.0], [2.0]])] == [1.0, 2.0]


def test_tnp_falls_back_to_numpy_and_records_tensors(rng):
    data = rng.normal(size=(4,))
    assert tnp.sum(tnp.exp(data)) == pytest.approx(np.sum(np.exp(data)))

    def f(x):
        return tnp.sum(tnp.tanh(x) ** 2) + tnp.dot(x, x) + tnp.var(x)

    g = tg.grad(f)(data) if hasattr(tg, "grad") else None
    x = tg.tensor(data, requires_grad=True)
    f(x).backward()
    expected = 2 * np.tanh(data) * (1 - np.tanh(data) ** 2) + 2 * data + 2 * (data - data.mean()) / 4
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    if g is not None:
        np.testing.assert_allclose(g, expected, rtol=1e-12)


def test_backward_of_an_array_needs_a_gradient_of_its_shape():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    with pytest.raises(RuntimeError, match="scalar outputs"):
        y.backward()
    with pytest.raises(RuntimeError, match="shape"):
        y.backward(np.ones(3))
    y.backward(np.array([1.0, 10.0]))
    assert x.grad.numpy().tolist() == [3.0, 30.0]


def test_second_backward_raises_and_retain_graph_allows_it():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.numpy().tolist() == [4.0, 8.0]
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_grad_and_autograd_grad_on_arrays():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * 2.0
    h.retain_grad()
    y = (h * h).sum()
    (gx,) = tg.autograd.grad(y, [x], retain_graph=True)
    assert x.grad is None and gx.numpy().tolist() == [8.0, 16.0, 24.0]
    y.backward()
    assert h.grad.numpy().tolist() == [4.0, 8.0, 12.0]


# ---------------------------------------------------------------------------- errors
def test_errors_name_the_op_and_shapes_and_the_library_keeps_working():
    a = tg.tensor(np.ones((2, 3)), requires_grad=True)
    b = tg.tensor(np.ones((4, 5)), requires_grad=True)
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"add: .*\(2, 3\) and \(4, 5\)"):
        a + b
    with pytest.raises(IndexError, match="sum: dimension out of range"):
        a.sum(axis=2)
    with pytest.raises(IndexError, match=r"getitem: .*\(2, 3\)"):
        a[5]
    with pytest.raises(ValueError, match="reshape"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="stack"):
        tg.stack([a, b])
    (a.sum() * 2.0).backward()
    assert a.grad.numpy().tolist() == [[2.0] * 3] * 2


# ---------------------------------------------------------------------------- functional API
def test_functional_grad_value_and_grad_argnums(rng):
    data, w = rng.normal(size=5), 1.5

    def f(x, scale):
        return tnp.sum(tnp.exp(x) * scale) + scale * scale

    value, (gx, gs) = tg.value_and_grad(f, argnums=(0, 1))(data, w)
    assert value == pytest.approx(np.sum(np.exp(data)) * w + w * w)
    np.testing.assert_allclose(gx, np.exp(data) * w)
    assert gs == pytest.approx(np.sum(np.exp(data)) + 2 * w)
    np.testing.assert_allclose(tg.grad(f)(data, w), np.exp(data) * w)
    assert tg.grad(lambda x: x * x)(3.0) == 6.0
    assert tg.grad(lambda x: 2.0)(3.0) == 0.0
    with pytest.raises(TypeError, match="scalar"):
        tg.grad(lambda x: x * 2.0)(data)


def test_numpy_shares_the_data_as_torch_does(rng):
    data = rng.normal(size=(3, 2))
    t = tg.tensor(data)
    view = t.numpy()
    view[0, 0] = 7.0  # torch: "changes to the tensor will be reflected in the ndarray and vice versa"
    assert t[0, 0].item() == 7.0 and np.shares_memory(view, t.detach().numpy())
    w = tg.tensor(data, requires_grad=True)
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), 2.0 * data)
    w.grad.numpy()[:] = 0.0  # the gradient's own data
    assert not w.grad.numpy().any() and not np.shares_memory(w.grad.numpy(), data)
    assert tg.tensor(2.5).numpy().shape == () and float(tg.tensor(2.5).numpy()) == 2.5


def test_array_data_converted_for_an_op_is_held_for_its_reader(rng):
    # integer, Fortran-ordered, strided and list data become float64 copies that only the row
    # reading them holds (each once raised "dropped before a reader")
    w = tg.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    ints = np.arange(12).reshape(3, 4)
    for data, expected in [(ints, ints), (ints.tolist(), ints), (np.asfortranarray(ints * 0.5), ints * 0.5),
                           (np.arange(24.0).reshape(3, 8)[:, ::2], np.arange(24.0).reshape(3, 8)[:, ::2])]:
        w.grad = None
        (w * data).sum().backward()
        np.testing.assert_array_equal(w.grad.numpy(), expected)
    x = np.arange(20).reshape(5, 4)
    for data in (tg.tensor(x), np.asfortranarray(x * 1.0), x.tolist()):
        w.grad = None
        F.linear(data, w).sum().backward()
        np.testing.assert_array_equal(w.grad.numpy(), np.tile(x.sum(axis=0), (3, 1)))


def test_untraced_expand_gives_data_of_its_own():
    e = tg.tensor([1.0, 2.0, 3.0]).expand(1, 3).numpy()  # NumPy's broadcast view is read-only
    e[0, 0] = 9.0
    assert e.tolist() == [[9.0, 2.0, 3.0]]


def test_a_small_gradient_does_not_keep_the_large_ones_memory(rng):
    big = tg.tensor(np.ones((300, 300)), requires_grad=True)
    small = tg.tensor(rng.normal(size=3), requires_grad=True)
    (gs,) = tg.autograd.grad((big * 2.0).sum() + (small * small).sum(), [small])
    np.testing.assert_array_equal(gs.numpy(), 2.0 * small.detach().numpy())
    assert gs.numpy().base is None or gs.numpy().base.size == 3
    ((big * 2.0).sum() + (small * small).sum()).backward()
    assert small.grad.numpy().base is None or small.grad.numpy().base.size == 3
    np.testing.assert_array_equal(big.grad.numpy(), np.full((300, 300), 2.0))


def test_functional_gradients_are_arrays_of_their_own(rng):
    data = rng.normal(size=4)
    kept = data.copy()
    grad = tg.grad(lambda x: tnp.sum(x))  # the gradient is the seed itself, passed through
    g1, g2 = grad(data), grad(data)
    g1 += 5.0
    np.testing.assert_array_equal(g2, np.ones(4))
    np.testing.assert_array_equal(data, kept)
    t = tg.tensor(data, requires_grad=True)
    (g,) = tg.autograd.grad(tnp.sum(t * 2.0), [t])
    assert not np.shares_memory(g.numpy(), t.detach().numpy())


def test_functional_vjp_and_jacobian(rng):
    A, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    y, vjp_fn = tg.vjp(lambda v: tnp.tanh(tg.tensor(A) @ v), x)
    np.testing.assert_allclose(y, np.tanh(A @ x))
    (g,) = vjp_fn(np.ones(3))
    np.testing.assert_allclose(g, A.T @ (1 - np.tanh(A @ x) ** 2))
    J = tg.jacobian(lambda v: tnp.tanh(tg.tensor(A) @ v))(x)
    np.testing.assert_allclose(J, (1 - np.tanh(A @ x) ** 2)[:, None] * A)
    H = tg.hessian(lambda v: tnp.sum(v ** 3))(x)
    np.testing.assert_allclose(H, np.diag(6 * x))
    y, ydot = tg.jvp(lambda v: tnp.sum(v * v), (x,), (np.ones(4),))
    assert ydot == pytest.approx(2 * x.sum())


def test_compile_replays_array_tensors_with_traced_scalars():
    W = tg.tensor(np.ones((2, 2)), requires_grad=True)
    cf = tg.compile(lambda x: (W * x[0]).sum() * x[1])
    assert cf(np.array([2.0, 3.0])) == 24.0
    np.testing.assert_allclose(cf.grad(np.array([1.0, 5.0])), [20.0, 4.0])


def test_gradients_flow_across_tapes_and_full_tapes_let_graphs_go(monkeypatch):
    from tapegrad import tape as tape_module

    x = tg.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.sum().backward(retain_graph=True)  # closes h's tape: the next graph is recorded on a new one
    y = (h * 3.0).sum()
    assert y.tape is not h.tape
    x.grad = None
    y.backward()
    assert x.grad.numpy().tolist() == [6.0, 12.0]
    monkeypatch.setattr(tape_module, "ARRAY_SLOTS_LIMIT", 100)
    w = tg.tensor(np.ones(60), requires_grad=True)
    tapes = [(w * 2.0).tape for _ in range(4)]
    assert len({id(t) for t in tapes}) == 4  # each 60-float graph filled the tape it was recorded on


# ---------------------------------------------------------------------------- review regressions
@pytest.mark.parametrize("make", [
    lambda v: tg.tensor(v)[::-1], lambda v: tg.tensor(v)[::2], lambda v: tg.tensor(v.reshape(100, 100)).T,
    lambda v: tg.tensor(v[:4]).expand(5000, 4),
], ids=["reversed", "strided", "transposed", "expanded"])
def test_views_of_data_become_leaves_of_their_own(make):
    x = make(np.arange(10000.0))  # larger than the blocks swept from a copy
    x.requires_grad_(True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy())


def test_scalars_packed_eagerly_get_their_gradients():
    x = tg.tensor(2.0, requires_grad=True)
    a = tnp.asarray([x * 3, x])
    (a * a).sum().backward()
    assert x.grad.item() == 40.0
    x.grad = None
    s = tg.stack([x, x * x])
    s.sum().backward()
    assert s.shape == (2,) and x.grad.item() == 5.0


def test_scalar_tensor_with_array_data_and_numpy_functions_tnp_lacks():
    x = tg.tensor(2.0, requires_grad=True)
    (x * np.arange(3.0)).sum().backward()
    assert x.grad.item() == 3.0
    t = tg.tensor(np.arange(3.0))
    assert np.shape(t) == (3,) and np.cumsum(t).tolist() == [0.0, 1.0, 3.0]
    v = tg.tensor([1.0, 2.0], requires_grad=True)
    (np.eye(2) @ v).sum().backward()
    assert v.grad.numpy().tolist() == [1.0, 1.0]
    with pytest.raises(RuntimeError, match="requires grad"):
        np.cumsum(v)


def test_empty_reductions_and_nan_extremes_follow_numpy_and_torch():
    assert np.isnan(tg.tensor(np.zeros((0, 3))).mean().item())
    assert tg.tensor(np.ones((0, 3))).max(1).shape == (0,)
    with pytest.raises(ValueError, match="max: reducing over an empty dimension"):
        tg.tensor(np.ones((0, 3))).max(0)
    with pytest.raises(ValueError, match="sum: dimension repeated"):
        tg.tensor(np.ones((2, 3))).sum((0, 0))
    a = tg.tensor([1.0, np.nan, 2.0], requires_grad=True)
    a.max().backward()
    assert a.grad.numpy().tolist() == [0.0, 1.0, 0.0]


def test_adjoint_blocks_are_zero_for_the_next_backward_whatever_the_last_one_did(rng):
    """The sweep zeroes each array block's adjoints as it reads them: backward after backward,
    after one that failed midway, with retained and wanted blocks, in anomaly mode."""
    from tapegrad import engine

    data = rng.uniform(0.5, 1.5, size=5)
    expected = 2 * np.exp(2 * data) * data[::-1] + np.exp(2 * data)[::-1]

    def graph():
        x = tg.tensor(data, requires_grad=True)
        h = tg.exp(x * 2.0)
        return x, h, (h * x[::-1]).sum()

    def arena_is_zero():
        return not engine._arena.buf[: engine._arena.used].any()

    x, h, y = graph()
    h.retain_grad()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * expected, rtol=1e-14)
    np.testing.assert_allclose(h.grad.numpy(), 2 * data[::-1], rtol=1e-14)
    assert arena_is_zero()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()  # stops midway, leaving blocks it had reached
    x, h, y = graph()
    gx, gh = tg.autograd.grad(y, [x, h])
    np.testing.assert_allclose(gx.numpy(), expected, rtol=1e-14)
    np.testing.assert_allclose(gh.numpy(), data[::-1], rtol=1e-14)
    assert arena_is_zero()
    with tg.detect_anomaly():
        x, h, y = graph()
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-14)
    assert arena_is_zero()


def test_graphs_sharing_a_tape_backward_one_by_one_and_check_only_their_own_inputs():
    """Graphs recorded before any backward share the thread's tape: each backward gives its own
    gradients, and an in-place update refuses only the graphs that read the updated tensor."""
    ws = [tg.tensor(np.full(3, float(k)), requires_grad=True) for k in range(1, 41)]
    losses = [(w * w).sum() for w in ws]
    assert len({id(loss._tape) for loss in losses}) == 1
    ws[0].grad = tg.tensor(np.ones(3))
    tg.optim.SGD([ws[0]], lr=0.1).step()  # ws[0] changed in place after losses[0] read it
    for k, (w, loss) in enumerate(zip(ws, losses)):
        if k == 0:
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                loss.backward()
            continue
        loss.backward()
        np.testing.assert_array_equal(w.grad.numpy(), np.full(3, 2.0 * (k + 1)))


def test_retain_grad_on_arrays_of_equal_shapes():
    x = tg.tensor(np.ones((3, 4)), requires_grad=True)
    h, h2 = x * 2.0, x * 3.0
    h.retain_grad()
    h2.retain_grad()
    loss = (h * h2).sum()
    loss.retain_grad()
    loss.backward()
    assert h2.grad.numpy().tolist() == [[2.0] * 4] * 3 and loss.grad.item() == 1.0


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_log_softmax_is_one_row_with_torch_gradients(axis, rng):
    x = rng.normal(size=(3, 4)) * 3.0
    check(lambda t: tg.log_softmax(t, axis), [x], lambda t: torch.log_softmax(t, axis) if torch else None)
    t = tg.tensor(x, requires_grad=True)
    with tg.recording() as tape:
        tg.log_softmax(t, axis)
    assert (
        [r for r in tape.listing(limit=None).splitlines() if "=" in r][-1]
        .split("= ")[1]
        .startswith("log_softmax")
    )
    inf = tg.tensor([[-np.inf, 0.0], [1.0, 1.0]], requires_grad=True)
    tg.log_softmax(inf, 1).sum().backward()
    np.testing.assert_allclose(inf.grad.numpy(), [[1.0, -1.0], [0.0, 0.0]], atol=1e-15)


def test_read_only_data_runs_the_kernels_already_compiled(rng):
    """A read-only array (np.broadcast_to's, a JAX array's view) is another Numba type, for which
    a kernel would compile anew: ops of such data that run a kernel forward (products, logsumexp,
    log_softmax, cross_entropy) give the same values and gradients and compile nothing."""
    from numba.core.registry import CPUDispatcher

    W = tg.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    x = rng.normal(size=(4, 3))

    def run(x):
        s = W.sum()
        loss = F.linear(x, W).sum() + (x @ W.T).sum() + (tg.tensor(x) @ W.T).sum()
        loss = loss + F.cross_entropy(W * x, np.array([0, 2, 1, 0]))
        (loss + (tnp.logsumexp(x, 1) * s).sum() + (tg.log_softmax(x, 0) * W).sum()).backward()
        out, W.grad = W.grad.numpy().copy(), None
        return out

    expected = run(x)
    def signatures():
        kernels_of = vars(kernels.sweeps()).items()
        return {k: len(v.signatures) for k, v in kernels_of if isinstance(v, CPUDispatcher)}

    before = signatures()
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(run(frozen), expected)
    assert signatures() == before
