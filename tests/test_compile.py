"""tg.compile: record once, replay in Numba; guards, re-recording, derivatives, threads, save/load."""

import threading

import numpy as np
import pytest
from tapegrad.kernels import runs

import tapegrad as tg

from .conftest import needs_torch, torch


def rosen(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def rosen_grad(x):
    r = x[1:] - x[:-1] ** 2
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * r - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * r
    return g


def eager_grad(f, x):
    leaves = [tg.tensor(float(v), requires_grad=True) for v in x]
    arr = np.empty(len(leaves), dtype=object)
    arr[:] = leaves
    y = f(arr)
    y.backward()
    return y.item(), np.array([t.grad.item() if t.grad is not None else 0.0 for t in leaves])


def test_replay_at_many_points_equals_eager_recording(rng):
    cf = tg.compile(rosen)
    for _ in range(20):
        x = rng.uniform(-2, 2, 12)
        value, grad = cf.value_and_grad(x)
        e_value, e_grad = eager_grad(rosen, x)
        assert value == e_value
        np.testing.assert_array_equal(grad, e_grad)
        np.testing.assert_allclose(grad, rosen_grad(x), rtol=1e-12)
        assert cf(x) == value
    assert cf.stats()["recordings"] == 1 and cf.stats()["calls"] >= 40


def test_scalar_arguments_argnums_and_decorator():
    @tg.compile
    def f(x, y):
        return tg.sin(x) * y**2 + tg.exp(x * y)

    x, y = 0.3, -1.2
    gx, gy = f.grad(x, y, argnums=(0, 1))
    assert gx == pytest.approx(np.cos(x) * y**2 + y * np.exp(x * y), rel=1e-12)
    assert gy == pytest.approx(2 * y * np.sin(x) + x * np.exp(x * y), rel=1e-12)
    assert f.grad(x, y, argnums=1) == gy
    assert tg.gradcheck(lambda a, b: tg.sin(a) * b**2 + tg.exp(a * b), (x, y))


@needs_torch
def test_gradients_match_torch(rng):
    def f(x):
        return tg.tanh(x[0] * x[1]) + tg.log1p(x[2] ** 2) / (1.0 + tg.sigmoid(x[1])) - tg.atan2(x[0], x[2])

    cf = tg.compile(f)
    for _ in range(5):
        x = rng.uniform(-1, 1, 3)
        t = torch.tensor(x, requires_grad=True)
        (
            torch.tanh(t[0] * t[1])
            + torch.log1p(t[2] ** 2) / (1 + torch.sigmoid(t[1]))
            - torch.atan2(t[0], t[2])
        ).backward()
        np.testing.assert_allclose(cf.grad(x), t.grad.numpy(), rtol=1e-12)


def branchy(x):
    if x > 1.0:
        return x**3
    if x < -1.0:
        return -2.0 * x
    return abs(x) if x > 0 else x * x  # abs via if, and a kink


def halvings(x):
    # a loop whose trip count depends on the value
    while x > 1.0:
        x = x / 2.0
    return x * x


@pytest.mark.parametrize("f,points,derivative", [
    (branchy, [2.0, 1.5, -3.0, 0.5, -0.5, 2.5, -2.0, 0.25],
     lambda x: 3 * x**2 if x > 1 else (-2.0 if x < -1 else (1.0 if x > 0 else 2 * x))),
    (halvings, [0.5, 3.0, 10.0, 0.9, 7.0, 1.5], lambda x: 2 * x / 4 ** np.ceil(max(np.log2(x), 0))),
])
def test_branches_are_guarded_and_re_recorded(f, points, derivative):
    cf = tg.compile(f)
    for x in points:
        assert cf.grad(x) == pytest.approx(derivative(x), rel=1e-12), x
        assert cf(x) == pytest.approx(f(x), rel=1e-12)
    stats = cf.stats()
    assert stats["rerecordings"] >= 2 and stats["tape"]["guards"] >= 1
    assert stats["recordings"] == stats["rerecordings"] + 1


def test_variants_are_bounded_least_recently_used():
    cf = tg.compile(halvings, max_variants=2)
    for x in (0.5, 3.0, 10.0, 0.5):
        cf.grad(x)
    assert cf.stats()["variants"] == 2
    assert cf.stats()["recordings"] == 4  # 0.5's variant was evicted by 10.0's


def test_where_records_both_sides_and_no_guard():
    cf = tg.compile(lambda x: tg.where(x > 0.0, tg.sqrt(x), -x * 3.0))
    assert cf.grad(4.0) == 0.25 and cf.grad(-1.0) == -3.0 and cf.grad(9.0) == pytest.approx(1 / 6)
    assert cf.stats()["recordings"] == 1 and cf.stats()["tape"]["guards"] == 0
    # the branch not taken passes nothing: sqrt(-1) is NaN with an infinite... NaN partial, unused
    assert np.isfinite(cf.grad(-4.0))


def test_vector_outputs_jacobian_jvp_vjp(rng):
    def f(x, y):
        return [x[0] * y, tg.sin(x[1]), x[0] * x[1] * y, tg.exp(y)]

    cf = tg.compile(f)
    x, y = rng.uniform(-1, 1, 2), 0.7
    out = cf(x, y)
    np.testing.assert_allclose(out, [x[0] * y, np.sin(x[1]), x[0] * x[1] * y, np.exp(y)])
    jx = cf.jacobian(x, y)  # 4 outputs > 2 inputs: tangent sweeps
    expected = np.array([[y, 0], [0, np.cos(x[1])], [x[1] * y, x[0] * y], [0, 0]])
    np.testing.assert_allclose(jx, expected, rtol=1e-12)
    jy = cf.jacobian(x, y, argnums=1)
    np.testing.assert_allclose(jy, [x[0], 0, x[0] * x[1], np.exp(y)], rtol=1e-12)
    _, dot = cf.jvp((x, y), (np.array([1.0, 0.0]), 0.0))
    np.testing.assert_allclose(dot, expected[:, 0], rtol=1e-12)
    _, (gx, gy) = cf.vjp((x, y), np.ones(4))
    np.testing.assert_allclose(gx, expected.sum(axis=0), rtol=1e-12)
    assert gy == pytest.approx(x[0] + x[0] * x[1] + np.exp(y))
    wide = tg.compile(lambda x: x[0] * x[1] + x[2])  # 1 output < 3 inputs: a reverse sweep
    np.testing.assert_allclose(wide.jacobian(np.array([2.0, 3.0, 4.0])), [3.0, 2.0, 1.0])


def test_captured_parameters_are_read_at_each_call():
    w = tg.tensor(2.0, requires_grad=True)
    cf = tg.compile(lambda x: w * x * x)
    assert cf(3.0) == 18.0
    w.requires_grad_(False)
    w._v = 5.0
    w.requires_grad_(True)
    assert cf(3.0) == 45.0 and cf.grad(3.0) == 30.0


@pytest.mark.parametrize("body,what", [
    (lambda x: float(x) * 2.0, "float()"),
    (lambda x: x.item(), ".item()"),
    (lambda x: tg.tensor(x) * x, "tg.tensor()"),
    (lambda x: [1.0, 2.0][int(x > 0)], "int()"),
])
def test_values_leaving_the_tape_raise_a_clear_error(body, what):
    with pytest.raises(tg.TracingError, match="while recording for tg.compile"):
        tg.compile(body)(1.0)
    with pytest.raises(
        tg.TracingError, match=what.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        tg.compile(body)(1.0)
    assert tg.compile(lambda x: x * 2.0).grad(1.0) == 2.0  # still working


def test_detach_while_tracing_follows_the_value():
    cf = tg.compile(lambda x: x * x.detach())
    assert cf(3.0) == 9.0 and cf(4.0) == 16.0 and cf.grad(4.0) == 4.0


def test_bad_arguments():
    cf = tg.compile(lambda x: x * 2.0)
    with pytest.raises(TypeError, match="argument 0"):
        cf(["a", "b"])
    with pytest.raises(ValueError, match="scalar output"):
        tg.compile(lambda x: [x, x]).grad(1.0)
    assert cf(np.nan) != cf(np.nan) and cf(np.inf) == np.inf  # IEEE, no exception


def test_batch_grad_equals_single_calls(rng):
    cf = tg.compile(rosen)
    X = rng.uniform(-2, 2, size=(64, 20))
    values, grads = cf.batch_value_and_grad(X)
    for r in range(len(X)):
        v, g = cf.value_and_grad(X[r])
        assert values[r] == v
        np.testing.assert_array_equal(grads[r], g)
    np.testing.assert_array_equal(cf.batch_grad(X), grads)


def test_batch_grad_with_branches_re_records_the_other_side():
    cf = tg.compile(lambda x: x[0] ** 3 if x[0] > 1.0 else -2.0 * x[0])
    X = np.array([[2.0], [-1.0], [3.0], [0.0]])
    np.testing.assert_allclose(cf.batch_grad(X)[:, 0], [12.0, -2.0, 27.0, -2.0])


def test_concurrent_replay_from_threads_equals_serial(rng):
    cf = tg.compile(rosen)
    X = rng.uniform(-2, 2, size=(8, 30))
    serial = [cf.value_and_grad(x) for x in X]
    results = [None] * len(X)

    def work(k):
        for _ in range(50):
            results[k] = cf.value_and_grad(X[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(X))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (v, g), (sv, sg) in zip(results, serial):
        assert v == sv
        np.testing.assert_array_equal(g, sg)


def test_save_and_load_round_trip(tmp_path):
    cf = tg.compile(branchy)
    for x in (2.0, -3.0, 0.5):
        cf.grad(x)
    path = str(tmp_path / "branchy.npz")
    cf.save(path)
    loaded = tg.load(path)
    for x in (2.5, -2.0, 0.25):
        assert loaded.grad(x) == cf.grad(x) and loaded(x) == cf(x)
    with pytest.raises(RuntimeError, match="cannot record again"):
        loaded(-0.5)  # the branch x <= 0 inside [-1, 1] was never recorded


def test_load_refuses_other_versions_and_corrupted_files(tmp_path):
    cf = tg.compile(rosen)
    cf(np.ones(4))
    path = tmp_path / "r.npz"
    cf.save(str(path))
    data = dict(np.load(path))
    import json

    header = json.loads(str(data["header"]))
    header["version"] = 99
    np.savez(tmp_path / "v.npz", **{**data, "header": np.array(json.dumps(header))})
    with pytest.raises(ValueError, match="format version 99"):
        tg.load(str(tmp_path / "v.npz"))
    header["version"] = 2  # every argument entry read by an input row: still valid
    np.savez(tmp_path / "v2.npz", **{**data, "header": np.array(json.dumps(header))})
    np.testing.assert_allclose(tg.load(str(tmp_path / "v2.npz")).grad(np.zeros(4)), cf.grad(np.zeros(4)))
    bad = dict(data)
    bad["0_a"] = bad["0_a"].copy()
    bad["0_a"][-1] = 10**6
    np.savez(tmp_path / "c.npz", **bad)
    with pytest.raises(ValueError, match="corrupted"):
        tg.load(str(tmp_path / "c.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a tape")
    with pytest.raises(ValueError, match="not a saved tapegrad tape"):
        tg.load(str(tmp_path / "junk.npz"))
    assert tg.load(str(path))(np.ones(4)) == 0.0


def test_inspection():
    cf = tg.compile(lambda x: tg.exp(x) * 2.0 if x > 0 else x)
    cf(1.0)
    assert len(cf.tape) == cf.stats()["tape"]["rows"] == 5
    assert "exp(v0)" in cf.tape.listing()
    assert cf.stats()["tape"]["by_op"] == {"input": 1, "gt": 1, "guard": 1, "exp": 1, "mul": 1}


def test_hvp_and_hessian_of_rosenbrock(rng):
    cf = tg.compile(rosen)
    x, v = rng.uniform(-1, 1, 6), rng.uniform(-1, 1, 6)
    eps = 1e-6
    hv_fd = (rosen_grad(x + eps * v) - rosen_grad(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(cf.hvp(x, v), hv_fd, rtol=1e-6, atol=1e-6)
    H = cf.hessian(x)
    np.testing.assert_allclose(H, H.T, rtol=1e-12)
    np.testing.assert_allclose(H @ v, cf.hvp(x, v), rtol=1e-10)
    grad, hv = cf.grad_and_hvp(x, v)
    np.testing.assert_array_equal(hv, cf.hvp(x, v))
    np.testing.assert_allclose(grad, rosen_grad(x), rtol=1e-13)
    assert cf.stats()["recordings"] == 1  # forward-over-reverse on the recorded tape
    with pytest.raises(ValueError, match="shape"):
        cf.hvp(x, v[:3])


@pytest.mark.parametrize("optimize", [False, True])
def test_sweeps_that_consume_the_rows_adjoints_stay_right_whatever_ran_before(rng, optimize):
    """value_and_grad, vjp, jacobian, hvp and sparse Hessians sweep back consuming every row's
    adjoint (and its tangent) as they read it: only the input rows keep theirs, zeroed before the
    next such sweep, not the whole tape's. Interleaved, and with sweeps that do not consume
    (anomaly mode checks every adjoint), every derivative is, to the bit, that of a function
    compiled afresh; with optimize=True most rows are runs (their loops consume too)."""
    cf = tg.compile(rosen, optimize=optimize)
    calls = [
        lambda cf, x: cf.value_and_grad(x)[1],
        lambda cf, x: cf.vjp((x,), np.array([1.0, -2.0]))[1][0],  # two cotangents: two sweeps
        lambda cf, x: cf.jacobian(x),
        lambda cf, x: cf.grad_and_hvp(x, np.linspace(-1.0, 1.0, len(x))),
        lambda cf, x: cf.sparse_hessian(x).toarray(),
    ]

    def unread(tangents: bool = False) -> float:  # the largest |adjoint| of a row but an input row
        v, space = cf._last, cf._space(cf._last, keeps_clean=True)
        stores = (space.adj, *space.second()[1:])[: 1 + tangents]
        return max(np.abs(np.delete(store, v.input_slots)).max() for store in stores)

    for x in (rng.uniform(-1, 1, 60), rng.uniform(-1, 1, 60)):
        for k in [0, 1, 0, 2, 3, 0, 4, 1, 3, 0, 0]:
            expected = calls[k](tg.compile(rosen, optimize=optimize), x)
            np.testing.assert_array_equal(calls[k](cf, x), expected)
            assert unread(tangents=k >= 3) == 0.0
        if optimize:
            assert runs.rows_in_runs(cf._last.op, cf._last.a, cf._last.b) > len(cf._last.op) / 2
        with tg.detect_anomaly():  # checks every adjoint after the sweep: they are kept
            np.testing.assert_array_equal(calls[0](cf, x), calls[0](tg.compile(rosen, optimize=optimize), x))
            assert unread() > 0.0
        for k in (3, 0):  # (an hvp after it: its tangents of adjoints were clean, its adjoints not)
            np.testing.assert_array_equal(calls[k](cf, x), calls[k](tg.compile(rosen, optimize=optimize), x))


def test_hessian_of_a_scalar_function_with_a_branch():
    cf = tg.compile(lambda x: x**3 if x > 0 else tg.sin(x))
    assert cf.hessian(2.0) == pytest.approx(12.0) and cf.hessian(-1.0) == pytest.approx(np.sin(1.0))


def test_a_traced_tape_longer_than_the_eager_row_limit_stays_one_tape():
    from tapegrad.state import TAPE_ROWS_LIMIT

    def long_chain(x):
        y = x
        for _ in range(TAPE_ROWS_LIMIT + 10):
            y = y * 1.0000001
        return y

    cf = tg.compile(long_chain)
    assert cf(1.0) == pytest.approx(1.0000001 ** (TAPE_ROWS_LIMIT + 10))
    assert cf(2.0) == pytest.approx(2.0 * 1.0000001 ** (TAPE_ROWS_LIMIT + 10))  # not frozen
    assert cf.stats()["tape"]["inputs"] == 1 and len(cf.tape) == TAPE_ROWS_LIMIT + 11


def test_a_compiled_tape_keeps_its_rows_only_as_arrays():
    cf = tg.compile(rosen)
    cf(np.ones(20))
    assert cf.tape.frozen and cf.tape.rows == [] and len(cf.tape) == cf.stats()["tape"]["rows"] > 0
    assert "pow(v0, 2.0)" in cf.tape.listing() and cf.grad(np.ones(20)).shape == (20,)


def test_backward_inside_a_traced_function_is_refused_not_frozen():
    def f(x):
        y = x * x
        (g,) = tg.autograd.grad(y, x, retain_graph=True)
        return y + g

    with pytest.raises(tg.TracingError, match="cf.grad"):
        tg.compile(f)(3.0)
    with pytest.raises(tg.TracingError, match="frozen"):
        tg.compile(lambda x: (x * x).backward())(3.0)
    assert tg.compile(lambda x: x * x).grad(3.0) == 6.0  # still working
