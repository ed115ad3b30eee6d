"""What every benchmark module shares: peers built from a whole-array objective, the
warm-up/check/time/check run, and tapegrad-replay's ratios to its peers."""

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

System = tuple[Callable[[], Any], Callable[[Any], Any] | None]  # timed call, result -> (value, grad)
REPLAY = "tapegrad-replay"


@functools.cache
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def torch_peer(objective: Callable, x: np.ndarray) -> System:
    """torch eager: objective(t, torch) on a float64 tensor, then backward."""
    torch = pytest.importorskip("torch")

    def run():
        t = torch.from_numpy(x).requires_grad_()
        y = objective(t, torch)
        y.backward()
        return y.item(), t.grad.numpy()

    return run, None


def jax_peer(objective: Callable, x: np.ndarray) -> System:
    """JAX: jit(value_and_grad(objective(x, jax.numpy))), steady state."""
    j = jax()
    f, xj = j.jit(j.value_and_grad(lambda v: objective(v, j.numpy))), j.numpy.asarray(x)
    return (lambda: j.block_until_ready(f(xj))), lambda r: (float(r[0]), np.asarray(r[1]))


def check(result, value: float, grad: np.ndarray, rtol: float) -> None:
    got_value, got_grad = result
    np.testing.assert_allclose(got_value, value, rtol=rtol)
    if got_grad is not None:
        np.testing.assert_allclose(got_grad, grad, rtol=rtol, atol=1e-300)


def run_checked(benchmark, system: System, check_result: Callable[[Any], None]) -> float | None:
    """Warm up and check, time, check again; the median seconds (None under --benchmark-disable)."""
    run, finish = system
    finish = finish or (lambda r: r)
    check_result(finish(run()))
    check_result(finish(benchmark(run)))
    return None if benchmark.stats is None else benchmark.stats.stats.median


def replay_info(medians: dict[str, float], rows: int) -> dict[str, float]:
    """tapegrad-replay's rows, ns per row and median ratios to the peers timed so far."""
    median = medians[REPLAY]
    info = {"rows": rows, "ns_per_row": round(median * 1e9 / rows, 3)}
    info.update({f"replay/{peer}": round(median / m, 3) for peer, m in medians.items() if peer != REPLAY})
    return info


def register_summary(request: Any, name: str, plugin: Any) -> None:
    """Register a benchmark module's terminal-summary plugin, once per session."""
    manager = request.config.pluginmanager
    if not manager.has_plugin(name):
        manager.register(plugin, name)
