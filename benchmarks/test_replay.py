"""Record once, replay many: ``tg.compile``'s Numba replay against hand-written Numba, torch, JAX.

Every system is warmed up (recorded, compiled, loaded) outside the timing, and every benchmark
checks its value and gradient against a reference. The median ratios of ``tapegrad-replay`` to its
peers, and its ns per tape row (forward + reverse), are printed at the end and stored in
``extra_info``.
"""

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import harness
import numba
import numpy as np
import pytest
from test_scalar_eager import rosen, rosen_grad, rosen_value, start

import tapegrad as tg
import tapegrad.numpy as tnp

ROSEN_NS = (10, 1000, 100_000)
STENCIL_N = 1000
STENCIL_STEPS = 100  # ~12 rows per point and step: a 1.2e6-row tape
BATCH = 256


# --------------------------------------------------------------------------- the problems
def rosen_vec(t, xp=None):
    """Rosenbrock with whole-array ops (NumPy, torch, jax.numpy)."""
    return (100.0 * (t[1:] - t[:-1] ** 2) ** 2 + (1.0 - t[:-1]) ** 2).sum()


@numba.njit
def rosen_njit(x):
    s = 0.0
    for i in range(len(x) - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


@numba.njit
def rosen_hand_njit(x):
    g = np.zeros_like(x)
    s = 0.0
    for i in range(len(x) - 1):
        r, d = x[i + 1] - x[i] * x[i], 1.0 - x[i]
        s += 100.0 * r * r + d * d
        g[i] += -400.0 * x[i] * r - 2.0 * d
        g[i + 1] += 200.0 * r
    return s, g


def stencil(u):
    """The issue's 1-D stencil with scalar tapegrad ops: each step reads the previous step's values
    (Jacobi), the end points stay fixed; J = sum(u**2)."""
    u = list(u)
    for _ in range(STENCIL_STEPS):
        u = [u[0], *(_point(u[i - 1], u[i], u[i + 1]) for i in range(1, len(u) - 1)), u[-1]]
    s = 0.0
    for v in u:
        s = s + v * v
    return s


def _point(left, c, right):
    return c + 0.1 * (right - left) * c - 0.01 * tg.sin(c) + 0.05 * tg.exp(-c ** 2)


def stencil_vec(u, xp):
    for _ in range(STENCIL_STEPS):
        c = u[1:-1]
        inner = c + 0.1 * (u[2:] - u[:-2]) * c - 0.01 * xp.sin(c) + 0.05 * xp.exp(-c ** 2)
        u = xp.concatenate([u[:1], inner, u[-1:]])
    return (u * u).sum()


@numba.njit
def _stencil_step(u, out):
    out[0], out[-1] = u[0], u[-1]
    for i in range(1, len(u) - 1):
        c = u[i]
        out[i] = c + 0.1 * (u[i + 1] - u[i - 1]) * c - 0.01 * np.sin(c) + 0.05 * np.exp(-c * c)


@numba.njit
def stencil_njit(u0):
    u, new = u0.copy(), np.empty_like(u0)
    for _ in range(STENCIL_STEPS):
        _stencil_step(u, new)
        u, new = new, u
    return (u * u).sum()


@numba.njit
def stencil_hand_njit(u0):
    """J and dJ/du0: the forward steps kept, then the adjoint loop written by hand."""
    n = len(u0)
    U = np.empty((STENCIL_STEPS + 1, n))
    U[0] = u0
    for k in range(STENCIL_STEPS):
        _stencil_step(U[k], U[k + 1])
    g, prev = 2.0 * U[STENCIL_STEPS], np.empty(n)
    for k in range(STENCIL_STEPS - 1, -1, -1):
        u = U[k]
        prev[:] = 0.0
        prev[0], prev[-1] = g[0], g[-1]
        for i in range(1, n - 1):
            c, a = u[i], g[i]
            prev[i] += a * (1.0 + 0.1 * (u[i + 1] - u[i - 1]) - 0.01 * np.cos(c) - 0.1 * c * np.exp(-c * c))
            w = 0.1 * a * c
            prev[i + 1] += w
            prev[i - 1] -= w
        g, prev = prev, g
    return (U[STENCIL_STEPS] * U[STENCIL_STEPS]).sum(), g


@dataclass
class Problem:
    scalar: Callable  # traced by tg.compile
    vec: Callable  # vec(t, xp): whole-array ops
    primal: Callable  # njit: the value
    hand: Callable  # njit: value and gradient, written by hand
    x: np.ndarray
    value: float  # the reference
    grad: np.ndarray
    rtol: float

    @functools.cached_property
    def cf(self):
        """tg.compile(scalar), recorded at x (and its sweeps loaded)."""
        cf = tg.compile(self.scalar)
        cf.value_and_grad(self.x)
        return cf

    @functools.cached_property
    def cf_opt(self):
        """tg.compile(scalar, optimize=True), recorded at x: its tape sorted into vector runs."""
        cf = tg.compile(self.scalar, optimize=True)
        cf.value_and_grad(self.x)
        return cf


@functools.cache
def rosen_problem(n: int) -> Problem:
    x = start(n)
    return Problem(rosen, rosen_vec, rosen_njit, rosen_hand_njit, x, rosen_value(x), rosen_grad(x), 1e-10)


@pytest.fixture(scope="module")
def stencil_problem():
    """The stencil at small random data, recorded once (~1e6 rows); the hand-written adjoint is the
    reference, itself checked against central differences."""
    x = np.random.default_rng(STENCIL_N).uniform(-0.1, 0.1, STENCIL_N)
    value, grad = stencil_hand_njit(x)
    p = Problem(stencil, stencil_vec, stencil_njit, stencil_hand_njit, x, value, grad, 1e-9)
    assert p.cf.stats()["tape"]["inputs"] == STENCIL_N, "the recording spilled onto a second tape"
    h = 1e-6
    for i in (1, STENCIL_N // 2, STENCIL_N - 1):
        e = np.zeros(STENCIL_N)
        e[i] = h
        fd = (stencil_njit(x + e) - stencil_njit(x - e)) / (2 * h)
        np.testing.assert_allclose([grad[i], p.cf.grad(x)[i]], fd, rtol=1e-5)  # differences: ~1e-6
    return p


# --------------------------------------------------------------------------- the systems
def _torch(p: Problem):
    return harness.torch_peer(p.vec, p.x)


def _jax_jit(p: Problem):
    return harness.jax_peer(p.vec, p.x)


# name -> (problem -> (timed callable, its result -> (value, gradient or None)))
SYSTEMS: dict[str, Callable[[Problem], tuple[Callable, Any]]] = {
    "njit-primal": lambda p: (functools.partial(p.primal, p.x), lambda v: (v, None)),
    "njit-hand-gradient": lambda p: (functools.partial(p.hand, p.x), None),
    "torch-eager": _torch,
    "jax-jit": _jax_jit,
    "tapegrad-replay-opt": lambda p: (functools.partial(p.cf_opt.value_and_grad, p.x), None),
    "tapegrad-replay": lambda p: (functools.partial(p.cf.value_and_grad, p.x), None),  # last: ratios
}
PEERS = [name for name in SYSTEMS if name != "tapegrad-replay"]

MEDIANS: dict[str, dict[str, float]] = {}  # group -> system -> median seconds
REPLAY: dict[str, dict[str, float]] = {}  # group -> tapegrad-replay's rows, ns per row and ratios
BATCH_SPEEDUP: dict[str, float] = {}


def check(result, p: Problem) -> None:
    harness.check(result, p.value, p.grad, p.rtol)


def bench(benchmark, p: Problem, name: str, group: str) -> None:
    """Warm up and check, time, check again, and keep the median (and tapegrad's ratios)."""
    median = harness.run_checked(benchmark, SYSTEMS[name](p), lambda r: check(r, p))
    if median is None:
        return
    MEDIANS.setdefault(group, {})[name] = median
    if name == harness.REPLAY:
        REPLAY[group] = harness.replay_info(MEDIANS[group], len(p.cf.tape))
        benchmark.extra_info.update(REPLAY[group])


def _params(group: str, *args):
    mark = pytest.mark.benchmark(group=group)
    return [pytest.param(*args, name, marks=mark, id="-".join(map(str, (*args, name)))) for name in SYSTEMS]


@pytest.mark.parametrize("n, name", [p for n in ROSEN_NS for p in _params(f"rosenbrock-{n} gradient", n)])
def test_rosenbrock_gradient(benchmark, n, name):
    """Timed: one value and gradient at x (njit-primal: the value only)."""
    bench(benchmark, rosen_problem(n), name, f"rosenbrock-{n} gradient")


@pytest.mark.parametrize("name", _params(f"stencil-{STENCIL_N}x{STENCIL_STEPS} gradient"))
def test_stencil_gradient(benchmark, stencil_problem, name):
    """Timed: one value and gradient of the stencil's J at u0 (njit-primal: the value only)."""
    bench(benchmark, stencil_problem, name, f"stencil-{STENCIL_N}x{STENCIL_STEPS} gradient")


# --------------------------------------------------------------------------- recording
def _rosen_arrays(x):
    return rosen_vec(tnp.asarray(x))


# the function each recorder traces: Rosenbrock's scalar loop, or its whole-array form
RECORDED = {"tapegrad-record": rosen, "tapegrad-record-vectorized": _rosen_arrays,
            "jax-trace+compile": rosen_vec, "jax-trace+compile-loop": rosen}


@pytest.mark.parametrize("n, name", [(n, name) for n in ROSEN_NS for name in RECORDED])
def test_record(benchmark, n, name):
    """Timed: tapegrad: the first value_and_grad of a fresh tg.compile (recording, forward,
    reverse; the Numba sweeps already loaded). JAX: tracing and compiling jit(value_and_grad),
    of the same two functions (the loop unrolled as traced: n <= 1000, one round at n = 1000,
    where it takes about 40 s)."""
    benchmark.group = f"rosenbrock-{n} record"
    p, f = rosen_problem(n), RECORDED[name]
    rounds = 3 if n >= 100_000 else 10
    if name.startswith("tapegrad"):
        run = lambda: tg.compile(f).value_and_grad(p.x)  # noqa: E731
        check(run(), p)
        check(benchmark.pedantic(run, rounds=rounds, warmup_rounds=1), p)
        return
    if name.endswith("loop") and n > 1000:
        pytest.skip("JAX traces the loop unrolled: at n = 1000 it compiles for about 40 s")
    loop = name.endswith("loop") and n > 10
    jax = harness.jax()
    g, x = jax.value_and_grad(f), jax.numpy.asarray(p.x)
    # JAX keeps what it compiled in memory: cleared before each round (untimed), so that the
    # round traces and compiles instead of finding the last round's executable
    compiled = benchmark.pedantic(lambda: jax.jit(g).lower(x).compile(), setup=jax.clear_caches,
                                  rounds=1 if loop else rounds, warmup_rounds=0 if loop else 1)
    value, grad = compiled(x)
    check((float(value), np.asarray(grad)), p)


# --------------------------------------------------------------------------- hvp
HVP_NS = (1000, 20_000)


def rosen_hvp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The extended Rosenbrock's Hessian times v, from its second partials term by term."""
    a, b, va, vb = x[:-1], x[1:], v[:-1], v[1:]
    hv = np.zeros_like(x)
    hv[:-1] += (1200.0 * a * a - 400.0 * b + 2.0) * va - 400.0 * a * vb
    hv[1:] += -400.0 * a * va + 200.0 * vb
    return hv


@pytest.mark.parametrize("n, name", [(n, f"{name}{tape}") for n in HVP_NS for tape in ("", "-opt")
                                     for name in ("gradient", "hvp")])
def test_hvp_against_one_gradient(benchmark, n, name):
    """Timed: one gradient replay (value_and_grad) or one Hessian-vector product (forward over
    reverse, no recording) of the same tape (-opt: optimized); the ratio of the two medians is the
    hvp's cost."""
    benchmark.group = f"rosenbrock-{n} hvp vs gradient replay"
    p = rosen_problem(n)
    cf = p.cf_opt if name.endswith("-opt") else p.cf
    v = np.random.default_rng(n + 1).normal(size=n)
    if name.startswith("gradient"):
        check(benchmark(cf.value_and_grad, p.x), p)
    else:
        cf.hvp(p.x, v)  # (its sweep loaded from Numba's cache before the rounds are calibrated)
        hv = benchmark(cf.hvp, p.x, v)
        np.testing.assert_allclose(hv, rosen_hvp(p.x, v), rtol=1e-10, atol=1e-8)


# --------------------------------------------------------------------------- batch_grad
def batch_points() -> np.ndarray:
    return np.random.default_rng(BATCH).uniform(-2.0, 2.0, (BATCH, 1000))


def loop_grad(cf, X: np.ndarray) -> np.ndarray:
    return np.array([cf.value_and_grad(row)[1] for row in X])


def batch_timings(repeats: int = 7) -> dict:
    """Best-of-`repeats` seconds of batch_grad, of the value_and_grad loop and of batch_grad on one
    thread (run in a subprocess with NUMBA_NUM_THREADS=2, as conftest pins this process to one
    thread): the last measures the scaling itself, which the loop's own speed does not blur."""
    cf, X = rosen_problem(1000).cf, batch_points()
    grads = {"batch": lambda: cf.batch_grad(X), "loop": lambda: loop_grad(cf, X)}
    out = {"threads": numba.get_num_threads(), "equal": np.array_equal(grads["batch"](), grads["loop"]())}
    for key, run in grads.items():
        out[key] = min(_seconds(run) for _ in range(repeats))
    numba.set_num_threads(1)
    out["batch_one_thread"] = min(_seconds(grads["batch"]) for _ in range(repeats))
    return out


def _seconds(run) -> float:
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


@pytest.mark.benchmark(group="batch_grad")
@pytest.mark.parametrize("name", ["batch_grad", "value_and_grad-loop"])
def test_batch_grad(benchmark, name):
    """Timed (this process, one Numba thread): the gradient at 256 points of rosenbrock-1000, by
    batch_grad or by a Python loop of value_and_grad. batch_grad's test also runs both with two
    threads in a subprocess and stores those timings and the speed-up in extra_info."""
    cf, X = rosen_problem(1000).cf, batch_points()
    run = functools.partial(cf.batch_grad, X) if name == "batch_grad" else functools.partial(loop_grad, cf, X)
    run()
    G = benchmark(run)
    np.testing.assert_allclose(G, np.array([rosen_grad(row) for row in X]), rtol=1e-10)
    if name != "batch_grad":
        return
    np.testing.assert_array_equal(G, loop_grad(cf, X))
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, NUMBA_NUM_THREADS="2", PYTHONPATH=path)
    code = "import json, test_replay as t; print(json.dumps(t.batch_timings()))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    two = json.loads(proc.stdout.strip().splitlines()[-1])
    assert two["equal"], "batch_grad with two threads differs from the value_and_grad loop"
    info = {"threads_2_batch_s": two["batch"], "threads_2_loop_s": two["loop"], "threads": two["threads"],
            "speedup_2_threads": round(two["loop"] / two["batch"], 2),
            "scaling_2_threads": round(two["batch_one_thread"] / two["batch"], 2)}
    benchmark.extra_info.update(info)
    BATCH_SPEEDUP.update(info)


# --------------------------------------------------------------------------- the summary
class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not REPLAY and not BATCH_SPEEDUP:
            return
        tr = terminalreporter
        tr.section("tapegrad-replay: median ratios to its peers, ns per tape row")
        if REPLAY:
            tr.write_line(f"{'group':<28}{'rows':>9}{'ns/row':>9}" + "".join(f"{'/' + p:>21}" for p in PEERS))
        for group, info in REPLAY.items():
            ratios = "".join(f"{info['replay/' + p]:>21.3f}" if "replay/" + p in info else f"{'-':>21}"
                             for p in PEERS)
            tr.write_line(f"{group:<28}{info['rows']:>9}{info['ns_per_row']:>9.2f}{ratios}")
        if BATCH_SPEEDUP:
            b = BATCH_SPEEDUP
            batch, loop = b["threads_2_batch_s"] * 1e3, b["threads_2_loop_s"] * 1e3
            tr.write_line(f"batch_grad with {b['threads']} threads (subprocess): {batch:.2f} ms; "
                          f"value_and_grad loop {loop:.2f} ms; speed-up {b['speedup_2_threads']:.2f}x; "
                          f"against batch_grad on one thread {b['scaling_2_threads']:.2f}x")


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    harness.register_summary(request, "tapegrad-replay-summary", _Summary())
