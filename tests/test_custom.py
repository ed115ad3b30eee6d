"""tg.custom_op: user @njit rules inside the sweeps, eager and compiled; errors; save/load."""

import numba
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad import custom
from tapegrad.examples.kepler import kepler, kepler_vjp, solve_kepler


@numba.njit
def cube(x):
    return x**3


@numba.njit
def cube_vjp(x, y, g):
    return 3.0 * x**2 * g


@numba.njit
def cube_jvp(x, y, xd):
    return 3.0 * x**2 * xd


CUBE = tg.custom_op("test_cube", cube, cube_vjp, cube_jvp)
CUBE_NO_JVP = tg.custom_op("test_cube_no_jvp", cube, cube_vjp)


def central(f, x, eps=1e-6):
    x = np.array(x, dtype=float)
    g = np.zeros_like(x)
    for k in range(x.size):
        e = np.zeros_like(x)
        e.flat[k] = eps
        g.flat[k] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def test_eager_backward_through_array_scalar_and_matrix_operands(rng):
    x = tg.tensor(rng.uniform(-1, 1, 4), requires_grad=True)
    (CUBE(x) * tg.sin(x)).sum().backward()
    v = x.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), 3 * v**2 * np.sin(v) + v**3 * np.cos(v), rtol=1e-14)
    s = tg.tensor(1.7, requires_grad=True)
    CUBE(s).backward()
    assert s.grad.item() == pytest.approx(3 * 1.7**2, rel=1e-15)
    m = tg.tensor(rng.uniform(-1, 1, (2, 3)), requires_grad=True)
    out = CUBE(m)
    assert out.shape == (2, 3)
    out.sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), 3 * m.detach().numpy() ** 2, rtol=1e-15)


def test_gradcheck_of_kepler_solve_in_eager_mode():
    f = lambda M, e: kepler(M, e) * tg.cos(M)
    assert tg.gradcheck(f, (0.7, 0.3))
    assert tg.gradcheck(lambda M, e: kepler(M, e), (2.5, 0.8))


def test_kepler_replayed_equals_finite_differences_and_eager(rng):
    t = rng.uniform(0, 6, 50)

    def loss(p):
        E = kepler(tg.tensor(t) * p[0] + p[1], p[2])
        return tnp.sum(tg.sin(E) * E)

    cf = tg.compile(loss)
    for _ in range(5):
        p = np.array([rng.uniform(0.5, 2), rng.uniform(-1, 1), rng.uniform(0.05, 0.9)])
        value, grad = cf.value_and_grad(p)
        E = solve_kepler(t * p[0] + p[1], p[2])
        assert value == pytest.approx(np.sum(np.sin(E) * E), rel=1e-13)
        np.testing.assert_allclose(grad, central(cf, p), rtol=1e-6, atol=1e-7)
        leaves = tg.tensor(p, requires_grad=True)
        eager = loss(leaves)
        eager.backward()
        np.testing.assert_allclose(grad, leaves.grad.numpy(), rtol=1e-13)
    assert cf.stats()["recordings"] == 1
    batch = cf.batch_grad(np.array([[1.0, 0.2, 0.3], [1.5, -0.2, 0.7]]))  # parallel replay
    np.testing.assert_allclose(batch[1], cf.grad(np.array([1.5, -0.2, 0.7])), rtol=1e-14)


def test_tangent_rules_jvp_and_both_jacobian_modes(rng):
    f = tg.compile(lambda M: kepler(tnp.asarray(list(M)), 0.4) * 2.0)
    M = rng.uniform(0, 3, 4)
    E = solve_kepler(M, 0.4)
    expected = np.diag(2.0 / (1 - 0.4 * np.cos(E)))
    np.testing.assert_allclose(f.jacobian(M), expected, rtol=1e-13, atol=1e-15)  # reverse sweeps
    wide = tg.compile(lambda m: kepler(tnp.asarray([m, m, m]), 0.4))  # 3 outputs, 1 input: tangents
    np.testing.assert_allclose(wide.jacobian(0.5), np.full(3, 1 / (1 - 0.4 * np.cos(solve_kepler(0.5, 0.4)))))
    _, tangent = f.jvp((M,), (np.ones(4),))
    np.testing.assert_allclose(tangent, expected @ np.ones(4), rtol=1e-13)
    np.testing.assert_allclose(f.sparse_jacobian(M).toarray(), expected, rtol=1e-13, atol=1e-15)


def test_an_op_without_jvp_refuses_tangents_but_jacobians_go_reverse(rng):
    f = tg.compile(lambda x: CUBE_NO_JVP(tnp.asarray(list(x))))
    x = rng.uniform(-1, 1, 3)
    with pytest.raises(ValueError, match="test_cube_no_jvp.*no jvp rule"):
        f.jvp((x,), (np.ones(3),))
    np.testing.assert_allclose(f.jacobian(x), np.diag(3 * x**2), rtol=1e-15)
    wide = tg.compile(lambda s: CUBE_NO_JVP(tnp.asarray([s, 2.0 * s])))
    np.testing.assert_allclose(wide.jacobian(0.5), [0.75, 6.0], rtol=1e-15)
    assert f.jacobian_sparsity(x).mode == "reverse"
    np.testing.assert_allclose(f.sparse_jacobian(x).toarray(), np.diag(3 * x**2), rtol=1e-15)


def test_hessians_through_a_custom_op_are_refused_by_name():
    f = tg.compile(lambda x: tnp.sum(CUBE(tnp.asarray(list(x)))))
    with pytest.raises(ValueError, match="hvp: custom op 'test_cube' has no second-order rule"):
        f.hvp(np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="second-order"):
        tg.hessian(lambda x: tnp.sum(CUBE(tnp.asarray(list(x)))))(np.ones(2))
    with pytest.raises(ValueError, match="sparse_hessian.*second-order"):
        f.sparse_hessian(np.ones(2))


def test_several_operands_constants_and_a_scalar_result(rng):
    @numba.njit
    def weighted(a, w, c):
        return np.sum(a * w) + c

    @numba.njit
    def weighted_vjp(a, w, c, y, g):
        return g * w, g * a, g

    op = tg.custom_op("test_weighted", weighted, weighted_vjp)
    a = tg.tensor(rng.uniform(-1, 1, 3), requires_grad=True)
    c = tg.tensor(0.5, requires_grad=True)
    w = rng.uniform(-1, 1, 3)  # a constant operand: no gradient
    out = op(a, w, c)
    assert out.shape == () and out.item() == pytest.approx(float(a.detach().numpy() @ w + 0.5), rel=1e-15)
    (out * 2.0).backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * w, rtol=1e-15)
    assert c.grad.item() == 2.0
    cf = tg.compile(lambda x, s: op(x, w, s) ** 2)
    gx, gs = cf.grad(np.ones(3), 0.25, argnums=(0, 1))
    y = np.sum(w) + 0.25
    np.testing.assert_allclose(gx, 2 * y * w, rtol=1e-14)
    assert gs == pytest.approx(2 * y, rel=1e-14)


def test_on_plain_arrays_it_returns_a_tensor_without_recording():
    out = CUBE(np.array([1.0, 2.0]))
    assert isinstance(out, tg.Tensor) and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), [1.0, 8.0])


def test_a_failing_rule_gives_nan_not_a_crash(rng):
    @numba.njit
    def bad_vjp(x, y, g):
        if x[0] > 0:
            raise ValueError("no")
        return g

    @numba.njit
    def short_vjp(x, y, g):
        return g[:1]

    for name, vjp in (("test_raises", bad_vjp), ("test_short", short_vjp)):
        op = tg.custom_op(name, cube, vjp)
        x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
        op(x).sum().backward()
        assert np.all(np.isnan(x.grad.numpy())), name
        with tg.detect_anomaly(), pytest.raises(tg.AnomalyError):
            tg.compile(lambda v, op=op: tnp.sum(op(tnp.asarray(list(v))))).grad(np.ones(2))
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (CUBE(x) * 1.0).sum().backward()  # the library keeps working
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 12.0])


def test_registration_and_compile_errors_name_the_op():
    with pytest.raises(TypeError, match="'plain': vjp must be a numba.njit function"):
        tg.custom_op("plain", cube, lambda x, y, g: g)

    @numba.njit
    def needs_two(x, extra):
        return x

    op = tg.custom_op("test_arity", needs_two, cube_vjp)
    with pytest.raises(TypeError, match="test_arity"):
        op(tg.tensor(np.ones(2), requires_grad=True))
    with pytest.raises(TypeError, match="at least one operand"):
        CUBE()


def test_save_and_load_relink_the_kernels(tmp_path, monkeypatch, rng):
    cf = tg.compile(lambda M: tnp.sum(kepler(tnp.asarray(list(M)), 0.5)))
    M = rng.uniform(0, 3, 5)
    expected = cf.value_and_grad(M)
    path = str(tmp_path / "kepler.npz")
    cf.save(path)
    value, grad = tg.load(path).value_and_grad(M)
    assert value == expected[0]
    np.testing.assert_array_equal(grad, expected[1])
    monkeypatch.setattr(custom, "_BY_NAME", {})
    with pytest.raises(ValueError, match="uses custom op 'kepler': register it"):
        tg.load(path)


def test_replay_from_user_njit_code(rng):
    cf = tg.compile(lambda M: tnp.sum(kepler(tnp.asarray(list(M)), 0.5) ** 2))
    M = rng.uniform(0, 3, 4)
    t = cf.replay_tape(M)
    sweep = tg.sweeps().gradient_arrays

    @numba.njit
    def grad_in_njit(t, x):
        inputs = np.concatenate((x, t.captured))
        vals, adj, grad = np.empty(len(t.op)), np.empty(len(t.op)), np.empty(len(x))
        sweep(t.op, t.a, t.b, t.consts, inputs, t.input_slots, t.out_slot, vals, adj, grad,
              t.arrays, t.addresses, t.adjoints)
        return grad

    E = solve_kepler(M, 0.5)
    np.testing.assert_allclose(grad_in_njit(t, M), 2 * E * kepler_vjp(M, 0.5, E, np.ones(4))[0], rtol=1e-14)
