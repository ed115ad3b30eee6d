"""tg.compile of functions with array ops: replayed array rows against eager recording."""

import contextlib
import math

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn.functional as F
import tapegrad.numpy as tnp
from tapegrad import kernels

from .conftest import torch


@pytest.fixture
def model(rng):
    W = tg.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    b = tg.tensor(rng.normal(size=3), requires_grad=True)

    def f(x):
        h = tg.tanh(F.linear(tnp.asarray(x), W, b))  # x: traced scalars, packed into one array row
        masked = tg.where(h > 0.0, h, 0.1 * h)  # branchless: the replay follows the comparison
        return tnp.logsumexp(masked, 0) + (masked * masked).sum() + tnp.max(h) * 0.5

    return f


def test_replay_equals_eager_at_new_points(model, rng):
    cf = tg.compile(model)
    for _ in range(5):
        x = rng.normal(size=4) * 2.0
        value, grad = cf.value_and_grad(x)
        expected_value, expected_grad = tg.value_and_grad(model)(x)
        assert value == pytest.approx(expected_value, rel=1e-13)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-14)
    assert cf.stats()["recordings"] == 1
    assert "matmul" in cf.tape.listing(limit=None)


def test_replay_reads_captured_arrays_afresh(rng):
    W = tg.tensor(np.eye(2), requires_grad=True)
    cf = tg.compile(lambda x: (W @ tnp.asarray(x)).sum())
    x = np.array([1.0, 2.0])
    assert cf(x) == 3.0
    W._v *= 2.0  # an optimizer step, in place
    assert cf(x) == 6.0
    np.testing.assert_allclose(cf.grad(x), [2.0, 2.0])


def test_batch_and_vjp_and_jacobian_of_array_tapes(model, rng):
    cf = tg.compile(model)
    X = rng.normal(size=(7, 4))
    values, grads = cf.batch_value_and_grad(X)
    for r in range(len(X)):
        v, g = tg.value_and_grad(model)(X[r])
        assert values[r] == pytest.approx(v, rel=1e-13)
        np.testing.assert_allclose(grads[r], g, rtol=1e-12, atol=1e-14)
    A = rng.normal(size=(3, 4))
    vec = tg.compile(lambda x: tg.sin(tg.tensor(A) @ tnp.asarray(x)))
    x = rng.normal(size=4)
    np.testing.assert_allclose(vec(x), np.sin(A @ x))
    np.testing.assert_allclose(vec.jacobian(x), np.cos(A @ x)[:, None] * A, rtol=1e-12)
    _, (pulled,) = vec.vjp((x,), np.ones(3))
    np.testing.assert_allclose(pulled, A.T @ np.cos(A @ x), rtol=1e-12)


def _fd_hvp(f, x, v, eps=1e-5):
    """Central differences of the eager gradient along v."""
    g = tg.grad(f)
    return (g(x + eps * v) - g(x - eps * v)) / (2 * eps)


ARRAY_PROGRAMS = {
    "model": None,  # the fixture's
    "prod": lambda x: (tnp.asarray(x) ** 2 + 0.5).prod() + tnp.asarray(x).prod(),
    "gather-sum": lambda x: (tnp.asarray(x)[[0, 2, 2, 3]] * tnp.asarray(x)[::-1]).sum() ** 2,
    "matmul": lambda x: tg.sin(tnp.asarray(x).reshape(2, 2) @ tnp.asarray(x).reshape(2, 2)).sum(),
    "min-softmax": lambda x: tg.softmax(tnp.asarray(x), 0).min() + tnp.logsumexp(tnp.asarray(x) * 2.0, 0),
}


@pytest.mark.parametrize("name", list(ARRAY_PROGRAMS))
def test_forward_mode_on_array_tapes(name, model, rng):
    f = ARRAY_PROGRAMS[name] or model
    cf = tg.compile(f)
    x, v = rng.normal(size=4), rng.normal(size=4)
    np.testing.assert_allclose(cf.hvp(x, v), _fd_hvp(f, x, v), rtol=1e-6, atol=1e-7)
    H = cf.hessian(x)
    np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-12)
    _, ydot = cf.jvp((x,), (v,))
    assert ydot == pytest.approx(float(tg.grad(f)(x) @ v), rel=1e-10, abs=1e-12)


def _runs_program(axis):
    """Reductions over `axis` and operands broadcast against their results, both ways round."""

    def f(x):
        x = tnp.asarray(x)
        top, low = tnp.max(x, axis), tnp.min(x, axis, keepdims=True)
        total = x.sum(axis, keepdims=True)
        return ((top * top).sum() + (low * 3.0).sum() + (total * x).sum() + ((x - low) ** 2).sum()
                + (tnp.max(x) - x).sum())

    return f


# runs longer than the reverse kernel's 512-element chunks, and of lengths that are not multiples
# of 4 (the kernels' unrolled sums and extremes); axis None: one run of the whole array
@pytest.mark.parametrize("shape,axis", [((3, 1030), 1), ((1030, 3), 0), ((2, 5, 517), (0, 2)),
                                        ((2051,), None), ((4, 3, 2), 1)])
def test_long_runs_of_reductions_and_broadcasts(shape, axis, rng):
    f = _runs_program(axis)
    x = rng.normal(size=shape)
    value, grad = tg.compile(f).value_and_grad(x)
    eager_value, eager_grad = tg.value_and_grad(f)(x)  # eager: NumPy forward, consuming reverse
    np.testing.assert_allclose(grad, eager_grad, rtol=1e-12, atol=1e-12)
    assert value == pytest.approx(eager_value, rel=1e-12)
    if torch is not None:
        t = torch.tensor(x, requires_grad=True)
        dims = axis if axis is not None else tuple(range(len(shape)))
        top, low = t.amax(dims), t.amin(dims, keepdim=True)
        out = ((top * top).sum() + (low * 3.0).sum() + (t.sum(dims, keepdim=True) * t).sum()
               + ((t - low) ** 2).sum() + (t.max() - t).sum())
        out.backward()
        assert value == pytest.approx(out.item(), rel=1e-12)
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("axis", [0, 1])  # runs of one segment each, or runs across segments
@pytest.mark.parametrize("columns", [11, 150])  # runs within a kernel's 16 lanes, or beyond them
def test_replayed_extremes_of_runs_with_nan_and_infinities(special, axis, columns, rng):
    cf = tg.compile(lambda x: tnp.concatenate([tnp.max(tnp.asarray(x), axis), tnp.min(tnp.asarray(x), axis)]))
    x = rng.normal(size=(4, columns))
    # at a run's start, inside it (in the lanes of a long one), and at its end (the tail)
    x[1, 0], x[2, columns // 2], x[3, columns - 1] = special, special, special
    np.testing.assert_array_equal(cf(x), np.concatenate([x.max(axis), x.min(axis)]))
    np.testing.assert_array_equal(cf(-x), np.concatenate([(-x).max(axis), (-x).min(axis)]))


def test_replayed_extremes_split_ties_in_every_sweep(rng):
    """A row's maximum tied three times, or attained once (first, last, inside): the gradient,
    tangent and Hessian-vector product of a replay split between the tied elements."""
    X = rng.normal(size=(4, 20))
    X[0, [3, 7, 19]], X[1, 0], X[2, 19], X[3, 11] = 5.0, 6.0, 7.0, 8.0
    cf = tg.compile(lambda x: (tnp.max(tnp.asarray(x), 1) ** 2).sum())
    top = X.max(1)
    ties = X == top[:, None]
    share = ties / ties.sum(1, keepdims=True)  # each element's part of its row's maximum
    np.testing.assert_allclose(cf.grad(X), 2.0 * top[:, None] * share, rtol=1e-15)
    T, V = rng.normal(size=X.shape), rng.normal(size=X.shape)
    np.testing.assert_allclose(cf.jvp((X,), (T,))[1], np.sum(2.0 * top * (share * T).sum(1)), rtol=1e-13)
    np.testing.assert_allclose(cf.hvp(X, V), 2.0 * share * (share * V).sum(1, keepdims=True), rtol=1e-13)


def test_eager_and_replayed_log_softmax_agree_to_the_bit(rng):
    """Eager log_softmax runs the replay's kernel: the same values, infinities and NaN included
    (NumPy's exp and pairwise sums differed from it in the last bit on rows this long)."""
    X = rng.normal(size=(6, 200)) * 3.0
    X[1, 2], X[2, :], X[3, 0], X[4, 4] = np.inf, -np.inf, np.nan, -np.inf
    for axis in (0, 1):
        cf = tg.compile(lambda x, axis=axis: tg.log_softmax(tnp.asarray(x), axis))
        np.testing.assert_array_equal(cf(X), tg.log_softmax(tg.tensor(X), axis).numpy())


@pytest.mark.parametrize("xs, ys", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                     ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (2, 4, 5))])
def test_eager_and_replayed_products_agree_to_the_bit(xs, ys, rng):
    """Eager matmul and linear run the replay's kernel and BLAS call: the same bits."""
    X, Y = rng.normal(size=xs), rng.normal(size=ys)
    cf = tg.compile(lambda x, y: tnp.asarray(x) @ tnp.asarray(y))
    eager = (tg.tensor(X) @ tg.tensor(Y)).numpy()
    assert eager.shape == np.matmul(X, Y).shape
    np.testing.assert_array_equal(cf(X, Y), eager)
    np.testing.assert_allclose(eager, np.matmul(X, Y), rtol=1e-12, atol=1e-12)
    W, b = tg.tensor(Y.reshape(-1, xs[-1])), tg.tensor(rng.normal(size=Y.size // xs[-1]))
    linear = tg.compile(lambda x: F.linear(tnp.asarray(x), W, b))
    np.testing.assert_array_equal(linear(X), F.linear(tg.tensor(X), W, b).numpy())


def _logsumexp(x, axis):  # NumPy's, shifted by the finite maximum
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.exp(x - top).sum(axis)) + np.squeeze(top, axis)


@pytest.mark.parametrize("shape,axis", [((5, 7), 1), ((5, 7), 0), ((3, 4, 600), (0, 2)), ((1100,), 0)])
def test_logsumexp_is_one_row_right_in_every_sweep(shape, axis, rng):
    """logsumexp records one row (runs of one segment: axis 1; or elements spread across segments:
    axis 0; runs past the kernel's 512-element chunks): its value, gradient (softmax), tangent and
    Hessian-vector product, eager and replayed, against NumPy and central differences."""
    x, v = rng.normal(size=shape) * 3.0, rng.normal(size=shape)
    f = lambda t: (tnp.logsumexp(tnp.asarray(t), axis) ** 2).sum()  # noqa: E731
    cf = tg.compile(f)
    value, grad = cf.value_and_grad(x)
    lse = _logsumexp(x, axis)
    assert value == pytest.approx(np.sum(lse ** 2), rel=1e-13)
    top = np.expand_dims(lse, axis)
    np.testing.assert_allclose(grad, 2.0 * top * np.exp(x - top), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(grad, tg.grad(f)(x))  # eager and replayed: the same kernels
    listing = cf.tape.listing(limit=None)
    assert listing.count("logsumexp_into(") == 1 and "exp(" not in listing and "amax" not in listing
    h = 1e-5
    np.testing.assert_allclose(cf.jvp((x,), (v,))[1], (f(x + h * v).item() - f(x - h * v).item()) / (2 * h),
                               rtol=1e-7)
    central = (cf.grad(x + h * v) - cf.grad(x - h * v)) / (2 * h)
    np.testing.assert_allclose(cf.hvp(x, v), central, rtol=1e-6, atol=1e-8)


def test_logsumexp_of_rows_with_infinities_and_nan():
    x = np.array([[np.inf, 1.0], [-np.inf, -np.inf], [np.nan, 1.0], [1000.0, 1000.0], [-2.0, -np.inf]])
    expected = [np.inf, -np.inf, np.nan, 1000.0 + np.log(2.0), -2.0]
    np.testing.assert_allclose(tg.logsumexp(tg.tensor(x), 1).numpy(), expected, rtol=1e-15)
    cf = tg.compile(lambda t: tnp.logsumexp(tnp.asarray(t), 1))
    np.testing.assert_array_equal(cf(x), tg.logsumexp(tg.tensor(x), 1).numpy())
    (g,) = tg.grad(lambda t: tnp.logsumexp(tnp.asarray(t), 1)[3:].sum(), argnums=(0,))(x)
    np.testing.assert_allclose(g[3:], [[0.5, 0.5], [1.0, 0.0]], rtol=1e-12)  # exp(x - lse), as torch


@pytest.mark.parametrize("shape", [(4, 3), (7, 1), (3, 600), (0, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_is_one_row_right_in_every_sweep(shape, reduction, rng):
    """cross_entropy records one row: its value, gradient (softmax - onehot), tangent and
    Hessian-vector product, eager and replayed, against torch (or NumPy) and central differences."""
    x, v = rng.normal(size=shape) * 3.0, rng.normal(size=shape)
    labels = rng.integers(0, shape[1], size=shape[0])
    weights = rng.normal(size=shape[0] if reduction == "none" else ())
    f = lambda t: (F.cross_entropy(t, labels, reduction) * tg.tensor(weights)).sum()  # noqa: E731
    cf = tg.compile(f)
    value, grad = cf.value_and_grad(x)
    top = x.max(axis=1, keepdims=True)
    log_p = x - top - np.log(np.exp(x - top).sum(axis=1, keepdims=True))
    losses = -log_p[np.arange(shape[0]), labels]
    with np.errstate(invalid="ignore", divide="ignore"):  # the mean of no losses: NaN, as torch's
        reduced = {"mean": losses.sum() / shape[0], "sum": losses.sum(), "none": losses}[reduction]
        scale = weights / shape[0] if reduction == "mean" else weights
    assert value == pytest.approx(np.sum(reduced * weights), rel=1e-13, nan_ok=True)
    expected = (np.exp(log_p) - np.eye(shape[1])[labels]) * np.reshape(scale, (-1, 1))
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(grad, tg.grad(f)(x))  # eager and replayed: the same kernels
    assert cf.tape.listing(limit=None).count("cross_entropy(") == 1
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(tx, torch.tensor(labels), reduction=reduction)
        assert F.cross_entropy(tg.tensor(x), labels, reduction).numpy() == pytest.approx(
            loss.detach().numpy(), rel=1e-13, nan_ok=True)
        t_f = lambda t: (torch.nn.functional.cross_entropy(t, torch.tensor(labels), reduction=reduction)  # noqa: E731
                         * torch.tensor(weights)).sum()
        t_hvp = torch.autograd.functional.hvp(t_f, torch.tensor(x), torch.tensor(v))[1].numpy()
        np.testing.assert_allclose(cf.hvp(x, v), t_hvp, rtol=1e-10, atol=1e-13)
    if not x.size:
        return
    h = 1e-5
    np.testing.assert_allclose(cf.jvp((x,), (v,))[1], (f(x + h * v).item() - f(x - h * v).item()) / (2 * h),
                               rtol=1e-7)
    central = (cf.grad(x + h * v) - cf.grad(x - h * v)) / (2 * h)
    np.testing.assert_allclose(cf.hvp(x, v), central, rtol=1e-6, atol=1e-8)


def test_replayed_gather_keeps_signed_zeros():
    cf = tg.compile(lambda x: tnp.asarray(x)[::2] * 1.0)
    assert np.signbit(cf(np.array([-0.0, 1.0, -0.0, 2.0, 3.0]))).tolist() == [True, True, False]


def test_hvp_sweeps_second_order_rules_only_where_curvature_reaches(rng):
    """kmeans' cost: a Hessian-vector product sweeps the tangents that curved rows read (C * C's)
    and second-order rules only between those rows and the inputs. The (n, k) distance rows,
    linear in C or piecewise so (a matmul by data, sums, min), need neither: the second-order
    sweep gives them their reverse rule alone (kernels.plans), even with a scalar row after them
    (GradBench adds |P|^2 as a number), whose tangent nobody reads. Gradient and H 1 are exact,
    whatever the tangents held before (NaN here)."""
    P = rng.random((50, 3))
    C0 = P[-4:] + 0.01

    def cost(c):
        C = tnp.asarray(c).reshape(4, 3)
        D = (P * P).sum(1).reshape(-1, 1) - 2.0 * (tg.tensor(P) @ C.T) + (C * C).sum(1).reshape(1, -1)
        return tnp.amin(D, 1).sum() + 1.5

    cf = tg.compile(cost)
    cf(C0.ravel())
    cf._space(cf._last, keeps_clean=True).tangents[1][:] = np.nan
    grad, hv = cf.grad_and_hvp(C0.ravel(), np.ones(12))
    nearest = ((P[:, None] - C0[None]) ** 2).sum(2).argmin(1)
    counts, sums = np.bincount(nearest, minlength=4), np.zeros((4, 3))
    np.add.at(sums, nearest, P)
    np.testing.assert_allclose(grad, (2.0 * (counts[:, None] * C0 - sums)).ravel(), rtol=1e-12)
    np.testing.assert_allclose(hv, np.repeat(2.0 * counts, 3), rtol=1e-14)
    variant = cf._last
    plan, sizes = cf._space(variant).plan(variant, True), variant.arrays[5]
    assert (plan[sizes == 200] == 0).all() and (sizes == 200).sum() == 4
    assert plan.max() == 3 and plan.min() == 0  # (the input's tangent is read, and its second-order rule)
    np.testing.assert_allclose(cf.jvp((C0.ravel(),), (np.ones(12),))[1], grad.sum(), rtol=1e-12)


_RNG = np.random.default_rng(5)
_P, _D, _M = _RNG.normal(size=(2, 3)), _RNG.normal(size=6) + 3.0, _RNG.normal(size=(4, 6))
# one curvature pair of the op table each (kernels.plans), and rows linear around them
CURVED = {
    "exp": lambda x: tnp.exp(tnp.asarray(x) * 0.5).sum(),
    "log_softmax": lambda x: (tg.log_softmax(tnp.asarray(x).reshape(2, 3), 1) * tg.tensor(_P)).sum(),
    "logsumexp": lambda x: tnp.logsumexp(tnp.asarray(x).reshape(2, 3) * 2.0, 1).sum(),
    "cross_entropy": lambda x: F.cross_entropy(tnp.asarray(x).reshape(2, 3) * 1.5, np.array([2, 0])),
    "prod": lambda x: (tnp.asarray(x) * 0.5 + 1.0).prod(),
    "div": lambda x: (tnp.asarray(x)[:3] / (tnp.asarray(x)[3:] + 3.0)).sum(),
    "data over x": lambda x: (tg.tensor(_D) / (tnp.asarray(x) + 3.0)).sum(),
    "a number over x": lambda x: (2.0 / (tnp.asarray(x) + 3.0)).sum(),
    "x over data, squared": lambda x: ((tnp.asarray(x) / tg.tensor(_D)) ** 2).sum(),
    "pow": lambda x: ((tnp.asarray(x) * tnp.asarray(x) + 0.5) ** tnp.asarray(x)[::-1]).sum(),
    "mul of two": lambda x: (tnp.exp(tnp.asarray(x)) * tnp.asarray(x)[::-1] * 2.0).sum(),
    "matmul of two": lambda x: (tnp.exp(tnp.asarray(x).reshape(2, 3)) @ tnp.asarray(x).reshape(3, 2)).sum(),
    "matmul of two rows": lambda x: (tnp.asarray(x).reshape(2, 3) @ tnp.asarray(x)[::-1].reshape(3, 2)).sum(),
    "matmul by data": lambda x: tg.tanh(tg.tensor(_M) @ tnp.asarray(x)).sum(),
    "0-d rows": lambda x: (tnp.asarray(x) ** 2).sum() * tnp.asarray(x).sum() - tnp.asarray(x).max(),
}


@pytest.mark.parametrize("name", list(CURVED))
def test_hessian_vector_products_of_each_curvature(name, rng):
    """Each op's curvature (its second partials: kernels.CURVES, ArrayOpSpec.curvature) decides
    which rows the plan sweeps to second order: a missing one gives a wrong Hessian-vector product.
    Against central differences of the eager gradient; the sparse Hessian (whose pattern the same
    curvature decides) too. The workspace's tangents are NaN before each: a rule that reads a
    tangent the plan skipped gives NaN."""
    f = CURVED[name]
    cf = tg.compile(f)
    x, v = rng.uniform(-0.5, 0.5, size=6), rng.normal(size=6)
    expected = _fd_hvp(f, x, v)
    cf(x)
    space = cf._space(cf._last, keeps_clean=True)
    for call in (lambda: cf.hvp(x, v), lambda: cf.sparse_hessian(x).toarray() @ v):
        space.tangents[1][:] = np.nan
        np.testing.assert_allclose(call(), expected, rtol=1e-6, atol=1e-7)


def test_prod_with_zeros_second_order():
    f = lambda x: tnp.asarray(x).prod()  # noqa: E731
    cf = tg.compile(f)
    for x in ([0.0, 2.0, 3.0, 5.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 0.0, 5.0], [1.0, 2.0, 3.0, 5.0]):
        x = np.array(x)
        expected = np.array(
            [[np.prod(np.delete(x, [i, j])) if i != j else 0.0 for j in range(4)] for i in range(4)]
        )
        np.testing.assert_allclose(cf.hessian(x), expected, atol=1e-12)


def test_traced_arrays_refuse_to_become_numpy(rng):
    def f(x):
        h = tnp.asarray(x) * 2.0
        return float(np.asarray(h).sum())

    with pytest.raises(tg.TracingError, match="NumPy array"):
        tg.compile(f)(np.ones(3))


def test_save_and_load_array_tapes_and_refuse_corrupted_ones(model, rng, tmp_path):
    cf = tg.compile(model)
    x = rng.normal(size=4)
    expected = cf.value_and_grad(x)
    path = tmp_path / "model.npz"
    cf.save(path)
    loaded = tg.load(path)
    value, grad = loaded.value_and_grad(x)
    assert value == expected[0]
    np.testing.assert_allclose(grad, expected[1])
    data = dict(np.load(path))
    def overflow(a):  # a block offset (of the first array row, the pack) that wraps int64 arithmetic
        a = a.copy()
        a[0] = 2**63 - 1
        return a

    def strides(a):  # index-map strides whose extent overflows int64
        a = a.copy()
        a[a > 0] = 2**61 + 2**40
        return a

    for key, damage in [("0_arr6", lambda a: a + 10**6), ("0_arr4", lambda a: a + 10**6),
                        ("0_arr1", lambda a: a + 10**6), ("0_arr4", overflow), ("0_arr6", strides),
                        ("0_input_slots", lambda a: a - 10**12), ("0_out_slots", lambda a: a - 10**12),
                        ("0_arr3", None), ("0_captured", None)]:
        broken = dict(data)
        if damage is None:
            del broken[key]
        else:
            broken[key] = damage(data[key]).astype(data[key].dtype)
        bad = tmp_path / f"bad_{key}.npz"
        np.savez(bad, **broken)
        with pytest.raises(ValueError, match="corrupted"):
            tg.load(bad)


def test_a_loaded_cross_entropy_row_is_checked(rng, tmp_path):
    x, labels = rng.normal(size=(4, 3)), np.array([2, 0, 1, 2])
    cf = tg.compile(lambda t: F.cross_entropy(tnp.asarray(t), labels))
    expected = cf.value_and_grad(x)
    path = tmp_path / "loss.npz"
    cf.save(path)
    value, grad = tg.load(path).value_and_grad(x)
    assert value == expected[0]
    np.testing.assert_array_equal(grad, expected[1])
    data = dict(np.load(path))
    assert data["0_arr6"].tolist() == [4, 3, 2, *labels]  # samples, classes, mean, the targets
    for entry in ([4, 3, 2, 2, 0, 3, 2], [4, 3, 5, 2, 0, 1, 2], [4, 4, 2, 2, 0, 1, 2], [5, 3, 2, 2, 0, 1, 2]):
        bad = tmp_path / "bad.npz"
        np.savez(bad, **{**data, "0_arr6": np.array(entry, dtype=np.int64)})
        with pytest.raises(ValueError, match="corrupted"):
            tg.load(bad)


def test_a_tensor_times_itself_records_a_square(rng):
    x = rng.normal(size=(3, 5))
    f = lambda v: (tnp.asarray(v) * tnp.asarray(v)[:, :]).sum() + (lambda t: (t * t).sum())(tnp.asarray(v))  # noqa: E731
    cf = tg.compile(f)
    value, grad = cf.value_and_grad(x)
    assert value == pytest.approx(2.0 * float((x * x).sum()), rel=1e-14)
    np.testing.assert_array_equal(grad, 4.0 * x)
    np.testing.assert_array_equal(tg.grad(f)(x), 4.0 * x)
    assert "pow(" in cf.tape.listing(limit=None) and "mul(" in cf.tape.listing(limit=None)


def test_array_data_is_written_once_and_its_adjoints_never_read(rng):
    """A tape's constant arrays go into a workspace once, and no reverse rule writes or reads
    their adjoint blocks: a replay is right with those blocks full of NaN, also under anomaly mode."""
    D = rng.normal(size=(5, 4))

    def f(x):
        data = tg.tensor(D)  # array data of the tape, through every unary kernel and as an operand
        pieces = (data.sum(0), data.max(1).sum(), data[1:3, ::2].sum(), data.prod(0).sum(),
                  tg.log_softmax(data, 1)[0].sum())
        v = tnp.asarray(x)
        return (data @ v).sum() + sum(piece.sum() * v[0] for piece in pieces) + (data * v).sum()

    cf = tg.compile(f)
    x = rng.normal(size=4)
    cf(x)
    cf.replay_tape(x).adjoints[:] = np.nan  # the workspace's array adjoints, data's blocks included
    expected_value, expected_grad = tg.value_and_grad(f)(x)
    for point in (x, x + 1.0):
        with tg.detect_anomaly():
            value, grad = cf.value_and_grad(point)
        v, g = tg.value_and_grad(f)(point)
        assert value == pytest.approx(v, rel=1e-13)
        np.testing.assert_allclose(grad, g, rtol=1e-12)
    np.testing.assert_allclose(cf.batch_grad(np.stack([x, x])), [expected_grad] * 2, rtol=1e-12)


def test_a_gradient_replay_is_right_whatever_the_adjoint_blocks_held(rng):
    """A gradient replay does not read what the workspace's adjoint blocks held before (here NaN)
    and leaves each holding its adjoint: with rules that push nothing to an operand (comparisons,
    stop_gradient in logsumexp's shift), blocks written twice (x - x, v @ v.T), broadcasts,
    scatters and 0-d results. (A sweep that wrote blocks lazily failed this in two ways.)"""
    M = tg.tensor(rng.normal(size=(3, 4)), requires_grad=True)

    def f(x):
        v = tnp.asarray(x).reshape(3, 4)
        h = tg.tanh(v * M + 1.0)
        masked = tg.where(h > 0.0, h, 0.1 * h)
        total = tnp.logsumexp(masked, 1).sum() + (v @ v.T).sum() + (v - v).sum() + tnp.max(v, 0).sum()
        return total + (v[1:, ::2] * h.sum(0)[::2]).sum() + F.linear(v, M).sum() * v[0, 0]

    cf = tg.compile(f)
    for point in (rng.normal(size=12), rng.normal(size=12)):
        cf(point)
        cf._space(cf._last).array_args[2][:] = np.nan  # the workspace's adjoint blocks
        value, grad = cf.value_and_grad(point)
        v, g = tg.value_and_grad(f)(point)
        assert value == pytest.approx(v, rel=1e-13)
        np.testing.assert_allclose(grad, g, rtol=1e-12, atol=1e-14)
        assert _unread_adjoints(cf) == 0.0  # the sweep consumed every block it read
        tape = cf.replay_tape(point)  # a workspace of its own, for the caller's code
        tape.adjoints[:] = np.nan
        inputs = np.concatenate((point, tape.captured))  # (M's values follow the arguments)
        assert tg.sweeps().gradient_arrays(tape.op, tape.a, tape.b, tape.consts, inputs, tape.input_slots,
                                           tape.out_slot, np.empty(len(tape.op)), np.empty(len(tape.op)),
                                           grad, tape.arrays, tape.addresses, tape.adjoints) < 0
        np.testing.assert_allclose(grad, g, rtol=1e-12, atol=1e-14)
        assert not np.isnan(tape.adjoints).any()  # as a sweep leaves them: adjoints
    np.testing.assert_allclose(cf.batch_grad(np.stack([point, point])), [g] * 2, rtol=1e-12)


def test_workspace_gradient_in_an_njit_loop_needs_no_zeroing(rng):
    """From @njit code, workspace_gradient_arrays with clean (from the second call) and consume
    gives gradient_arrays' gradient to the bit at every step of a loop: the consuming sweep left
    the adjoints zero, the input rows' blocks (its entries of grad) are overwritten."""
    import numba

    f = lambda x: tnp.logsumexp(tnp.asarray(x) * 2.0) + tnp.sum(tnp.sin(x) * x)  # noqa: E731
    cf = tg.compile(f)
    points = rng.normal(size=(5, 8))
    tape = cf.replay_tape(points[0])
    plain, looped = tg.sweeps().gradient_arrays, tg.sweeps().workspace_gradient_arrays

    @numba.njit
    def both(points, t):
        n = t.op.shape[0]
        vals, adj, out = np.empty(n), np.empty(n), np.empty((2,) + points.shape)
        clean = False
        for r in range(points.shape[0]):
            inputs = np.concatenate((points[r], t.captured))
            looped(t.op, t.a, t.b, t.consts, inputs, t.input_slots, t.out_slot, vals, adj, out[0, r],
                   clean, True, t.arrays, t.addresses, t.adjoints)
            clean = True
        for r in range(points.shape[0]):
            inputs = np.concatenate((points[r], t.captured))
            plain(t.op, t.a, t.b, t.consts, inputs, t.input_slots, t.out_slot, vals, adj, out[1, r],
                  t.arrays, t.addresses, t.adjoints)
        return out

    looped_grads, plain_grads = both(points, tape)
    np.testing.assert_array_equal(looped_grads, plain_grads)
    np.testing.assert_allclose(looped_grads, [tg.grad(f)(p) for p in points], rtol=1e-13, atol=1e-15)


def _unread_adjoints(cf, tangents: bool = False) -> float:
    """The largest |adjoint| (and with `tangents`, tangent of one) in the blocks of the array rows
    of cf's workspace but the input rows' (which the caller reads after a sweep): 0.0 when the
    workspace is clean."""
    v = cf._last
    code, aoff, asize = (v.arrays[k] for k in (0, 4, 5))
    space = cf._space(v, keeps_clean=True)
    skip = (kernels.ARRAY_CODE["array_input"], kernels.ARRAY_CODE["array_const"])
    entries = v.a[v.op == kernels.ARRAY_ROW]  # (0-d results keep theirs in the rows' slots)
    stores = (space.array_args[2], space.tangents[0])[: 1 + tangents]
    blocks = [store[aoff[j] : aoff[j] + asize[j]] for store in stores for j in entries if code[j] not in skip]
    return max((np.abs(b).max(initial=0.0) for b in blocks), default=0.0)


def test_sweeps_that_consume_the_adjoints_stay_right_whatever_ran_before(rng):
    """value_and_grad, vjp, hvp and sparse Hessians sweep back consuming each array block (adjoints
    and their tangents) as they read it: only the input rows' blocks keep theirs, zeroed before
    the next such sweep. Interleaved, and with a sweep that does not consume (anomaly mode checks
    every block), at several points, every derivative stays the eager one's."""
    D = rng.normal(size=(6, 4))

    def f(x):
        h = tg.tanh(tg.tensor(D) @ tnp.asarray(x))
        lse = tnp.logsumexp(h * h) + F.cross_entropy(h.reshape(2, 3), np.array([0, 2]))
        return lse + (h[::2] * tnp.asarray(x)[:3]).sum()

    cf = tg.compile(f)
    calls = [
        lambda x: cf.value_and_grad(x)[1],
        lambda x: cf.vjp((x,), np.array([1.0, -2.0]))[1][0],  # two cotangents: two consuming sweeps
        lambda x: cf.hvp(x, np.ones(4)),
        lambda x: cf.sparse_hessian(x).toarray(),
    ]
    expected = [
        lambda x: tg.grad(f)(x),
        lambda x: np.array([1.0, -2.0])[:, None] * tg.grad(f)(x),
        lambda x: tg.hessian(f)(x) @ np.ones(4),
        lambda x: tg.hessian(f)(x),
    ]
    for x in (rng.normal(size=4), rng.normal(size=4)):
        for k in [0, 1, 0, 2, 0, 3, 1, 0, 0]:
            np.testing.assert_allclose(calls[k](x), expected[k](x), rtol=1e-10, atol=1e-12)
            assert _unread_adjoints(cf, tangents=k >= 2) == 0.0
        with tg.detect_anomaly():  # checks every block after the sweep: they are kept
            np.testing.assert_allclose(calls[0](x), expected[0](x), rtol=1e-10, atol=1e-12)
            assert _unread_adjoints(cf) > 0.0
        for k in (2, 0):  # (an hvp after it: its tangents of adjoints were clean, its adjoints not)
            np.testing.assert_allclose(calls[k](x), expected[k](x), rtol=1e-10, atol=1e-12)


def test_a_chain_of_elementwise_rows_replays_tile_by_tile(rng):
    """A forward replay computes consecutive elementwise array rows of as many elements tile by
    tile (kernels: array_forward): values to the bit NumPy's for + - * / with tiles ending inside
    the arrays; values and derivatives the eager ones' around a reduction and a broadcast row that
    split the segments, with the arrays two tiles and more long and shorter (one row at a time)."""
    tile = kernels.sweeps().TILE

    def arithmetic(x):
        u = (x * x - 1.5) / (x * 0.5 + 3.0)
        return 0.5 - u * x + x / 3.0

    def f(v):
        x, y = v[: len(v) // 2], v[len(v) // 2 :]
        u = tnp.exp(x * 0.25) * y - tnp.sin(y)
        w = u * (tnp.sum(u) / len(x))  # a reduction, then a vector times a 0-d row
        return tnp.sum(tnp.sqrt(w * w + 1.0) * x)

    for n in (2 * tile + tile // 2 + 7, tile + 3):
        x = rng.normal(size=n)
        np.testing.assert_array_equal(tg.compile(lambda x: arithmetic(tnp.asarray(x)))(x), arithmetic(x))
        v = rng.normal(size=2 * n)
        cf = tg.compile(lambda v: f(tnp.asarray(v)))
        value, grad = cf.value_and_grad(v)
        expected = tg.value_and_grad(lambda v: f(tnp.asarray(v)))(v)
        assert value == pytest.approx(expected[0], rel=1e-12)
        np.testing.assert_allclose(grad, expected[1], rtol=1e-11, atol=1e-12)


def test_one_call_sweeps_read_array_arguments_where_they_are(rng):
    """value_and_grad and grad_and_hvp read an array argument in place, not copied into the
    workspace (a view into a larger array included, and beside a 0-d argument), and leave it
    alone: every later call sees its own arguments and writes none of the earlier ones, which
    may have been changed or freed meanwhile. Hessians against differences of the eager
    gradient."""
    W = rng.normal(size=(3, 5))

    def f(x, s=0.5):
        v = tnp.asarray(x)
        return tnp.logsumexp(tg.tensor(W) @ tnp.exp(v * s), 0) + (v * v).sum()

    cf, cf2 = tg.compile(f), tg.compile(lambda s, x: f(x, s))  # (x after s: at entry 1 of the inputs)
    for _ in range(3):
        big, x, ones = rng.normal(size=12), rng.normal(size=5), np.ones(5)
        y = big[4:9]
        value, grad = cf.value_and_grad(y)
        expected = tg.value_and_grad(f)(y.copy())
        assert value == pytest.approx(expected[0], rel=1e-13)
        np.testing.assert_allclose(grad, expected[1], rtol=1e-12)
        kept, freed = y.copy(), y.copy()
        big[:] = 7.0
        _, (pulled,) = cf.vjp((x,), 1.0)
        np.testing.assert_allclose(pulled, tg.grad(f)(x), rtol=1e-12)
        assert cf(kept) == pytest.approx(value, rel=1e-13)
        cf.value_and_grad(freed)
        del freed
        g, hv = cf.grad_and_hvp(kept, ones)
        np.testing.assert_allclose(hv, _fd_hvp(f, kept, ones), rtol=1e-6)
        kept[:] = np.inf
        np.testing.assert_allclose(cf.jvp((x,), (ones,))[1], tg.grad(f)(x).sum(), rtol=1e-12)
        np.testing.assert_allclose(cf.hessian(x) @ ones, _fd_hvp(f, x, ones), rtol=1e-6)
        np.testing.assert_allclose(cf2.value_and_grad(0.25, x, argnums=1)[1], tg.grad(f)(x, 0.25), rtol=1e-12)
        assert (big == 7.0).all() and np.isinf(kept).all()  # (no later call wrote them)


def test_a_one_call_sweep_that_raises_drops_its_workspace(rng):
    """A one-call sweep that raises (out of memory) may leave the workspace's blocks pointing at
    the arguments it read in place: the workspace is dropped, and the next call makes another."""
    f = lambda x: tnp.logsumexp(tnp.asarray(x) * 2.0, 0)  # noqa: E731
    cf, x = tg.compile(f), rng.normal(size=4)
    expected = cf.value_and_grad(x)[1]
    space = cf._space(cf._last)

    def failing(*args):
        raise MemoryError("Allocation failed")

    with pytest.raises(MemoryError):
        cf._in_place(cf._last, failing)
    assert cf._space(cf._last) is not space
    np.testing.assert_array_equal(cf.value_and_grad(x)[1], expected)


def test_read_only_arguments_run_the_sweeps_already_compiled(rng):
    """Read-only data (np.broadcast_to's, a JAX array's NumPy view, a read-only memory map) is
    another Numba type: the sweeps would compile themselves again for it, for a minute. Such
    arguments are copied first; the results are the same."""
    cf = tg.compile(lambda x: tnp.logsumexp(tnp.asarray(x) * tnp.asarray(x), 0))
    x = rng.normal(size=5)
    calls = {
        "workspace_gradient": lambda x: cf.value_and_grad(x)[1],
        "hvp": lambda x: cf.grad_and_hvp(x, np.ones(5))[1],
        "forward": lambda x: cf(x),
        "batch_gradient": lambda x: cf.batch_grad(points[x.flags.writeable]),
    }
    points = (np.stack([x, x, x]), np.stack([x, x, x]))  # (the first one read-only)
    points[0].flags.writeable = False
    expected = {name: (call(x), call(x))[1] for name, call in calls.items()}  # (a recording, then a replay)
    variant = cf._last
    compiled = {name: len(variant.sweep(name).signatures) for name in calls}
    frozen = x.copy()
    frozen.flags.writeable = False
    for name, call in calls.items():
        np.testing.assert_array_equal(call(frozen), expected[name])
    assert {name: len(variant.sweep(name).signatures) for name in calls} == compiled


def test_ops_on_captured_tensors_follow_their_values_at_each_replay(rng):
    """A tensor read from outside f is an input of the tape: comparisons on it, logsumexp's shift
    and detach are rows, not constants frozen at recording."""
    W = tg.tensor(rng.normal(size=5), requires_grad=True)

    def f(x):
        v = tnp.asarray(x)
        gate = tg.where(W > 0.0, W, 0.0 * W)  # a comparison of the captured tensor
        return tnp.logsumexp(W * v, 0) + (gate * v).sum() + (W.detach() * v).sum()

    cf = tg.compile(f)
    x = rng.normal(size=5)
    cf(x)
    for scale in (-1.0, 800.0):  # other signs; values whose exp overflows without a fresh shift
        W._v[:] = scale * rng.normal(size=5)
        value, grad = cf.value_and_grad(x)
        expected_value, expected_grad = tg.value_and_grad(f)(x)
        assert np.isfinite(value) and value == pytest.approx(expected_value, rel=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert cf.stats()["recordings"] == 1


def _rows_by_op(cf) -> dict:
    return cf.tape.stats()["by_op"]


def test_an_array_argument_taken_whole_is_one_array_row(rng):
    """Array code on an argument reads it with one array_input row: no row per element, no pack."""
    A = rng.normal(size=(6, 5))

    def f(x, y, s):
        v = tnp.exp(A @ x) * s + tnp.sum(y * y, 1)  # x, y whole; s a float argument
        return tnp.logsumexp(v, 0) + tnp.sum(x[1:] * tnp.asarray(x)[:-1])  # slices of the array row

    cf = tg.compile(f)
    for _ in range(3):
        x, y, s = rng.normal(size=5), rng.normal(size=(6, 2)), float(rng.normal())
        value, (gx, gy, gs) = cf.value_and_grad(x, y, s, argnums=(0, 1, 2))
        ev, (ex, ey, es) = tg.value_and_grad(f, argnums=(0, 1, 2))(x, y, s)
        assert value == pytest.approx(ev, rel=1e-13)
        np.testing.assert_allclose(gx, ex, rtol=1e-12)
        np.testing.assert_allclose(gy, ey, rtol=1e-12)
        assert gs == pytest.approx(es, rel=1e-12)
        if torch is not None:
            tx, ty, ts = (torch.tensor(v, requires_grad=True) for v in (x, y, s))
            tv = torch.exp(torch.tensor(A) @ tx) * ts + (ty * ty).sum(1)
            out = torch.logsumexp(tv, 0) + (tx[1:] * tx[:-1]).sum()
            out.backward()
            np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-12)
            np.testing.assert_allclose(gy, ty.grad.numpy(), rtol=1e-12)
    assert _rows_by_op(cf)["input"] == 1  # s; x[1:] gathers from x's row, as x was used whole first
    assert cf.stats()["recordings"] == 1
    listing = cf.tape.listing(limit=None)
    assert "input #0 (5,)" in listing and "input #5 (6, 2)" in listing and "pack" not in listing


def test_array_arguments_in_every_derivative(rng):
    """jvp, vjp, jacobian, hvp, hessian, batch, sparse and save/load through array_input rows."""
    B = rng.normal(size=(3, 4))

    def f(x):
        return tnp.sum(tnp.sin(B @ x) ** 2) + tnp.sum(x * x * x)

    def g(x):
        return tnp.tanh(B @ x) * tnp.sum(x)

    x, v = rng.normal(size=4), rng.normal(size=4)
    cf, cg = tg.compile(f), tg.compile(g)
    cf(x)
    assert "pack" not in cf.tape.listing(limit=None) and "input #0 (4,)" in cf.tape.listing(limit=None)
    H = tg.hessian(f)(x)
    np.testing.assert_allclose(cf.hvp(x, v), H @ v, rtol=1e-11)
    np.testing.assert_allclose(cf.hessian(x), H, rtol=1e-11)
    np.testing.assert_allclose(cf.sparse_hessian(x).toarray(), H, rtol=1e-11, atol=1e-13)
    J = tg.jacobian(g)(x)
    np.testing.assert_allclose(cg.jacobian(x), J, rtol=1e-12)
    np.testing.assert_allclose(cg.sparse_jacobian(x).toarray(), J, rtol=1e-12)
    np.testing.assert_allclose(cg.jvp((x,), (v,))[1], J @ v, rtol=1e-12)
    w = rng.normal(size=3)
    np.testing.assert_allclose(cg.vjp((x,), w)[1][0], w @ J, rtol=1e-12)
    X = rng.normal(size=(5, 4))
    np.testing.assert_allclose(cf.batch_grad(X), [tg.grad(f)(p) for p in X], rtol=1e-12)


def test_array_argument_saved_and_loaded(rng, tmp_path):
    cf = tg.compile(lambda x: tnp.sum(tnp.exp(x) * x))
    x = rng.normal(size=7)
    cf(x)
    cf.save(tmp_path / "f.npz")
    loaded = tg.load(tmp_path / "f.npz")
    y = rng.normal(size=7)
    np.testing.assert_allclose(loaded.grad(y), np.exp(y) * (1.0 + y), rtol=1e-13)
    data = dict(np.load(tmp_path / "f.npz"))
    data["0_input_slots"] = data["0_input_slots"].copy()
    data["0_input_slots"][3] = len(data["0_op"]) - 1  # entry 3 "read" by the output row
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(ValueError, match="an argument's entry read by another row"):
        tg.load(tmp_path / "bad.npz")


def test_scalar_code_still_sees_traced_elements(rng):
    """Indexing, slicing, iteration and np.asarray give traced scalars; a float conversion of
    the whole argument is refused; array use after element use packs, before it gathers."""
    def scalar_code(x):
        grid = np.asarray(x).reshape(2, 3)  # an object array of traced scalars
        assert grid.dtype == object and isinstance(x[1:][0], tg.Tensor)
        total = sum(v * v for v in x) + grid[1, 2] * x[0]
        return total + tnp.sum(tnp.asarray(x) ** 3)  # elements first: packed

    def array_first(x):
        total = tnp.sum(x * 2.0)
        return total + x[0] * x[5]  # gathers from the array row

    def cross(x):  # d(x0 x5)/dx
        return np.eye(6)[0] * x[5] + np.eye(6)[5] * x[0]

    grads = {scalar_code: lambda x: 2 * x + 3 * x**2 + cross(x), array_first: lambda x: 2 + cross(x)}
    for f, grad in grads.items():
        cf = tg.compile(f)
        for _ in range(2):
            x = rng.normal(size=6)
            np.testing.assert_allclose(cf.grad(x), grad(x), rtol=1e-12)
    with pytest.raises(tg.TracingError, match="converting to a NumPy array of float64"):
        tg.compile(lambda x: np.asarray(x, dtype=float).sum())(np.ones(3))


def test_an_array_output_is_read_from_its_row(rng):
    """An array returned by f is the block of its row: no row per element (a 10^4-element output
    costs one row), every derivative seeds or reads that block, and results are copies."""
    A = rng.normal(size=(6, 4))

    def wide(x):  # 6 outputs of 4 inputs: jacobian by reverse sweeps
        return tnp.sin(A @ x) * tnp.sum(x)

    def tall(x):  # 2 outputs of 4 inputs: jacobian by tangent sweeps
        return tnp.stack([tnp.sum(x * x), tnp.prod(x)])

    for f, passes in ((wide, False), (tall, False), (wide, True)):
        cf = tg.compile(f, optimize=passes)
        x, v = rng.normal(size=4), rng.normal(size=4)
        first = cf(x)
        J = tg.jacobian(f)(x)
        np.testing.assert_allclose(first, f(tg.tensor(x)).numpy(), rtol=1e-13)
        np.testing.assert_allclose(cf.jacobian(x), J, rtol=1e-12)
        np.testing.assert_allclose(cf.sparse_jacobian(x).toarray(), J, rtol=1e-12)
        np.testing.assert_allclose(cf.jvp((x,), (v,))[1], J @ v, rtol=1e-12)
        w = rng.normal(size=len(first))
        value, (pulled,) = cf.vjp((x,), w)
        np.testing.assert_allclose(pulled, w @ J, rtol=1e-12)
        np.testing.assert_array_equal(value, first)
        saved = first.copy()
        cf(x + 1.0)
        np.testing.assert_array_equal(first, saved)  # not a view of the workspace
    plain = tg.compile(wide)
    plain(x)
    assert "gather" not in plain.tape.listing(limit=None)
    big = tg.compile(lambda x: tnp.exp(x) * 2.0)
    y = rng.normal(size=10_000)
    np.testing.assert_allclose(big(y), np.exp(y) * 2.0, rtol=1e-15)
    assert len(big.tape) == 3  # input, exp, mul


def test_returning_an_argument_or_data_and_saving_array_outputs(rng, tmp_path):
    ident = tg.compile(lambda x: x)
    x = rng.normal(size=5)
    np.testing.assert_array_equal(ident(x), x)
    np.testing.assert_array_equal(ident.jacobian(x), np.eye(5))
    D = rng.normal(size=3)
    data = tg.compile(lambda x: tg.tensor(D) + 0.0 * tnp.sum(x))
    np.testing.assert_allclose(data(x), D)
    np.testing.assert_allclose(data.jacobian(x), np.zeros((3, 5)), atol=0)
    cf = tg.compile(lambda x: tnp.tanh(x[::-1]) * x)
    cf(x)
    cf.save(tmp_path / "out.npz")
    loaded = tg.load(tmp_path / "out.npz")
    z = rng.normal(size=5)
    np.testing.assert_allclose(loaded(z), np.tanh(z[::-1]) * z, rtol=1e-15)
    np.testing.assert_allclose(loaded.jacobian(z), cf.jacobian(z), rtol=1e-15)


def test_a_stack_of_cotangents_pulls_back_each_after_one_replay(rng):
    A = rng.normal(size=(3, 4))
    cf = tg.compile(lambda x, s: tnp.tanh(A @ x) * s)
    x, s = rng.normal(size=4), 0.7
    cots = rng.normal(size=(5, 3))
    out, (gx, gs) = cf.vjp((x, s), cots)
    assert gx.shape == (5, 4) and gs.shape == (5,)
    for k, c in enumerate(cots):
        one, (ex, es) = cf.vjp((x, s), c)
        np.testing.assert_array_equal(gx[k], ex)
        assert gs[k] == es
    np.testing.assert_array_equal(out, one)
    J = cf.jacobian(x, s)
    np.testing.assert_allclose(gx, cots @ J, rtol=1e-12)
    scalar = tg.compile(lambda x: tnp.sum(x**3))
    np.testing.assert_allclose(scalar.vjp((x,), [1.0, 2.0])[1][0], [3 * x**2, 6 * x**2], rtol=1e-13)
    with pytest.raises(ValueError, match=r"shape \(k, \*\(3,\)\)"):
        cf.vjp((x, s), np.ones((2, 2)))


def test_tolist_of_traced_arrays_follows_the_inputs_or_is_refused():
    cf = tg.compile(lambda x: sum(x.tolist()))  # an argument: its traced elements
    assert cf(np.array([1.0, 2.0, 3.0])) == 6.0 and cf(np.full(3, 5.0)) == 15.0
    W = tg.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(tg.TracingError, match=r"\.tolist\(\)"):  # a traced result's values
        tg.compile(lambda x: sum((W * x).tolist()))(np.ones(3))


def test_pullbacks_of_one_output_column_skip_only_rows_it_never_reaches(rng):
    """A reverse sweep skips, unread, the blocks nothing pushed to (its live bytes): a pullback of one
    column of stacked errors reaches part of the tape, with zeros through the other columns' rows."""
    n = 50
    t = rng.normal(size=(4, n))

    def errors(x):
        t = x.reshape(4, n)
        a = tnp.sin(t[0]) * t[1]
        b = tnp.exp(t[2]) / (1.0 + t[3] ** 2)
        return tnp.stack([a * b, b + 2.0, 1.0 - t[3] * t[3]], axis=1)

    a = np.sin(t[0]) * t[1]
    b = np.exp(t[2]) / (1.0 + t[3] ** 2)
    db3 = -b * 2.0 * t[3] / (1.0 + t[3] ** 2)
    zero = np.zeros(n)
    expected = [
        np.stack([np.cos(t[0]) * t[1] * b, np.sin(t[0]) * b, a * b, a * db3]),
        np.stack([zero, zero, b, db3]),
        np.stack([zero, zero, zero, -2.0 * t[3]]),
    ]
    seeds = np.zeros((3, n, 3))
    for j in range(3):
        seeds[j, :, j] = 1.0
    cf = tg.compile(errors)
    for order in ((0, 1, 2), (2, 0, 1), (1, 2, 0)):  # (each sweep leaves the workspace for the next)
        _, (pulled,) = cf.vjp((t.ravel(),), seeds[list(order)])
        for k, j in enumerate(order):
            np.testing.assert_allclose(pulled[k].reshape(4, n), expected[j], rtol=1e-13, atol=1e-15)
    _, pull = tg.vjp(errors, t.ravel())  # eager, the same sweep
    for j in range(3):
        np.testing.assert_allclose(pull(seeds[j])[0].reshape(4, n), expected[j], rtol=1e-13, atol=1e-15)


def test_a_seeded_block_that_later_rows_read_is_pulled_back(rng):
    """An output (or a tensor seeded by backward) that rows after it read: its block is seeded by
    the caller, not pushed to by any row of the sweep, and must not be skipped."""
    x = rng.normal(size=6)
    c = rng.normal(size=6)

    def f(x):
        y = tnp.sin(x)
        tnp.sum(y * 3.0)  # a row after the output reads it (its adjoint stays zero)
        return y

    cf = tg.compile(f)
    for _ in range(2):
        np.testing.assert_allclose(cf.vjp((x,), c)[1][0], c * np.cos(x), rtol=1e-14)
        np.testing.assert_allclose(cf.jacobian(x), np.diag(np.cos(x)), rtol=1e-14)
    xt = tg.tensor(x, requires_grad=True)
    y = xt * xt
    (tnp.sum(y) * 2.0).item()  # a later row reading y, never swept from
    y.backward(c)
    np.testing.assert_allclose(xt.grad.numpy(), 2.0 * x * c, rtol=1e-14)


def test_a_loaded_join_row_is_checked(rng, tmp_path):
    """A join row's two index maps must place each operand inside the result."""
    cf = tg.compile(lambda x: tnp.sum(tg.concatenate([x[:2], x[1:] * 2.0]) ** 2))
    x = rng.normal(size=5)
    expected = cf.value_and_grad(x)
    path = tmp_path / "join.npz"
    cf.save(path)
    assert tg.load(path).value_and_grad(x)[0] == expected[0]
    data = dict(np.load(path))
    join = kernels.ARRAY_CODE["join"]
    entry = int(data["0_arr3"][list(data["0_arr0"]).index(join)])
    for at, value in ((1, 5), (5, 3), (5, 1)):  # x's map's offset, then y's, one place too far; y's
        # overlapping x's (inside the result, but leaving its last element unwritten)
        broken = dict(data)
        broken["0_arr6"] = data["0_arr6"].copy()
        broken["0_arr6"][entry + at] = value
        np.savez(tmp_path / "bad.npz", **broken)
        with pytest.raises(ValueError, match="corrupted"):
            tg.load(tmp_path / "bad.npz")


def test_every_sweep_after_any_other_in_one_workspace(rng):
    """Each reverse sweep starts from zero blocks but those its caller seeds (the live bytes): any
    sweep left behind by another method of the same compiled function must keep that true."""
    n = 30

    def errors(x):
        t = x.reshape(3, n)
        a = tnp.sin(t[0]) * t[1]
        return tnp.stack([a * t[2], tnp.exp(t[2]) + 2.0, 1.0 - t[1] * t[1]], axis=1)

    def loss(x):
        e = errors(x)
        return tnp.sum(e[:, 0] * e[:, 2])

    x, v = rng.normal(size=3 * n), rng.normal(size=3 * n)
    seeds = np.zeros((3, n, 3))
    for j in range(3):
        seeds[j, :, j] = 1.0
    calls = {
        "vjp": lambda cf, lf: cf.vjp((x,), seeds[1])[1][0],
        "vjp stack": lambda cf, lf: cf.vjp((x,), seeds[::-1])[1][0],
        "jacobian": lambda cf, lf: cf.jacobian(x),
        "jvp": lambda cf, lf: cf.jvp((x,), (v,))[1],
        "value_and_grad": lambda cf, lf: lf.value_and_grad(x)[1],
        "grad_and_hvp": lambda cf, lf: np.concatenate(lf.grad_and_hvp(x, v)),
        "sparse_hessian": lambda cf, lf: lf.sparse_hessian(x).toarray(),
        "loss vjp": lambda cf, lf: lf.vjp((x,), 1.0)[1][0],
    }
    expected = {name: call(tg.compile(errors), tg.compile(loss)) for name, call in calls.items()}
    eps = 1e-6  # the first calls, each in a fresh workspace, against central differences in NumPy
    J = np.stack([(errors(x + eps * e) - errors(x - eps * e)).ravel() / (2 * eps) for e in np.eye(3 * n)], 1)
    grad = lambda y: tg.compile(loss).grad(y)  # noqa: E731
    H = np.stack([(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in np.eye(3 * n)], 1)
    g = J[0::3].T @ errors(x)[:, 2] + J[2::3].T @ errors(x)[:, 0]  # loss = e[:, 0] . e[:, 2]
    for name, want in [("vjp", seeds[1].ravel() @ J), ("vjp stack", seeds[::-1].reshape(3, -1) @ J),
                       ("jacobian", J.reshape(n, 3, 3 * n)), ("jvp", (J @ v).reshape(n, 3)),
                       ("value_and_grad", g), ("loss vjp", g), ("grad_and_hvp", np.concatenate([g, H @ v])),
                       ("sparse_hessian", H)]:
        np.testing.assert_allclose(expected[name], want, rtol=1e-6, atol=1e-6, err_msg=name)
    cf, lf = tg.compile(errors), tg.compile(loss)
    order = list(calls) * 2
    rng.shuffle(order)
    for name in order:
        np.testing.assert_allclose(calls[name](cf, lf), expected[name], rtol=1e-13, atol=1e-14, err_msg=name)


def test_value_and_grad_accumulates_array_gradients_in_the_result(rng):
    """The one-call gradient points each array argument's adjoint block at its entries of the
    returned gradient: every result is its own array (the next call does not write into it),
    arguments a rule reads twice, not at all, or next to scalars get theirs, and the sweeps that
    read the blocks in the workspace (vjp, hvp, anomaly mode) still find them zero or right."""

    def f(x, s, y, unused):
        return tnp.sum(tnp.exp(x) * y) + s * tnp.sum(x * x) + tnp.sum(tnp.sin(y)) * s

    def expected(x, s, y):
        return (np.exp(x) * y + 2 * s * x, np.sum(x * x) + np.sum(np.sin(y)), np.exp(x) + s * np.cos(y))

    cf = tg.compile(f)
    points = [(rng.normal(size=50), float(rng.normal()), rng.normal(size=50), rng.normal(size=7))
              for _ in range(4)]
    results = [cf.value_and_grad(*p, argnums=(0, 1, 2, 3))[1] for p in points]
    for p, got in zip(points, results):  # checked after every call ran: none wrote into another's
        for g, want in zip(got, (*expected(*p[:3]), np.zeros(7))):
            np.testing.assert_allclose(g, want, rtol=1e-13, atol=1e-15)
    x, s, y, unused = points[0]
    v = rng.normal(size=50)
    g_only = tg.compile(lambda x: tnp.sum(tnp.exp(x) * y) + s * tnp.sum(x * x))
    for call in ["grad", "vjp", "grad", "hvp", "grad", "anomaly", "grad", "batch"] * 2:
        if call == "grad":
            np.testing.assert_allclose(g_only.grad(x), expected(x, s, y)[0], rtol=1e-13)
        elif call == "vjp":
            np.testing.assert_allclose(g_only.vjp((x,), 2.0)[1][0], 2 * expected(x, s, y)[0], rtol=1e-13)
        elif call == "hvp":
            np.testing.assert_allclose(g_only.hvp(x, v), (np.exp(x) * y + 2 * s) * v, rtol=1e-13)
        elif call == "anomaly":
            with tg.detect_anomaly():
                np.testing.assert_allclose(g_only.grad(x), expected(x, s, y)[0], rtol=1e-13)
        else:
            xs = np.stack([x, 2 * x, -x])
            _, grads = g_only.batch_value_and_grad(xs)
            np.testing.assert_allclose(grads, [expected(p, s, y)[0] for p in xs], rtol=1e-13)


def test_a_rule_that_pushes_first_to_a_block_assigns_it(rng):
    """logsumexp's rule writes the adjoint block of an operand it is the first to push to rather
    than adding to it. An argument's block, its entries of the returned gradient (or the
    workspace's, for a pullback), holds what the last call left until then (STALE): whether the
    rule pushes first or after another, in runs of one segment or across segments, with seeds of
    any value (zero too), every gradient is right, and an argument no rule reaches gets zeros."""
    w = np.array([1.0, 0.0, 3.0, -0.5])

    def softmax(x, axis):
        e = np.exp(x - x.max(axis, keepdims=True))
        return e / e.sum(axis, keepdims=True)

    cases = {  # f(x, unused), its gradient in x
        "first": (lambda x, u: tnp.sum(x * x) + tnp.sum(tnp.logsumexp(x, 1) * w),
                  lambda x: 2 * x + w[:, None] * softmax(x, 1)),
        "after": (lambda x, u: tnp.sum(tnp.logsumexp(x, 1) * w) + tnp.sum(x * x),
                  lambda x: 2 * x + w[:, None] * softmax(x, 1)),
        "across": (lambda x, u: tnp.sum(tnp.logsumexp(x, 0) * w[:3]) + tnp.logsumexp(x[1], 0) * 0.0,
                   lambda x: w[:3] * softmax(x, 0)),
        "scaled": (lambda x, u: 3.0 * tnp.logsumexp(x), lambda x: 3.0 * softmax(x, None)),
        "inner": (lambda x, u: tnp.logsumexp(x.reshape(3, 4) * 2.0), lambda x: 2.0 * softmax(2.0 * x, None)),
    }
    for name, (f, grad) in cases.items():
        cf = tg.compile(f)
        for scale in (1.0, 30.0, -2.0):  # (points far apart: a leftover adjoint would show)
            x, unused = scale * rng.normal(size=(4, 3)), rng.normal(size=5)
            _, (gx, gu) = cf.value_and_grad(x, unused, argnums=(0, 1))
            np.testing.assert_allclose(gx, grad(x), rtol=1e-13, atol=1e-15, err_msg=name)
            np.testing.assert_array_equal(gu, np.zeros(5))
            _, (vx, vu) = cf.vjp((x, unused), 2.0)
            np.testing.assert_allclose(vx, 2.0 * grad(x), rtol=1e-13, atol=1e-15, err_msg=name)
            np.testing.assert_array_equal(vu, np.zeros(5))
            assert _unread_adjoints(cf) == 0.0
            with tg.detect_anomaly():  # (a sweep that adds to blocks zeroed first)
                np.testing.assert_allclose(cf.grad(x, unused), grad(x), rtol=1e-13, atol=1e-15, err_msg=name)


def test_pullbacks_accumulate_in_their_rows_of_the_result(rng):
    """vjp and jacobian pull each cotangent back into its own row of the result in place: rows do
    not leak into one another, and an output that is an argument itself (its block holds the
    seeds) is pulled back through the copy path."""
    x, y = rng.normal(size=(4, 5)), rng.normal(size=5)
    cots = rng.normal(size=(3, 4, 5))
    cases = [(lambda x, y: tnp.sin(x) * y, lambda c: (c * np.cos(x) * y, (c * np.sin(x)).sum(0))),
             (lambda x, y: x, lambda c: (c, np.zeros(5))),
             (lambda x, y: x.reshape(4, 5) + 0.0 * tnp.sum(y), lambda c: (c, np.zeros(5)))]
    for f, expected in cases:
        cf = tg.compile(f)
        for _ in range(2):
            _, (gx, gy) = cf.vjp((x, y), cots)
            for k, c in enumerate(cots):
                np.testing.assert_allclose(gx[k], expected(c)[0], rtol=1e-14, atol=1e-15)
                np.testing.assert_allclose(gy[k], expected(c)[1], rtol=1e-14, atol=1e-15)
        J = cf.jacobian(x, y)
        np.testing.assert_allclose(J[..., :20].reshape(4, 5, 4, 5).sum((0, 1)),
                                   expected(np.ones((4, 5)))[0], rtol=1e-13, atol=1e-14)
        for anomaly in (True, False, True):  # (anomaly mode's sweeps leave every block to clear)
            with tg.detect_anomaly() if anomaly else contextlib.nullcontext():
                _, (gx, gy) = cf.vjp((x, y), cots[0])
            np.testing.assert_allclose(gx, expected(cots[0])[0], rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(gy, expected(cots[0])[1], rtol=1e-14, atol=1e-15)


def test_vjp_and_jacobian_read_array_arguments_in_place_and_leave_them_alone(rng):
    """vjp and jacobian replay with the array inputs' value blocks pointing at the arguments (no
    copy) and point them back after: a later replay at other arguments copies those into the
    workspace, never into the earlier arguments. Captured tensors (their values joined to the
    arguments) and an output that is the argument itself take the same path."""
    W = tg.tensor(rng.normal(size=5))
    cases = [(lambda x: tnp.sin(x) * x, lambda x, c: c * (np.cos(x) * x + np.sin(x))),
             (lambda x: x * W, lambda x, c: c * W.detach().numpy()),
             (lambda x: x, lambda x, c: c)]
    for f, pullback in cases:
        cf = tg.compile(f)
        x1, x2, cot = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
        kept = x1.copy()
        for _ in range(2):
            out, (g,) = cf.vjp((x1,), cot)
            np.testing.assert_allclose(out, f(tg.tensor(x1)).detach().numpy(), rtol=1e-15)
            np.testing.assert_allclose(g, pullback(x1, cot), rtol=1e-14)
            np.testing.assert_allclose(cf.jacobian(x1) @ cot, pullback(x1, cot), rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(cf(x2), f(tg.tensor(x2)).detach().numpy(), rtol=1e-15)
            np.testing.assert_array_equal(x1, kept)
            np.testing.assert_allclose(cf.vjp((x2,), cot)[1][0], pullback(x2, cot), rtol=1e-14)
            np.testing.assert_allclose(cf(x1), f(tg.tensor(x1)).detach().numpy(), rtol=1e-15)


def test_replayed_sin_and_cos_are_within_an_ulp_of_libm(rng):
    """The array kernels' sin and cos (vsin, vcos: a reduction by pi/2 in three parts and fdlibm's
    polynomials, which vectorize) against NumPy's, forward and in the reverse rules: at random
    points of every size up to their range, next to multiples of pi/2 (where the reduction
    cancels), at signed zeros and tiny values; runs holding a point past the range, inf or NaN
    take libm's, whose values they must then equal."""
    near = np.arange(1, 60000, 13) * (np.pi / 2)
    points = np.concatenate([rng.uniform(-1, 1, 4000), rng.uniform(-99999.0, 99999.0, 4000), near,
                             np.nextafter(near, 0.0), np.nextafter(near, np.inf),
                             [0.0, -0.0, 1e-300, -5e-324], rng.uniform(-1e-8, 1e-8, 100)])
    outside = points.copy()
    outside[7] = 3e5
    special = np.array([1.0, np.inf, -np.inf, np.nan, 2e5, -1e300, 0.5])

    def libm(function, sign=1.0):  # (math's: the C library's, which NumPy's need not be)
        return lambda t: np.array([sign * function(v) if math.isfinite(v) else np.nan for v in np.ravel(t)])

    cases = ((tnp.sin, libm(math.sin), libm(math.cos)), (tnp.cos, libm(math.cos), libm(math.sin, -1.0)))
    for f, ref, dref in cases:
        values = tg.compile(f)
        grad = tg.compile(lambda t, f=f: tnp.sum(f(t)))
        for x in (points, outside):
            with np.errstate(invalid="ignore"):
                for got, want in ((values(x), ref(x)), (grad.grad(x), dref(x))):
                    ulps = np.abs(got - want) / np.spacing(np.abs(want))
                    assert ulps.max() <= 1.0, (f, x[np.argmax(ulps)])
        np.testing.assert_array_equal(np.signbit(values(np.array([0.0, -0.0]))), np.signbit(ref([0.0, -0.0])))
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(values(special), ref(special))
            pulled = tg.compile(lambda t, f=f: f(t) * 1.0).vjp((special,), np.ones(7))[1][0]
            np.testing.assert_array_equal(pulled, dref(special))


def test_blocks_that_share_the_scratch_are_never_live_at_once(rng):
    """kernels.adjoint_plan: a block is live from the first row (last to first) that pushes to it
    (0-d reductions included) until its own row; blocks whose lives overlap must not overlap in
    the scratch, inputs and the seeded output keep their own, and the sweeps that use the plan
    give the gradients the blocks of their own give (vjp of an array output, value_and_grad)."""
    W = tg.tensor(rng.normal(size=(6, 5)), requires_grad=True)

    def f(x):
        u = tg.sin(W @ x)  # read by a 0-d reduction alone, the last row
        h = tg.tanh(W @ x)
        gate = tg.where(h > 0.0, h, 0.2 * h)
        s = tnp.logsumexp(gate, 0) + tnp.max(h) * tnp.sum(tg.sin(x) * x)
        return gate * s + (h.detach() * tnp.exp(h)) + tnp.mean(gate * gate) + tnp.max(u)

    cf = tg.compile(f)
    x = rng.normal(size=5)
    cf(x)
    v = cf._last
    code, ax, ay, size = v.arrays[0], v.arrays[1], v.arrays[2], v.arrays[5]
    offsets, length = kernels.adjoint_plan(v.op, v.a, v.arrays, (v.array_output,))
    rows = np.flatnonzero((v.op == kernels.ARRAY_ROW) | (v.op == kernels.ARRAY_ROW + 1))
    born = {}
    for i in rows[::-1]:  # a block is born at its first pusher, dies at its own row
        j = v.a[i]
        for bit, operand in ((1, ax[j]), (2, ay[j])):
            if kernels.PUSHES[code[j]] & bit and v.op[operand] == kernels.ARRAY_ROW:
                born.setdefault(v.a[operand], i)
    own = [v.a[i] for i in rows if v.op[i] == kernels.ARRAY_ROW]
    assert offsets[v.a[v.array_output]] == -1 and all(offsets[j] == -1 for j in range(len(code))
                                                      if code[j] == kernels.ARRAY_CODE["array_input"])
    lives = {j: (int(np.flatnonzero(v.a == j)[0]), born.get(j, np.flatnonzero(v.a == j)[0])) for j in own
             if offsets[j] >= 0}
    assert lives and max(offsets[j] + size[j] for j in lives) <= length < sum(size[j] for j in lives)
    for j in lives:
        for k in lives:
            if j < k and not (lives[j][1] < lives[k][0] or lives[k][1] < lives[j][0]):  # alive together
                assert offsets[j] + size[j] <= offsets[k] or offsets[k] + size[k] <= offsets[j], (j, k)
    loss = tg.compile(lambda x: tnp.sum(f(x) * f(x)))
    for _ in range(3):
        x = rng.normal(size=5)
        cot = rng.normal(size=6)
        np.testing.assert_allclose(cf.vjp((x,), cot)[1][0], tg.vjp(f, x)[1](cot)[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(loss.grad(x), tg.grad(lambda x: tnp.sum(f(x) * f(x)))(x), rtol=1e-12)
