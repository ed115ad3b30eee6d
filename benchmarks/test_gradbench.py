"""GradBench's ``det``, ``llsq`` and ``ode`` evals: ``tg.compile`` replay against the same primal in
``@numba.njit``, torch (eager) and JAX (``jit(value_and_grad)``).

The objectives follow GradBench (github.com/gradbench/gradbench: ``cpp/gradbench/evals/*.hpp``, the
inputs of ``python/gradbench/gradbench/evals/*/run.py``, replayed by :func:`gradbench_input`):

* ``det``: the determinant of an l x l matrix by expansion by minors (``det_of_minor``, rows and
  columns dropped through the linked index lists ``r``, ``c``); the gradient is taken with respect
  to all l^2 entries. l = 5, 7, 9, 10 (l = 10: a 1.25e7-row tape, recorded in ~13 s; the module
  peaks at ~3.5 GB). l = 11 (1.4e8 rows) is left out.
* ``llsq``: y(x) = 1/2 sum_i (s_i - sum_j x_j t_i^j)^2, t_i = -1 + 2i/(n-1), s_i = sign(t_i), m = 128
  coefficients x, n = 1024, 4096 and 16392 points (GradBench's size, not 16384). t_i^j is a running
  product instead of ``pow(t_i, j)``: the tape is the same (powers of t_i are constants to it), and
  the njit primal runs at the speed of GradBench's C++ one instead of ~5x slower.
* ``ode``: RK4 with s steps on [0, 2] for y_0' = x_0, y_i' = x_i y_{i-1}, y(0) = 0; the objective is
  y[n-1], the last element of the primal's output. (n, s) = (1000, 10), (1000, 100), (10000, 10)
  (GradBench runs n in 1e3..1e5 by s in 1..100; larger tapes take too long to record.) Each RK4
  step carries y four indices further, so at GradBench's sizes (n > 4s) y[n-1] and its gradient are
  exactly 0 (GradBench's own reference is the exact solution's 2^n prod(x) / n!, also 0): the check
  there only says "zero". :func:`ode_reference` is therefore also checked, against tapegrad and
  central differences, where y[n-1] is not 0 (n = 3s).

Systems: ``njit-primal`` is ``numba.njit`` of the very Python source that ``tg.compile`` records
(det: its recursion compiled without NRT reference counting, which made each call 3.7x slower); its
median is the denominator of the gradient / primal ratio that GradBench reports for ADOL-C
(``ADOLC``: GradBench's ``evals/*/summary.json`` at commit 0003df3e). Against GradBench's C++
primals the njit ones are on par for llsq and ode and ~2x slower for det (Numba's cost per
recursive call), which flatters tapegrad's det ratio by about that much. ``tapegrad-replay`` times
``cf.value_and_grad(x)`` on a tape recorded outside the timing (module-scoped fixture: one problem
alive at a time). ``torch-eager`` and ``jax-jit`` run the same algorithms with whole-array ops
(:func:`det_vec`: all minors of one size as a batch, not ``linalg.det``; JAX steps the ode in
``lax.fori_loop``, as XLA takes minutes to compile 100 unrolled steps). Every result is checked
against a reference at rtol 1e-8: det: det(A) inv(A)^T; llsq: -V^T r with the Vandermonde matrix
V; ode: :func:`ode_reference`, RK4 and its adjoint by hand in NumPy. Ratios, ns per tape row and
record times go to ``extra_info`` and a summary at the end.
"""

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

import numba
import numpy as np
import pytest
from numba.extending import register_jitable

import harness
import tapegrad as tg

RTOL = 1e-8
# workload -> (primal ns, gradient ns) of GradBench's ADOL-C tool (evals/*/summary.json, 0003df3e)
ADOLC = {
    "det-5": (1213, 7415), "det-7": (46628, 201651), "det-9": (3315793, 29029653),
    "det-10": (33253868, 291955043),
    "llsq-1024": (121852, 2074027), "llsq-4096": (487176, 9842829), "llsq-16392": (1950690, 40243099),
    "ode-1000x10": (7114, 830535), "ode-1000x100": (78233, 13537444), "ode-10000x10": (165955, 14065060),
}


def gradbench_input(workloads, size, target) -> np.ndarray:
    """The input GradBench's eval sends for `target`: it seeds NumPy with 31337, then draws
    ``rand(size(w))`` for each workload w in its order, so an input depends on those before it."""
    rng = np.random.RandomState(31337)
    for w in workloads:
        x = rng.rand(size(w))
        if w == target:
            return x
    raise ValueError(f"{target} is not one of GradBench's workloads")


# --------------------------------------------------------------------------- det
def det_by_minors(jit=lambda f: f, jit_minor=lambda f: f):
    """GradBench's det.hpp: det(A) of a flat l*l matrix, plain Python (traced by tg.compile) or
    compiled by `jit` (the recursion, through the closure, by `jit_minor`)."""

    @jit_minor
    def det_of_minor(A, n, m, r, c):
        R0, Cj = r[n], c[n]
        if m == 1:
            return A[R0 * n + Cj]
        detM, sign, Cj1 = 0.0, 1, n
        r[n] = r[R0]  # drop the minor's row 0 from its sub-minors
        for _ in range(m):
            M0j = A[R0 * n + Cj]
            c[Cj1] = c[Cj]  # drop column j
            detS = det_of_minor(A, n, m - 1, r, c)
            c[Cj1] = Cj
            detM = detM + M0j * detS if sign > 0 else detM - M0j * detS
            Cj1, Cj, sign = Cj, c[Cj], -sign
        r[n] = R0
        return detM

    @jit
    def det(A):
        n = round(len(A) ** 0.5)
        r = np.arange(1, n + 2)
        r[n] = 0
        return det_of_minor(A, n, n, r, r.copy())

    return det


def det_vec(A, xp):
    """The same expansion with whole-array ops: every minor of one size in a batch."""
    ell = round(A.shape[0] ** 0.5)
    return _det_batch(A.reshape(1, ell, ell), xp)[0]


def _det_batch(M, xp):
    batch, m = M.shape[0], M.shape[1]
    if m == 1:
        return M[:, 0, 0]
    keep = xp.asarray(np.array([[c for c in range(m) if c != j] for j in range(m)]))
    sub = xp.moveaxis(M[:, 1:][:, :, keep], 2, 1).reshape(batch * m, m - 1, m - 1)
    sign = xp.asarray((-1.0) ** np.arange(m))
    return (sign * M[:, 0] * _det_batch(sub, xp).reshape(batch, m)).sum(-1)


# --------------------------------------------------------------------------- llsq
def llsq_primal(x, n):
    """GradBench's llsq.hpp primal (t_i^j as a running product)."""
    total = 0.0
    for i in range(n):
        ti = -1.0 + i * 2.0 / (n - 1)
        inner, tj = float(np.sign(ti)), 1.0
        for j in range(len(x)):
            inner -= x[j] * tj
            tj *= ti
        total += inner * inner
    return total / 2.0


@functools.lru_cache(maxsize=None)
def _llsq_data(n, m):
    """s and the Vandermonde matrix V of the points (constants: made once per size)."""
    t = -1.0 + np.arange(n) * 2.0 / (n - 1)
    return np.sign(t), t[:, None] ** np.arange(m)


def llsq_vec(x, xp, n):
    s, V = _llsq_data(n, x.shape[0])
    r = xp.asarray(s) - xp.asarray(V) @ x
    return (r * r).sum() / 2.0


# --------------------------------------------------------------------------- ode
@register_jitable
def ode_fun(x, y, z):
    z[0] = x[0]
    for i in range(1, len(x)):
        z[i] = x[i] * y[i - 1]


def ode_primal(x, s):
    """GradBench's ode.hpp primal: y after s RK4 steps from t = 0 to 2."""
    n, h = len(x), 2.0 / s
    y, tmp = np.zeros_like(x), np.zeros_like(x)
    k1, k2, k3, k4 = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for _ in range(s):
        ode_fun(x, y, k1)
        for i in range(n):
            tmp[i] = y[i] + h * k1[i] / 2.0
        ode_fun(x, tmp, k2)
        for i in range(n):
            tmp[i] = y[i] + h * k2[i] / 2.0
        ode_fun(x, tmp, k3)
        for i in range(n):
            tmp[i] = y[i] + h * k3[i]
        ode_fun(x, tmp, k4)
        for i in range(n):
            y[i] += h * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]) / 6.0
    return y


def ode_vec(x, xp, s):
    f = lambda y: xp.concatenate([x[:1], x[1:] * y[:-1]])  # noqa: E731
    h = 2.0 / s

    def step(y):
        k1 = f(y)
        k2 = f(y + h * k1 / 2.0)
        k3 = f(y + h * k2 / 2.0)
        k4 = f(y + h * k3)
        return y + h * (k1 + 2.0 * k2 + 2.0 * k3 + k4) / 6.0

    y = xp.zeros_like(x)
    if xp.__name__ == "jax.numpy":  # one traced step: XLA takes minutes on 100 unrolled ones
        import jax

        return jax.lax.fori_loop(0, s, lambda _, y: step(y), y)
    for _ in range(s):
        y = step(y)
    return y


def ode_reference(x, s):
    """y[-1] and its gradient: RK4 in NumPy, then the adjoint by hand, stage by stage (a stage
    k = f(p) sends back x0 += k0bar, x[1:] += kbar[1:] p[:-1], p[:-1] += kbar[1:] x[1:])."""
    h = 2.0 / s
    shift = (h / 2.0, h / 2.0, h)  # stage i > 0 evaluates f at y + shift[i-1] k_(i-1)
    f = lambda p: np.concatenate([x[:1], x[1:] * p[:-1]])  # noqa: E731
    y, points = np.zeros_like(x), []
    for _ in range(s):
        p, k = [y], []
        for i in range(4):
            k.append(f(p[i]))
            if i < 3:
                p.append(y + shift[i] * k[i])
        points.append(p)
        y = y + h * (k[0] + 2.0 * k[1] + 2.0 * k[2] + k[3]) / 6.0
    xbar, ybar = np.zeros_like(x), np.zeros_like(x)
    ybar[-1] = 1.0
    for p in reversed(points):
        kbar = [w * h * ybar for w in (1 / 6, 1 / 3, 1 / 3, 1 / 6)]
        for i in (3, 2, 1, 0):
            xbar[0] += kbar[i][0]
            xbar[1:] += kbar[i][1:] * p[i][:-1]
            pbar = np.append(kbar[i][1:] * x[1:], 0.0)
            ybar = ybar + pbar
            if i:
                kbar[i - 1] = kbar[i - 1] + shift[i - 1] * pbar
    return y[-1], xbar


# --------------------------------------------------------------------------- problems
@dataclass
class Problem:
    group: str
    primal: Callable  # GradBench's primal(x, *params) in Python: tg.compile records it
    njit: Callable  # the same source under @numba.njit
    vec: Callable  # vec(x, xp, *params): the same algorithm with whole-array ops
    params: tuple  # the non-differentiable arguments (llsq: n, ode: s)
    x: np.ndarray
    value: float  # the reference value and gradient
    grad: np.ndarray
    output: Callable = lambda out: out  # the objective from the primal's output (ode: y[-1])
    cf: Any = None
    record_s: float = float("nan")

    def objective(self, x):
        return self.output(self.primal(x, *self.params))

    def record(self) -> "Problem":
        """tg.compile(objective), recorded at x; record_s: the first value_and_grad (recording,
        forward and reverse sweep; the sweeps already compiled)."""
        _load_sweeps()
        self.cf = tg.compile(self.objective)
        start = time.perf_counter()
        self.cf.value_and_grad(self.x)
        self.record_s = time.perf_counter() - start
        return self


@functools.cache
def _load_sweeps() -> None:
    cf = tg.compile(lambda x: x[0] * x[1])
    for _ in range(2):  # the first call records and replays, the second takes the one-call path
        cf.value_and_grad(np.ones(2))


def det_problem(ell: int) -> Problem:
    A = gradbench_input(range(5, 12), lambda e: e * e, ell)
    M = A.reshape(ell, ell)
    det = np.linalg.det(M)
    cofactors = (det * np.linalg.inv(M).T).ravel()
    return Problem(f"det-{ell}", det_python, det_njit, det_vec, (), A, det, cofactors)


def llsq_problem(n: int, m: int = 128) -> Problem:
    ns = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8196, 16392)
    x = gradbench_input(ns, lambda _: m, n)
    s, V = _llsq_data(n, m)
    r = s - V @ x
    return Problem(f"llsq-{n}", llsq_primal, llsq_njit, llsq_vec, (n,), x, r @ r / 2.0, -V.T @ r)


def ode_problem(size: tuple[int, int]) -> Problem:
    _check_ode_reference()
    grid = [(n, s) for n in (1000, 10_000, 100_000) for s in (1, 10, 100)]
    x = gradbench_input(sorted(grid, key=lambda w: w[0] * w[1]), lambda w: w[0], size)
    return _ode(f"ode-{size[0]}x{size[1]}", x, size[1])


def _ode(group: str, x: np.ndarray, s: int) -> Problem:
    value, grad = ode_reference(x, s)
    return Problem(group, ode_primal, ode_njit, ode_vec, (s,), x, value, grad, output=lambda y: y[-1])


@functools.cache
def _check_ode_reference(n: int = 30, s: int = 10) -> None:
    """ode_reference and tapegrad where y[n-1] is not 0, against central differences."""
    x = 0.5 + np.random.default_rng(n).random(n)
    p = _ode("ode-check", x, s)
    assert p.value != 0.0 and np.all(p.grad != 0.0)
    check(p.record().cf.value_and_grad(x), p)
    for i in (0, n // 2, n - 1):
        e = np.zeros(n)
        e[i] = 1e-6
        fd = (ode_njit(x + e, s)[-1] - ode_njit(x - e, s)[-1]) / 2e-6
        np.testing.assert_allclose(p.grad[i], fd, rtol=1e-6)


det_python = det_by_minors()
det_njit = det_by_minors(numba.njit, numba.njit(_nrt=False))
llsq_njit = numba.njit(llsq_primal)
ode_njit = numba.njit(ode_primal)

CASES = {"det": (5, 7, 9, 10), "llsq": (1024, 4096, 16392), "ode": ((1000, 10), (1000, 100), (10_000, 10))}
BUILD = {"det": det_problem, "llsq": llsq_problem, "ode": ode_problem}


# --------------------------------------------------------------------------- the systems
def _torch(p: Problem):
    return harness.torch_peer(lambda t, xp: p.output(p.vec(t, xp, *p.params)), p.x)


def _jax_jit(p: Problem):
    return harness.jax_peer(lambda v, xp: p.output(p.vec(v, xp, *p.params)), p.x)


# name -> (problem -> (timed callable, its result -> (value, gradient or None)))
SYSTEMS: dict[str, Callable[[Problem], tuple[Callable, Any]]] = {
    "njit-primal": lambda p: (functools.partial(p.njit, p.x, *p.params), lambda r: (p.output(r), None)),
    "torch-eager": _torch,
    "jax-jit": _jax_jit,
    "tapegrad-replay": lambda p: (functools.partial(p.cf.value_and_grad, p.x), None),  # last: ratios
}
PEERS = [name for name in SYSTEMS if name != "tapegrad-replay"]

MEDIANS: dict[str, dict[str, float]] = {}  # group -> system -> median seconds
REPLAY: dict[str, dict[str, float]] = {}  # group -> tapegrad-replay's ns per row and ratios
RECORDED: dict[str, tuple[int, float]] = {}  # group -> (tape rows, record seconds)


def check(result, p: Problem) -> None:
    harness.check(result, p.value, p.grad, RTOL)


def bench(benchmark, p: Problem, name: str) -> None:
    """Warm up and check, time, check again, and keep the median (and tapegrad's ratios)."""
    median = harness.run_checked(benchmark, SYSTEMS[name](p), lambda r: check(r, p))
    if median is None:
        return
    MEDIANS.setdefault(p.group, {})[name] = median
    if name == harness.REPLAY:
        primal_ns, gradient_ns = ADOLC[p.group]
        info = harness.replay_info(MEDIANS[p.group], len(p.cf.tape))
        info.update({"record_s": round(p.record_s, 3), "adolc_gradient/primal": round(gradient_ns / primal_ns, 1)})
        benchmark.extra_info.update(info)
        REPLAY[p.group] = info


def _label(ev: str, size) -> str:
    return f"{ev}-" + ("x".join(map(str, size)) if isinstance(size, tuple) else str(size))


@pytest.fixture(scope="module")
def problem(request) -> Problem:
    """The problem, recorded once (pytest keeps one size alive at a time)."""
    ev, size = request.param
    p = BUILD[ev](size).record()
    RECORDED[p.group] = (len(p.cf.tape), p.record_s)
    return p


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("problem", [
    pytest.param((ev, size), id=_label(ev, size),
                 marks=pytest.mark.benchmark(group=f"{_label(ev, size)} gradient"))
    for ev, sizes in CASES.items() for size in sizes
], indirect=True)
def test_gradient(benchmark, problem, name):
    """Timed: value and gradient of the objective at GradBench's input (njit-primal: the value)."""
    bench(benchmark, problem, name)


# --------------------------------------------------------------------------- the summary
class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not RECORDED:
            return
        tr = terminalreporter
        tr.section("GradBench evals: tapegrad-replay median / peers' medians; ADOL-C: GradBench's "
                   "gradient/primal")
        tr.write_line(f"{'group':<14}{'rows':>10}{'record s':>10}{'ns/row':>8}"
                      + "".join(f"{'/' + p:>14}" for p in PEERS) + f"{'ADOL-C':>8}")
        for group, (rows, record_s) in RECORDED.items():
            info = REPLAY.get(group, {})
            cells = [info.get("ns_per_row")] + [info.get("replay/" + p) for p in PEERS]
            widths = [8] + [14] * len(PEERS)
            line = "".join(f"{c:>{w}.2f}" if c is not None else f"{'-':>{w}}" for c, w in zip(cells, widths))
            primal_ns, gradient_ns = ADOLC[group]
            tr.write_line(f"{group:<14}{rows:>10}{record_s:>10.2f}{line}{gradient_ns / primal_ns:>8.1f}")


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("tapegrad-gradbench-summary"):
        manager.register(_Summary(), "tapegrad-gradbench-summary")
