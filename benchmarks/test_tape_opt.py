"""Tape optimization: ``tg.compile(f)`` against ``tg.compile(f, optimize=True)``, replaying a value
and gradient of tapes with something to remove or reorder.

Workloads: Rosenbrock written naively (each term's shared differences computed twice), a
nonlinear diffusion loop whose cells compute both their faces' fluxes (each face's flux twice) and
an energy diagnostic nothing returns, and a sum of chains of unary ops drawn at random (nothing to
remove: an irregular sequence of opcodes, for the reorder pass). Each benchmark checks that the
optimized replay's value equals the plain one's to the bit and its gradient to rounding, and the
plain replay's gradient against central differences. Rows before and after, the passes' time and
the median ratio optimized/plain are printed at the end and stored in ``extra_info``.
"""

import functools
import time

import harness
import numpy as np
import pytest

import tapegrad as tg

ROSEN_N = 10_000
CELLS, STEPS, DT = 1000, 50, 0.1
CHAINS = 20_000
UNARY = (tg.sin, tg.cos, tg.tanh, tg.sigmoid, tg.atan, lambda v: v * v, lambda v: v + 1.0, lambda v: v * 0.5)
OPS = np.random.default_rng(CHAINS).integers(0, len(UNARY), (CHAINS, 4))


def rosen_naive(x):
    """Extended Rosenbrock as one might type it: x[i+1] - x[i]^2 and 1 - x[i] written twice."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] * x[i]) * (x[i + 1] - x[i] * x[i]) + (1.0 - x[i]) * (1.0 - x[i])
    return s


def flux(left, right):
    """The flux between neighbouring cells: a diffusivity growing with their mean, times their difference."""
    mean = 0.5 * (left + right)
    return (1.0 + mean * mean) * (right - left)


def diffusion(u):
    """Explicit steps of nonlinear diffusion with fixed ends; J = sum(u**2)."""
    u = list(u)
    for _ in range(STEPS):
        _energy = sum(v * v for v in u[1:])  # a diagnostic nothing returns
        inner = [u[i] + DT * (flux(u[i], u[i + 1]) - flux(u[i - 1], u[i])) for i in range(1, len(u) - 1)]
        u = [u[0], *inner, u[-1]]
    return sum((v * v for v in u[1:]), u[0] * u[0])


def irregular(x):
    """A sum of chains of four unary ops each, drawn at random: no short pattern of opcodes."""
    total = x[0] * 0.0
    for i, chain in enumerate(OPS[: len(x)]):
        v = x[i]
        for k in chain:
            v = UNARY[k](v)
        total = total + v
    return total


WORKLOADS = {
    f"rosenbrock-naive-{ROSEN_N}": (rosen_naive, np.linspace(-1.2, 1.2, ROSEN_N)),
    f"diffusion-{CELLS}x{STEPS}": (diffusion, np.random.default_rng(CELLS).uniform(-0.5, 0.5, CELLS)),
    f"irregular-{CHAINS}": (irregular, np.linspace(-1.0, 1.0, CHAINS)),
}
SYSTEMS = ("plain", "optimized")
RESULTS: dict[str, dict[str, float]] = {}  # workload -> medians, rows, seconds


@functools.cache
def recorded(workload: str, system: str):
    """The compiled function, recorded (timed) and its sweeps warm; for plain, its gradient checked
    against central differences at three coordinates."""
    f, x = WORKLOADS[workload]
    tg.compile(lambda v: v * v + v * v, optimize=True).value_and_grad(1.0)  # the sweeps and passes loaded
    cf = tg.compile(f, optimize=system == "optimized")
    start = time.perf_counter()
    _, grad = cf.value_and_grad(x)
    RESULTS.setdefault(workload, {})[f"record_s_{system}"] = time.perf_counter() - start
    if system == "plain":
        h = 1e-5  # the sums run to ~1e4: rounding ~1e-7 of the differences, truncation ~1e-8
        for i in (0, len(x) // 2, len(x) - 1):
            e = np.zeros(len(x))
            e[i] = h
            np.testing.assert_allclose(grad[i], (cf(x + e) - cf(x - e)) / (2 * h), rtol=1e-5, atol=1e-6)
    return cf


@pytest.mark.parametrize("workload, system", [
    pytest.param(w, s, id=f"{w}-{s}", marks=pytest.mark.benchmark(group=f"tape-opt {w}"))
    for w in WORKLOADS for s in SYSTEMS
])
def test_replay_gradient(benchmark, workload, system):
    """Timed: one value_and_grad of the recorded tape at x."""
    x = WORKLOADS[workload][1]
    cf, plain = recorded(workload, system), recorded(workload, "plain")
    value, grad = plain.value_and_grad(x)

    def check(result):
        assert result[0] == value  # forward values: to the bit
        np.testing.assert_allclose(result[1], grad, rtol=1e-12, atol=1e-12 * np.abs(grad).max())

    median = harness.run_checked(benchmark, (lambda: cf.value_and_grad(x), None), check)
    if median is None:
        return
    info = RESULTS[workload]
    stats = cf.stats()
    info[system], info[f"rows_{system}"] = median, stats["tape"]["rows"]
    benchmark.extra_info.update(rows=stats["tape"]["rows"], record_s=round(info[f"record_s_{system}"], 3))
    if system == "optimized":
        report = stats["optimize"]
        info.update(optimize_s=report["seconds"], reordered=report["reordered"])
        benchmark.extra_info.update(rows_before=report["rows_before"], removed=report["removed"],
                                    passes_s=round(report["seconds"], 3), reordered=report["reordered"])
    if "plain" in info and "optimized" in info:
        info["ratio"] = info["optimized"] / info["plain"]
        benchmark.extra_info["optimized/plain"] = round(info["ratio"], 3)


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        done = {w: i for w, i in RESULTS.items() if "ratio" in i}
        if not done:
            return
        tr = terminalreporter
        tr.section("tape optimization: value_and_grad replay, median ms")
        tr.write_line(f"{'workload':<28}{'rows':>9}{'-> rows':>9}{'plain':>9}{'optimized':>11}{'ratio':>8}"
                      f"{'record s':>10}{'passes s':>10}{'reordered':>11}")
        for w, i in done.items():
            tr.write_line(f"{w:<28}{i['rows_plain']:>9}{i['rows_optimized']:>9}{i['plain'] * 1e3:>9.3f}"
                          f"{i['optimized'] * 1e3:>11.3f}{i['ratio']:>8.3f}{i['record_s_plain']:>10.2f}"
                          f"{i['optimize_s']:>10.2f}{i['reordered']!s:>11}")


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    harness.register_summary(request, "tapegrad-tape-opt-summary", _Summary())
