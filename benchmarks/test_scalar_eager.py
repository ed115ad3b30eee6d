"""Scalar eager autodiff on the extended Rosenbrock function: tapegrad against its peers.

Every benchmark checks its gradient against the analytic one, so a fast wrong answer fails.
"""

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import kernels

N = 1000
N_SWEEP = 111_112  # 9 rows per element: 10**6 rows, below the tape's row limit
RTOL = 1e-10


def rosen(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def rosen_value(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rosen_grad(x: np.ndarray) -> np.ndarray:
    """The analytic gradient of `rosen` (float64)."""
    r = x[1:] - x[:-1] ** 2
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * r - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * r
    return g


def start(n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(-2.0, 2.0, n)


class System(NamedTuple):
    leaf: Callable[[float], Any]  # a differentiable scalar holding a float
    grad: Callable[[Any], float]  # a leaf's gradient as a float, after backward


def _torch() -> System:
    torch = pytest.importorskip("torch")
    return System(
        lambda v: torch.tensor(v, dtype=torch.float64, requires_grad=True), lambda t: t.grad.item()
    )


SYSTEMS: dict[str, Callable[[], System]] = {
    "tapegrad-Value": lambda: System(tg.Value, lambda v: v.grad),
    "tapegrad-tensor": lambda: System(lambda v: tg.tensor(v, requires_grad=True), lambda t: t.grad.item()),
    "micrograd": lambda: System(pytest.importorskip("micrograd.engine").Value, lambda v: v.grad),
    "torch": _torch,
}
TAPEGRAD = [name for name in SYSTEMS if name.startswith("tapegrad")]


def check_grad(grad, x: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(grad, dtype=np.float64), rosen_grad(x), rtol=RTOL)


# --------------------------------------------------------------------------- eager, per system
@pytest.mark.benchmark(group="rosenbrock-1000 record+backward")
@pytest.mark.parametrize("name", SYSTEMS)
def test_record_backward(benchmark, name):
    """Timed: creating the n leaves, recording rosen on them, and backward (after one untimed
    warm-up run, which loads tapegrad's compiled sweeps)."""
    system, x = SYSTEMS[name](), start(N)

    def run():
        leaves = [system.leaf(v) for v in x]
        rosen(leaves).backward()
        return leaves

    for leaves in (run(), benchmark(run)):
        check_grad([system.grad(v) for v in leaves], x)


@pytest.mark.benchmark(group="rosenbrock-1000 record only")
@pytest.mark.parametrize("name", TAPEGRAD)
def test_record_only(benchmark, report_ns_per_row, name):
    """Timed: recording rosen on a fresh tape (leaves made once, outside the timing; no backward)."""
    system, x = SYSTEMS[name](), start(N)
    leaves = [system.leaf(v) for v in x]

    def run():
        with tg.recording():
            return rosen(leaves)

    y = benchmark(run)
    report_ns_per_row(len(y.tape))
    y.backward()
    check_grad([system.grad(v) for v in leaves], x)


# --------------------------------------------------------------------------- Numba sweeps alone
@pytest.fixture(scope="module")
def big_tape():
    """Rosenbrock with N_SWEEP elements recorded once with tg.Value: about 10**6 rows as arrays."""
    x = start(N_SWEEP)
    leaves = [tg.Value(v) for v in x]
    with tg.recording() as tape:
        y = rosen(leaves)
    assert y.tape is tape, "the recording spilled onto a second tape: lower N_SWEEP"
    arrays = tape.arrays()
    assert arrays.vals[-1] == y.data  # the output is the last row
    index = {id(v): k for k, v in enumerate(leaves)}
    return SimpleNamespace(
        x=x,
        arrays=arrays,
        rows=len(tape),
        out=len(tape) - 1,
        input_slots=np.array(tape.input_slots),
        input_order=np.array([index[id(v)] for v in tape.inputs]),  # leaf of each input row
        inputs=np.array([v.data for v in tape.inputs]),
    )


@pytest.mark.benchmark(group="reverse sweep 1e6 ops")
def test_reverse_sweep(benchmark, report_ns_per_row, big_tape):
    """Timed: one Numba reverse sweep over the whole tape (adjoints zeroed and seeded untimed)."""
    t, reverse = big_tape, kernels.sweeps().reverse
    op, a, b, vals, consts = t.arrays[:5]
    adj = np.zeros(t.rows)

    def seed():
        adj.fill(0.0)
        adj[t.out] = 1.0

    seed()
    reverse(op, a, b, vals, consts, adj, 0, t.rows, False)  # compile (or load) before timing
    benchmark.pedantic(
        reverse, args=(op, a, b, vals, consts, adj, 0, t.rows, False), setup=seed, rounds=30, warmup_rounds=1
    )
    report_ns_per_row(t.rows)
    grad = np.empty_like(t.x)
    grad[t.input_order] = adj[t.input_slots]
    check_grad(grad, t.x)


@pytest.mark.benchmark(group="reverse sweep 1e6 ops")
def test_forward_sweep(benchmark, report_ns_per_row, big_tape):
    """Timed: one Numba forward replay of the whole tape from its inputs (values cleared untimed)."""
    t, forward = big_tape, kernels.sweeps().forward
    op, a, b, vals, consts = t.arrays[:5]
    out = np.zeros(t.rows)
    forward(op, a, b, out, consts, t.inputs, 0, t.rows)  # compile (or load) before timing
    failed = benchmark.pedantic(
        forward, args=(op, a, b, out, consts, t.inputs, 0, t.rows),
        setup=lambda: out.fill(0.0), rounds=30, warmup_rounds=1,
    )
    report_ns_per_row(t.rows)
    assert failed == -1
    np.testing.assert_allclose(out, vals, rtol=1e-12)
    np.testing.assert_allclose(out[t.out], rosen_value(t.x), rtol=RTOL)
