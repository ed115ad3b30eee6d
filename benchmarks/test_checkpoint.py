"""Checkpointing long time-stepping loops: ``tg.checkpoint`` against a tape of the whole loop.

Two steps, looped T = 100, 1000, 10000 times, loss = the squared misfit of the final state:
``heat-200`` (explicit 1-D heat, array ops, 200 points) and ``burgers-64`` (viscous Burgers, one
scalar op per term, 64 points). Systems per group:

- ``tapegrad``: ``tg.compile`` of the whole loop, recorded inside the timing, then value_and_grad;
- ``tapegrad-replay``: the same tape recorded beforehand, value_and_grad replayed;
- ``checkpoint-sqrt``, ``checkpoint-10``, ``checkpoint-100``: ``tg.checkpoint(step, every=k)``
  (sqrt: k = ceil(sqrt(T))), ``value_and_grad`` of the loss;
- ``revolve-20``: ``tg.checkpoint(step, snapshots=20)``, binomial checkpointing with 20 states.

Each checks its value and gradients against the whole-loop tape's (rtol 1e-12). Memory, not timed:
the bytes a system holds (8 per float of states and workspaces plus 9 per tape row for its opcode
and operands: the whole tape's, or the checkpoints' and one step tape's) and tracemalloc's peak over
a cold run (recording included). Both are in ``extra_info`` and in a table printed at the end.
"""

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import harness
import numpy as np
import pytest

import tapegrad as tg
import tapegrad.numpy as tnp

STEPS = (100, 1000, 10_000)
SYSTEMS = ("tapegrad", "tapegrad-replay", "checkpoint-sqrt", "checkpoint-10", "checkpoint-100", "revolve-20")
MEMORY: dict[str, dict[str, Any]] = {}  # group -> system -> memory and median


def heat(u, kappa):
    v = tnp.asarray(u)
    c = v[1:-1]
    inner = c + kappa * (v[2:] - 2.0 * c + v[:-2]) - 0.001 * c * c * c
    return tnp.concatenate([v[:1], inner, v[-1:]])


def burgers(u, nu):
    n = len(u)
    return [u[i] - 0.2 * u[i] * (u[(i + 1) % n] - u[i - 1]) + nu * (u[(i + 1) % n] - 2.0 * u[i] + u[i - 1])
            for i in range(n)]


@dataclass
class Problem:
    step: Callable
    points: int
    param: float

    def start(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.linspace(0.0, 1.0, self.points)
        return 0.8 + 0.3 * np.sin(2 * np.pi * x), 0.8 + 0.3 * np.cos(2 * np.pi * x)

    def loss(self, target: np.ndarray) -> Callable:
        return lambda u: tnp.sum((tnp.asarray(u) - target) ** 2)

    def full(self, steps: int):
        """tg.compile of the whole loop and the loss."""
        _, target = self.start()
        loss = self.loss(target)

        def loop(u, param):
            for _ in range(steps):
                u = self.step(u, param)
            return loss(u)

        return tg.compile(loop)


PROBLEMS = {"heat-200": Problem(heat, 200, 0.2), "burgers-64": Problem(burgers, 64, 0.1)}
_REFERENCES: dict[tuple[str, int], Any] = {}


def reference(name: str, steps: int):
    """(the whole-loop tape, recorded, and its value and gradients)."""
    if (name, steps) not in _REFERENCES:
        p = PROBLEMS[name]
        u0, _ = p.start()
        cf = p.full(steps)
        value, grads = cf.value_and_grad(u0, p.param, argnums=(0, 1))
        _REFERENCES[name, steps] = (cf, value, grads)
    return _REFERENCES[name, steps]


@dataclass
class System:
    run: Callable[[], Any]  # returns (value, (g_u0, g_param))
    held: Callable[[], int]  # bytes held, asked after a run
    stats: Callable[[], dict]  # tg.checkpoint's counts ({} for the whole tape)


def system(name: str, steps: int, which: str) -> System:
    p = PROBLEMS[name]
    u0, target = p.start()
    if which == "tapegrad":
        return System(lambda: p.full(steps).value_and_grad(u0, p.param, argnums=(0, 1)),
                      lambda: _tape_bytes(reference(name, steps)[0]), dict)
    if which == "tapegrad-replay":
        cf = reference(name, steps)[0]
        return System(lambda: cf.value_and_grad(u0, p.param, argnums=(0, 1)), lambda: _tape_bytes(cf), dict)
    schedule = {"checkpoint-sqrt": {}, "checkpoint-10": {"every": 10}, "checkpoint-100": {"every": 100},
                "revolve-20": {"snapshots": 20}}[which]
    sim = tg.checkpoint(p.step, **schedule)
    loss = p.loss(target)

    def held() -> int:
        stats = sim.stats()
        return 8 * stats["peak_floats"] + 9 * stats["step_rows"]

    return System(lambda: sim.value_and_grad(loss, u0, p.param, steps=steps), held, sim.stats)


def _tape_bytes(cf) -> int:
    """A recorded tape's rows (values, adjoints, opcode, operands) and array blocks (values, adjoints)."""
    tape = cf.tape
    return 25 * len(tape) + 16 * tape.array_slots


def cold_peak(run: Callable[[], Any]) -> int:
    """tracemalloc's peak bytes over one run."""
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def check(result, name: str, steps: int) -> None:
    _, value, (g_u0, g_param) = reference(name, steps)
    got_value, (got_u0, got_param) = result
    np.testing.assert_allclose(got_value, value, rtol=1e-12)
    np.testing.assert_allclose(got_u0, g_u0, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got_param, g_param, rtol=1e-12)


def _params():
    return [pytest.param(name, steps, which, marks=pytest.mark.benchmark(group=f"{name} T={steps}"),
                         id=f"{name}-{steps}-{which}")
            for name in PROBLEMS for steps in STEPS for which in SYSTEMS]


@pytest.mark.parametrize("name, steps, which", _params())
def test_checkpoint_gradient(benchmark, name, steps, which):
    """Timed: one loss value and its gradients in u0 and the parameter."""
    sys = system(name, steps, which)
    check(sys.run(), name, steps)
    check(benchmark(sys.run), name, steps)
    info: dict[str, Any] = {"held_bytes": sys.held()}
    stats = sys.stats()
    info.update({k: stats[k] for k in ("every", "checkpoints", "recomputed", "peak_floats") if k in stats})
    if which != "tapegrad-replay":  # its cold run is tapegrad's
        info["tracemalloc_peak_bytes"] = cold_peak(system(name, steps, which).run)
    benchmark.extra_info.update(info)
    if benchmark.stats is not None:
        info["median"] = benchmark.stats.stats.median
    MEMORY.setdefault(f"{name} T={steps}", {})[which] = info


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not MEMORY:
            return
        tr = terminalreporter
        tr.section("tg.checkpoint: median time / the whole tape's replay, bytes held, tracemalloc peak")
        tr.write_line(f"{'group':<22}{'system':<18}{'median':>10}{'/replay':>9}{'held':>12}{'cold peak':>12}")
        for group, systems in MEMORY.items():
            replay = systems.get("tapegrad-replay", {}).get("median")
            for which, info in systems.items():
                median = info.get("median")
                ratio = f"{median / replay:.2f}" if median and replay else "-"
                peak = info.get("tracemalloc_peak_bytes")
                tr.write_line(f"{group:<22}{which:<18}{_time(median):>10}{ratio:>9}{_mb(info['held_bytes']):>12}"
                              f"{_mb(peak) if peak else '-':>12}")


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    harness.register_summary(request, "tapegrad-checkpoint-summary", _Summary())
