"""GradBench's evals (det, llsq, lse, ode, lstm, gmm, ba, kmeans): tapegrad against the primal,
torch eager and JAX, one group per workload.

Each workload is an eval of ``benchmarks/gradbench`` at one size, and every system computes the
eval's derivative (det, llsq, lse, ode: ``gradient``; lstm, gmm, ba: ``jacobian``; kmeans: ``dir``)
from the same input:

* ``tapegrad``, ``tapegrad-replay`` and ``tapegrad-replay-opt``: the GradBench tool's own timed
  call (``prepare``): recording inside the timing, or a tape recorded once (and optimized: the
  evals written as scalar code only, whose tapes the passes change) and replayed;
* ``primal``: the objective alone, under ``@numba.njit`` for the evals written as scalar code
  (det, ode, lstm: the very source tapegrad records) and in NumPy for the array ones; the
  denominator of the derivative / primal ratios GradBench reports;
* ``torch-eager`` and ``jax-jit``: the same algorithm with whole-array ops (det: all minors of one
  size as a batch; ode: JAX steps in ``lax.fori_loop``; lstm: torch only, as XLA takes minutes to
  compile a loop of a thousand unrolled steps; kmeans: the Hessian-vector product by double
  backward or ``jvp`` of ``grad``).

Every result is checked, before and after the timing, against the eval's ``expected`` output,
computed without tapegrad (by hand, LU, or for lstm and ba central differences). Peers run on one
thread (conftest.py). ``python benchmarks/report.py`` turns a run into the README's table.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import harness
import numpy as np
import pytest

from benchmarks.gradbench import EVALS, ba, det, gmm, kmeans, llsq, lse, lstm, ode, programs

# the sizes timed, chosen by TAPEGRAD_BENCH_SIZE (``python benchmarks/report.py --size``): GradBench's
# smallest, a larger one, and more of GradBench's (det 10: a 1.25e7-row tape, ~13 s to record in each
# run of `tapegrad`; GradBench goes to det 11, llsq 16392, ode 1e5 x 100, gmm d 64, ba 20)
SIZES: dict[str, dict[str, tuple]] = {
    "small": {
        "det": (5,),
        "llsq": (1024,),
        "lse": (2500,),
        "ode": ((1000, 10),),
        "lstm": ((2, 1024),),
        "gmm": ((2, 5, 1000),),
        "ba": (ba.SIZES[0],),
        "kmeans": ((10, 1000, 8),),
    },
    "medium": {
        "det": (5, 7, 9),
        "llsq": (1024, 4096),
        "lse": (2500, 160000),
        "ode": ((1000, 10), (1000, 100)),
        "lstm": ((2, 1024),),
        "gmm": ((2, 5, 1000), (10, 25, 1000)),
        "ba": (ba.SIZES[0],),
        "kmeans": ((10, 1000, 8), (100, 10000, 16)),
    },
    "large": {
        "det": (5, 7, 9, 10),
        "llsq": (1024, 4096, 16392),
        "lse": (2500, 160000, 1280000),
        "ode": ((1000, 10), (1000, 100), (10000, 10)),
        "lstm": ((2, 1024), (4, 4096)),
        "gmm": ((2, 5, 1000), (10, 25, 1000), (20, 50, 1000)),
        "ba": ba.SIZES,
        "kmeans": ((10, 1000, 8), (100, 10000, 16), (1000, 10000, 16)),
    },
}
CASES = SIZES[os.environ.get("TAPEGRAD_BENCH_SIZE", "medium")]
SYSTEMS = ("primal", "torch-eager", "jax-jit", "tapegrad", "tapegrad-replay", "tapegrad-replay-opt")
SCALAR = {"det", "ode", "lstm"}  # evals written as scalar code: one tape row per scalar op
FINITE_DIFFERENCES = {"lstm", "ba"}  # their expected derivatives are central differences


def label(ev: str, size: Any) -> str:
    return f"{ev}-" + ("x".join(map(str, size)) if isinstance(size, tuple) else str(size))


def flat(output: Any) -> np.ndarray:
    """The numbers of a JSON-like output (nested lists, dicts in key order) as one vector."""
    if isinstance(output, dict):
        return np.concatenate([flat(v) for v in output.values()])
    return np.ravel(np.asarray(output, dtype=np.float64))


@dataclass
class Workload:
    group: str
    module: ModuleType
    function: str  # the derivative GradBench asks for
    message: dict  # the tool's input
    expected: np.ndarray  # that derivative, flat, computed without tapegrad

    def check(self, got: np.ndarray) -> None:
        rtol, scale = (
            (1e-4, 1e-6) if self.module.__name__.rsplit(".", 1)[1] in FINITE_DIFFERENCES else (1e-8, 1e-14)
        )
        np.testing.assert_allclose(got, self.expected, rtol=rtol, atol=scale * np.abs(self.expected).max())


@functools.lru_cache(maxsize=1)  # one workload alive at a time: parametrize groups by workload
def workload(ev: str, size: Any) -> Workload:
    module = EVALS[ev]
    message = module.message(size)
    function = module.FUNCTIONS[1]
    return Workload(label(ev, size), module, function, message, flat(module.expected(function, message)))


# --------------------------------------------------------------------------- the peers
def _gradient_objective(w: Workload) -> tuple[Callable[[Any, Any], Any], np.ndarray] | None:
    """(objective(x, xp) with whole-array ops, x) for the evals whose derivative is a gradient."""
    m = w.message
    if w.module is det:
        return det.det_vec, np.asarray(m["A"])
    if w.module is llsq:
        return functools.partial(llsq.llsq_vec, n=m["n"]), np.asarray(m["x"])
    if w.module is lse:
        return lse.lse, np.asarray(m["x"])
    if w.module is ode:
        return (lambda x, xp: ode.ode_vec(x, xp, m["s"])[-1]), np.asarray(m["x"])
    if w.module is gmm:
        theta, p = gmm.from_message(m)
        return functools.partial(gmm.gmm, p=p), theta
    if w.module is lstm:
        params, rest = lstm.from_message(m)
        return (lambda x, xp: lstm.lstm_vec(x, xp, **rest)), params
    return None


def _primal(w: Workload) -> Callable[[], Any]:
    m = w.message
    if w.module is det:
        return functools.partial(det.det_njit, np.asarray(m["A"]))
    if w.module is ode:
        return functools.partial(ode.ode_njit, np.asarray(m["x"]), m["s"])
    if w.module is lstm:
        params, rest = lstm.from_message(m)
        return functools.partial(lstm.lstm_njit, params, **rest)
    if w.module is ba:
        pb = ba.from_message(m)
        return functools.partial(ba.errors, pb.v, np, pb.feat)
    if w.module is kmeans:
        points = np.asarray(m["points"])
        return functools.partial(kmeans.cost, np.ravel(m["centroids"]), np, points)
    objective, x = _gradient_objective(w)
    return functools.partial(objective, x, np)


def _ba_peer(w: Workload, torch_like: bool) -> harness.System:
    """The Jacobian's CSR values from three vjps (torch: backward with retained graph; JAX: jit)."""
    pb = ba.from_message(w.message)
    summary = lambda values: flat(ba.compressed(np.asarray(values), pb))  # noqa: E731
    seeds = np.eye(3)
    if torch_like:
        torch = pytest.importorskip("torch")

        def run():
            v = torch.from_numpy(pb.v).requires_grad_()
            e = ba.errors(v, torch, pb.feat)
            blocks = []
            for j in range(3):
                (g,) = torch.autograd.grad(e[j].sum(), v, retain_graph=j < 2)
                blocks.append(g.numpy())
            return pb.jacobian_values(blocks)

        return run, summary
    jax = harness.jax()
    jnp = jax.numpy

    @jax.jit
    def blocks(v):
        e, pull = jax.vjp(lambda t: ba.errors(t, jnp, pb.feat), v)
        return [pull(jnp.broadcast_to(jnp.asarray(s)[:, None], e.shape))[0] for s in seeds]

    v = jnp.asarray(pb.v)
    # (timed up to the CSR values, as torch's and tapegrad's are)
    return (lambda: pb.jacobian_values([np.asarray(b) for b in jax.block_until_ready(blocks(v))])), summary


def _kmeans_peer(w: Workload, torch_like: bool) -> harness.System:
    """dir = J / (H 1): torch by double backward, JAX by jvp of grad (jit)."""
    points, c = np.asarray(w.message["points"]), np.ravel(w.message["centroids"])
    if torch_like:
        torch = pytest.importorskip("torch")

        def run():
            t = torch.from_numpy(c).requires_grad_()
            (g,) = torch.autograd.grad(kmeans.cost(t, torch, points), t, create_graph=True)
            (hv,) = torch.autograd.grad(g, t, torch.ones_like(g))
            return (g / hv).detach().numpy()

        return run, None
    jax = harness.jax()
    grad = jax.grad(lambda t: kmeans.cost(t, jax.numpy, points))
    direction = jax.jit(lambda t: grad(t) / jax.jvp(grad, (t,), (jax.numpy.ones_like(t),))[1])
    cj = jax.numpy.asarray(c)
    return (lambda: jax.block_until_ready(direction(cj))), np.asarray


def _peer(w: Workload, torch_like: bool) -> harness.System:
    if w.module is ba:
        return _ba_peer(w, torch_like)
    if w.module is kmeans:
        return _kmeans_peer(w, torch_like)
    objective, x = _gradient_objective(w)
    if torch_like:
        run, _ = harness.torch_peer(objective, x)
        return run, lambda r: r[1]
    if w.module is lstm:
        pytest.skip("jax-jit: XLA takes minutes to compile the lstm's unrolled steps")
    run, finish = harness.jax_peer(objective, x)
    return run, lambda r: finish(r)[1]


def _tapegrad(w: Workload, replay: bool) -> harness.System:
    call, output_of = w.module.prepare(w.function, w.message, replay)
    return call, lambda r: flat(output_of(r))


def _tapegrad_optimized(w: Workload) -> harness.System:
    if w.module.__name__.rsplit(".", 1)[1] not in SCALAR:
        pytest.skip("tapegrad-replay-opt: timed on the evals written as scalar code")
    programs.PASSES = True
    try:
        return _tapegrad(w, True)
    finally:
        programs.PASSES = False


SYSTEM_OF: dict[str, Callable[[Workload], harness.System]] = {
    "primal": lambda w: (_primal(w), None),
    "torch-eager": lambda w: _peer(w, True),
    "jax-jit": lambda w: _peer(w, False),
    "tapegrad": lambda w: _tapegrad(w, False),
    "tapegrad-replay": lambda w: _tapegrad(w, True),
    "tapegrad-replay-opt": _tapegrad_optimized,
}


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("ev,size", [
    pytest.param(ev, size, id=label(ev, size), marks=pytest.mark.benchmark(group=label(ev, size)))
    for ev, sizes in CASES.items() for size in sizes
])
def test_gradbench(benchmark, ev, size, name):
    """Timed: the eval's derivative at its input (primal: the objective), checked before and after."""
    w = workload(ev, size)
    run, finish = SYSTEM_OF[name](w)
    if name == "primal":
        run()
        benchmark(run)
        return
    harness.run_checked(benchmark, (run, finish), w.check)
    benchmark.extra_info["function"] = w.function
