"""tg.checkpoint: checkpointed gradients of time-stepping loops equal a tape of the whole loop."""

import math
import threading

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.numpy as tnp


def decay(u, theta):
    """A scalar state, one parameter."""
    return u + 0.1 * tg.sin(u) * theta - 0.05 * u * u


def heat(u, kappa, source):
    """Explicit 1-D heat with array ops: an array state, a scalar and an array parameter."""
    v = tnp.asarray(u)
    inner = v[1:-1] + kappa * (v[2:] - 2.0 * v[1:-1] + v[:-2]) + 0.01 * tg.tanh(tnp.asarray(source)) * v[1:-1]
    return tnp.concatenate([v[:1], inner, v[-1:]])


def burgers(u, nu):
    """Viscous Burgers with scalar ops on the elements (periodic), returned as a list."""
    n = len(u)
    return [u[i] - 0.2 * u[i] * (u[(i + 1) % n] - u[i - 1]) + nu * (u[(i + 1) % n] - 2.0 * u[i] + u[i - 1])
            for i in range(n)]


def bouncy(u, theta):
    """A step with a branch: a guard row, and a re-recording when the loop crosses it."""
    if u > 1.0:
        return 0.5 * u * theta
    return u * theta + 0.3


def full_loop(step, steps):
    """The whole loop, to record on one tape with tg.compile."""

    def loop(u, *params):
        for _ in range(steps):
            u = step(u, *params)
        return u

    return tg.compile(loop)


def assert_same(got, want, exact=True):
    """Equal to rtol 1e-12, and (where `exact`) bit for bit."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-300)
        if exact:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("every", [1, 2, 3, 5, 7, 23, 40, None])
def test_scalar_state_gradient_equals_the_whole_loop_tape(every):
    steps = 23
    sim = tg.checkpoint(decay, every=every)
    uT, pullback = sim.vjp(0.4, 1.3, steps=steps)
    want_uT, want = full_loop(decay, steps).vjp((0.4, 1.3), 2.0)
    assert uT == want_uT
    grads = pullback(2.0)
    assert all(isinstance(g, float) for g in grads)
    assert_same(grads, want)
    assert want[0] != 0.0 and want[1] != 0.0


@pytest.mark.parametrize("every", [1, 3, 4, 12])
def test_array_state_with_array_ops_and_two_parameters(every, rng):
    steps, n = 12, 9
    u0, source, cot = rng.normal(size=n), rng.normal(size=n - 2), rng.normal(size=n)
    sim = tg.checkpoint(heat, every=every)
    uT, pullback = sim.vjp(u0, 0.2, source, steps=steps)
    want_uT, want = full_loop(heat, steps).vjp((u0, 0.2, source), cot)
    np.testing.assert_array_equal(uT, want_uT)
    grads = pullback(cot)
    assert [np.shape(g) for g in grads] == [(n,), (), (n - 2,)]
    assert_same(grads, want)


def test_array_state_with_scalar_ops_matches_the_eager_tape(rng):
    steps, n = 17, 6
    u0, cot = rng.uniform(0.5, 1.5, n), rng.normal(size=n)
    uT, pullback = tg.checkpoint(burgers, every=5).vjp(u0, 0.1, steps=steps)

    def loop(u, nu):
        state = np.empty(n, dtype=object)
        state[:] = [u[i] for i in range(n)]
        for _ in range(steps):
            state[:] = burgers(state, nu)
        return tg.stack(list(state))

    want_uT, eager_pullback = tg.vjp(loop, u0, 0.1)
    np.testing.assert_allclose(uT, want_uT, rtol=1e-14)
    assert_same(pullback(cot), eager_pullback(cot), exact=False)
    assert_same(pullback(cot), full_loop(burgers, steps).vjp((u0, 0.1), cot)[1])


def test_two_dimensional_state_and_no_parameters(rng):
    def rotate(u):
        return tg.tanh(tnp.asarray(u)[::-1, :] * 1.1 + 0.1)

    u0, cot = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    sim = tg.checkpoint(rotate, every=4)
    uT, pullback = sim.vjp(u0, steps=10)
    want_uT, want = full_loop(rotate, 10).vjp((u0,), cot)
    assert uT.shape == (3, 2)
    np.testing.assert_array_equal(uT, want_uT)
    grads = pullback(cot)
    assert len(grads) == 1
    assert_same(grads, want)


def test_a_step_returning_a_parameter_or_one_value_twice():
    def shared(u, theta):
        prod = u[0] * u[1] * theta
        return [prod, prod]  # one slot in two places: its cotangents add up

    def passes(u, theta):
        return [tg.sin(u[1]) * theta, theta]  # a parameter returned: its row is seeded twice

    for step in (shared, passes):
        u0, cot = np.array([0.7, 1.1]), np.array([0.3, -1.7])
        uT, pullback = tg.checkpoint(step, every=3).vjp(u0, 0.9, steps=8)
        want_uT, want = full_loop(step, 8).vjp((u0, 0.9), cot)
        np.testing.assert_array_equal(uT, want_uT)
        assert_same(pullback(cot), want, exact=False)


def test_zero_steps_returns_the_state_and_passes_the_cotangent_through(rng):
    sim = tg.checkpoint(heat, every=3)
    u0, source, cot = rng.normal(size=5), rng.normal(size=3), rng.normal(size=5)
    uT, pullback = sim.vjp(u0, 0.2, source, steps=0)
    np.testing.assert_array_equal(uT, u0)
    u_bar, kappa_bar, source_bar = pullback(cot)
    np.testing.assert_array_equal(u_bar, cot)
    assert kappa_bar == 0.0 and source_bar.shape == (3,) and not source_bar.any()
    assert sim(u0, 0.2, source, steps=0) is not u0
    stats = sim.stats()
    assert stats["steps"] == 0 and stats["checkpoints"] == 0 and stats["forward_replays"] == 0
    assert stats["reverse_sweeps"] == 0 and stats["recordings"] == 0


@pytest.mark.parametrize("schedule", [{"every": 4}, {"snapshots": 3}])
def test_a_step_with_a_branch_records_both_variants_and_stays_exact(schedule):
    steps = 30
    sim = tg.checkpoint(bouncy, **schedule)
    uT, pullback = sim.vjp(0.9, 1.2, steps=steps)
    want_uT, want = full_loop(bouncy, steps).vjp((0.9, 1.2), 1.0)
    assert uT == want_uT
    assert_same(pullback(1.0), want)
    assert sim.stats()["recordings"] == 2  # one per branch, kept: no recording per crossing
    # a naive loop in Python, as the reference value
    u = 0.9
    for _ in range(steps):
        u = 0.5 * u * 1.2 if u > 1.0 else u * 1.2 + 0.3
    assert uT == pytest.approx(u, rel=1e-15)


def test_value_and_grad_matches_finite_differences(rng):
    steps, n = 40, 7
    u0, source, target = rng.normal(size=n), rng.normal(size=n - 2), rng.normal(size=n)
    sim = tg.checkpoint(heat)

    def loss(u):
        return tnp.sum((u - target) ** 2)

    value, (g_u0, g_kappa, g_source) = sim.value_and_grad(loss, u0, 0.15, source, steps=steps)
    assert value == pytest.approx(np.sum((sim(u0, 0.15, source, steps=steps) - target) ** 2), rel=1e-14)

    def numeric_loss(u, kappa, src):
        return float(np.sum((sim(u, kappa, src, steps=steps) - target) ** 2))

    eps = 1e-6
    fd_kappa = (numeric_loss(u0, 0.15 + eps, source) - numeric_loss(u0, 0.15 - eps, source)) / (2 * eps)
    assert g_kappa == pytest.approx(fd_kappa, rel=1e-6)
    for i in (0, 3, n - 1):
        e = np.eye(n)[i] * eps
        fd = (numeric_loss(u0 + e, 0.15, source) - numeric_loss(u0 - e, 0.15, source)) / (2 * eps)
        assert g_u0[i] == pytest.approx(fd, rel=1e-6, abs=1e-9)
    e = np.eye(n - 2)[2] * eps
    fd = (numeric_loss(u0, 0.15, source + e) - numeric_loss(u0, 0.15, source - e)) / (2 * eps)
    assert g_source[2] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_scalar_gradient_passes_tg_gradcheck():
    sim = tg.checkpoint(decay, every=6)

    def f(u0, theta):  # the same loop on eager tensors: what tg.gradcheck differentiates
        for _ in range(25):
            u0 = decay(u0, theta)
        return u0 ** 2

    assert tg.gradcheck(f, (0.4, 1.3))
    _, (g_u0, g_theta) = sim.value_and_grad(lambda u: u ** 2, 0.4, 1.3, steps=25)
    (want_u0, want_theta) = tg.grad(f, argnums=(0, 1))(0.4, 1.3)
    assert g_u0 == pytest.approx(want_u0, rel=1e-12) and g_theta == pytest.approx(want_theta, rel=1e-12)


@pytest.mark.parametrize(
    ("steps", "every"), [(10, 3), (10, 5), (10, 1), (10, 10), (10, 25), (1, 1), (100, None)]
)
def test_stats_count_checkpoints_recomputations_and_memory(steps, every):
    sim = tg.checkpoint(decay, every=every)
    _, pullback = sim.vjp(0.4, 1.3, steps=steps)
    k = every if every is not None else math.ceil(math.sqrt(steps))
    segments = math.ceil(steps / k)
    forward = sim.stats()
    assert forward["every"] == k and forward["checkpoints"] == segments
    assert forward["forward_replays"] == steps
    assert forward["recomputed"] == 0 and forward["reverse_sweeps"] == 0
    pullback(1.0)
    stats = sim.stats()
    recomputed = (segments - 1) * (k - 1)  # every segment but the last, kept from the forward pass
    assert stats["recomputed"] == recomputed
    assert stats["forward_replays"] == 2 * steps + recomputed and stats["reverse_sweeps"] == steps
    assert stats["peak_states"] == segments + min(k, steps)
    rows = stats["step_rows"]
    assert rows == 9  # two inputs, sin, four products, a sum and a difference: one step
    assert stats["peak_floats"] == stats["peak_states"] + 2 * rows  # a scalar state: one float each
    assert stats["full_tape_bytes"] == steps * rows * 25


def fewest_recomputations(steps, snapshots):
    """Griewank's bound for reversing `steps` steps with `snapshots` stored states: r T -
    C(s + r, r - 1), r the least with C(s + r, s) >= T."""
    if steps <= 1:
        return 0
    r = 0
    while math.comb(snapshots + r, snapshots) < steps:
        r += 1
    return r * steps - math.comb(snapshots + r, r - 1)


@pytest.mark.parametrize(
    ("steps", "snapshots"), [(1, 3), (2, 1), (9, 1), (10, 2), (23, 3), (50, 4), (7, 30)]
)
def test_binomial_snapshots_equal_the_whole_loop_and_recompute_the_fewest_steps(steps, snapshots, rng):
    u0, source, cot = rng.normal(size=6), rng.normal(size=4), rng.normal(size=6)
    sim = tg.checkpoint(heat, snapshots=snapshots)
    uT, pullback = sim.vjp(u0, 0.2, source, steps=steps)
    want_uT, want = full_loop(heat, steps).vjp((u0, 0.2, source), cot)
    np.testing.assert_array_equal(uT, want_uT)
    assert_same(pullback(cot), want)
    stats = sim.stats()
    slots = min(snapshots, steps)
    assert stats["every"] is None and stats["checkpoints"] == slots and stats["peak_states"] == slots + 1
    assert stats["recomputed"] == fewest_recomputations(steps, slots)
    assert stats["forward_replays"] == 2 * steps + stats["recomputed"] and stats["reverse_sweeps"] == steps


def test_binomial_at_ten_thousand_steps_with_few_snapshots():
    sim = tg.checkpoint(decay, snapshots=5)
    _, (g_u0, g_theta) = sim.value_and_grad(lambda u: u, 0.4, 1.3, steps=10_000)
    uniform = tg.checkpoint(decay, every=100)
    assert (g_u0, g_theta) == uniform.value_and_grad(lambda u: u, 0.4, 1.3, steps=10_000)[1]
    stats = sim.stats()
    # r = 14 (C(19, 5) = 11628 >= 10^4): about 11 more passes, where every=100 stores 200 states
    assert stats["recomputed"] == fewest_recomputations(10_000, 5) == 112_868
    assert stats["peak_states"] == 6


def test_pullback_twice_and_from_another_thread_gives_the_same_gradient(rng):
    sim = tg.checkpoint(heat, every=4)
    u0, source, cot = rng.normal(size=6), rng.normal(size=4), rng.normal(size=6)
    _, pullback = sim.vjp(u0, 0.2, source, steps=14)
    first = pullback(cot)
    second = pullback(cot)  # the last segment's states were overwritten: recomputed
    assert sim.stats()["recomputed"] == 3 * 3 + (3 * 3 + 1)  # then the last segment too
    results = []
    thread = threading.Thread(target=lambda: results.append(pullback(cot)))
    thread.start()
    thread.join()
    for again in (second, results[0]):
        assert_same(again, first)


def test_call_replays_the_loop_without_keeping_states(rng):
    u0, source = rng.normal(size=8), rng.normal(size=6)
    sim = tg.checkpoint(heat, every=2)
    uT = sim(u0, 0.2, source, steps=50)
    np.testing.assert_array_equal(uT, full_loop(heat, 50)(u0, 0.2, source))
    stats = sim.stats()
    assert stats["checkpoints"] == 0 and stats["peak_states"] == 1 and stats["forward_replays"] == 50
    v = u0.copy()
    for _ in range(50):
        inner = v[1:-1] + 0.2 * (v[2:] - 2.0 * v[1:-1] + v[:-2]) + 0.01 * np.tanh(source) * v[1:-1]
        v = np.concatenate([v[:1], inner, v[-1:]])
    np.testing.assert_allclose(uT, v, rtol=1e-13)


def test_decorator_forms_and_default_interval():
    @tg.checkpoint
    def plain(u, a):
        return u * a

    @tg.checkpoint(every=4)
    def spaced(u, a):
        return u * a

    assert isinstance(plain, tg.Checkpointed) and plain.__name__ == "plain"
    assert plain(2.0, 3.0, steps=3) == 54.0 and spaced(2.0, 3.0, steps=3) == 54.0
    assert [plain.interval(t) for t in (0, 1, 2, 4, 5, 16, 17, 10**6)] == [1, 1, 2, 2, 3, 4, 5, 1000]
    assert spaced.interval(10**6) == 4
    _, (g_u, g_a) = spaced.value_and_grad(lambda u: u, 2.0, 3.0, steps=3)
    assert (g_u, g_a) == (27.0, 54.0)


def test_parameters_read_from_outside_are_constants_of_the_step():
    scale = tg.tensor(0.5)

    def step(u):
        return u * scale

    sim = tg.checkpoint(step)
    assert sim(3.0, steps=2) == 0.75
    _, pullback = sim.vjp(3.0, steps=2)
    assert pullback(1.0) == (0.25,)


def test_detect_anomaly_checks_every_replay():
    def cooling(u, rate):
        return u - rate + 0.0 * tg.log(u)  # log(u) is NaN once u < 0: at the fourth step

    sim = tg.checkpoint(cooling)
    assert np.isnan(sim(1.0, 0.4, steps=5))  # unchecked: NaN flows through
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError, match="log"):
        sim(1.0, 0.4, steps=5)
    with tg.detect_anomaly():
        _, pullback = sim.vjp(1.0, 0.4, steps=2)  # u stays positive: no anomaly
        assert pullback(1.0) == (1.0, -2.0)


def test_a_step_returning_another_shape_is_named():
    def shrink(u):
        return tnp.asarray(u)[1:] * 2.0

    with pytest.raises(ValueError, match=r"step shrink returned shape \(3,\) for a state of shape \(4,\)"):
        tg.checkpoint(shrink)(np.ones(4), steps=2)

    def to_array(u):
        return [u, u]

    with pytest.raises(ValueError, match=r"to_array returned shape \(2,\) for a state of shape \(\)"):
        tg.checkpoint(to_array).vjp(1.0, steps=3)

    def to_scalar(u):
        return tnp.sum(tnp.asarray(u))

    with pytest.raises(ValueError, match=r"returned a scalar for a state of shape \(1,\)"):
        tg.checkpoint(to_scalar)(np.ones(1), steps=1)


def test_bad_arguments_raise_clear_errors():
    sim = tg.checkpoint(decay)
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        sim(1.0, 2.0, steps=-1)
    with pytest.raises(TypeError, match="steps must be an int, got float"):
        sim.vjp(1.0, 2.0, steps=2.5)
    with pytest.raises(TypeError, match="steps must be an int, got bool"):
        sim(1.0, 2.0, steps=True)
    with pytest.raises(ValueError, match="every must be >= 1"):
        tg.checkpoint(decay, every=0)
    with pytest.raises(ValueError, match="snapshots must be >= 1"):
        tg.checkpoint(decay, snapshots=0)
    with pytest.raises(ValueError, match="not both"):
        tg.checkpoint(decay, every=3, snapshots=3)
    with pytest.raises(TypeError, match="every must be an int or None, got float"):
        tg.checkpoint(decay, every=2.0)
    with pytest.raises(TypeError, match="the state u0 must be a number or an array of numbers, got str"):
        sim("hot", 2.0, steps=1)
    with pytest.raises(TypeError, match="parameter 0 must be a number or an array of numbers"):
        sim(1.0, [1.0, "x"], steps=1)
    with pytest.raises(ValueError, match=r"the state u0 has shape \(0,\), with no numbers"):
        sim(np.zeros(0), 2.0, steps=1)
    _, pullback = sim.vjp(1.0, 2.0, steps=3)
    with pytest.raises(ValueError, match=r"the cotangent has shape \(2,\), the state has shape \(\)"):
        pullback(np.ones(2))
    with pytest.raises(TypeError, match="grad: f must return a scalar"):
        tg.checkpoint(heat).value_and_grad(lambda u: u, np.ones(4), 0.1, np.ones(2), steps=2)


def test_example_main_runs_small(capsys):
    from tapegrad.examples import checkpointed_heat

    result = checkpointed_heat.main(points=32, steps=200, every=None)
    out = capsys.readouterr().out
    assert "gradient norm" in out and "peak floats held" in out
    assert result["grad_norm"] > 0.0 and np.isfinite(result["grad_norm"])
    assert result["stats"]["checkpoints"] == math.ceil(200 / 15)
    np.testing.assert_allclose(result["grad_kappa"], result["check_kappa"], rtol=1e-5)
