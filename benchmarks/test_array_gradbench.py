"""GradBench's ``lse`` and ``gmm`` evals with tapegrad's eager array API, against torch eager and
JAX ``jit(value_and_grad)``, all float64 and whole-array ops.

Definitions and inputs follow GradBench (github.com/gradbench/gradbench):

* ``lse`` (``cpp/gradbench/evals/lse.hpp``): y(x) = log(sum_i exp(x_i - A)) + A, A = max(x); the
  gradient is softmax(x). Inputs (``python/gradbench/gradbench/evals/lse/run.py``): NumPy seeded
  with 31337, then ``rand(n)`` for each n = 2500, 5000, ..., 1280000 in turn (:func:`lse_input`
  replays that). Sizes here: n = 2500 (GradBench's smallest) and 160000.
* ``gmm`` (``cpp/gradbench/evals/gmm.hpp``, from ADBench's ``gmm.h``): the Gaussian mixture
  log-likelihood with a Wishart prior. Q_k is lower triangular with diagonal exp(q_k) and strictly
  lower part l_k filled column by column (``Qtimesx``: Q[j, i] = l[p] for i = 0.., j = i+1..,
  p = 0, 1, ..), and
  y = -n d/2 log(2 pi) + sum_i logsumexp_k(alpha_k + sum(q_k) - 1/2 |Q_k (x_i - mu_k)|^2)
      - n logsumexp(alpha) - sum_k (gamma^2/2 (|exp(q_k)|^2 + |l_k|^2) - m sum(q_k)) + k C,
  C = n' d (log gamma - log(2)/2) - log Gamma_d(n'/2), n' = d + m + 1 (``log_wishart_prior``;
  ``log_gamma_distrib`` in ``cpp/adbench/shared/matrix.h``). The gradient is taken with respect to
  alpha, mu, q and l, packed into one flat vector that every system unpacks by slicing. Inputs:
  ``generate`` in ``python/gradbench/gradbench/evals/gmm/run.py`` (``default_rng(31337)``; x, q, l,
  alpha ~ N(0, 1), mu ~ U(0, 1); m = 0, gamma = 1), replayed by :func:`gmm_input`. (d, k, n) =
  (2, 5, 1000), GradBench's smallest, and (10, 25, 1000) (GradBench: d 2..64, k 5..100, n 1000).

Each system runs the same objective (:func:`lse`, :func:`gmm`) on its own namespace: ``tapegrad``
(``tg.value_and_grad``: leaf, eager recording, backward; Q by a gather from [exp(q), l, 0]),
``torch-eager`` (leaf, forward, ``backward``) and ``jax-jit``; logsumexp is each library's own.
Every result is checked at rtol 1e-8 against NumPy references (:func:`lse_reference`,
:func:`gmm_reference`: Q set entry by entry, the gradient by hand). At a tiny size the references
are checked against central differences, and gmm's Q against ``Qtimesx`` transcribed line by line.
tapegrad's median ratios to its peers go to ``extra_info`` and a summary at the end.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import harness
import tapegrad as tg
import tapegrad.numpy as tnp

RTOL = 1e-8
LSE_NS = (2500, 5000, 10000, 20000, 40000, 80000, 160000, 320000, 640000, 1280000)  # GradBench's
CASES = {"lse": (2500, 160000), "gmm": ((2, 5, 1000), (10, 25, 1000))}


def logsumexp(a, xp, axis: int = 0):
    """logsumexp over `axis` in NumPy, tapegrad.numpy or torch (their own), or jax.numpy."""
    if xp is np:
        top = a.max(axis, keepdims=True)
        return np.log(np.exp(a - top).sum(axis)) + top.squeeze(axis)
    if hasattr(xp, "logsumexp"):
        return xp.logsumexp(a, axis)
    return harness.jax().scipy.special.logsumexp(a, axis)


# --------------------------------------------------------------------------- lse
lse = logsumexp  # lse(x, xp): GradBench's lse of a vector


def lse_input(n: int) -> np.ndarray:
    """GradBench's input: from seed 31337, rand(size) for each of its sizes in turn."""
    rng = np.random.RandomState(31337)
    return [rng.rand(size) for size in LSE_NS][LSE_NS.index(n)]


def lse_reference(x: np.ndarray) -> tuple[float, np.ndarray]:
    e = np.exp(x - x.max())
    return float(np.log(e.sum()) + x.max()), e / e.sum()


# --------------------------------------------------------------------------- gmm
@dataclass
class GMM:
    """One gmm problem's constants: sizes, data, Wishart parameters, and where l goes in Q."""

    d: int
    k: int
    x: np.ndarray  # (n, d)
    m: int = 0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        d, k, n = self.d, self.k, self.x.shape[0]
        cols, rows = np.triu_indices(d, 1)  # l's places in Q, column by column
        size = len(rows)
        gather = np.full((k, d, d), k * d + k * size)  # into [exp(q).ravel(), l.ravel(), 0]
        gather[:, np.arange(d), np.arange(d)] = np.arange(k * d).reshape(k, d)
        gather[:, rows, cols] = k * d + np.arange(k * size).reshape(k, size)
        nw = d + self.m + 1
        log_gamma_d = 0.25 * d * (d - 1) * math.log(math.pi) + sum(
            math.lgamma(0.5 * nw + 0.5 * (1 - j)) for j in range(1, d + 1))
        c = nw * d * (math.log(self.gamma) - 0.5 * math.log(2)) - log_gamma_d
        self.n, self.rows, self.cols, self.gather = n, rows, cols, gather
        self.xt = self.x.T.reshape(1, d, n).copy()  # the data as (1, d, n)
        self.constant = -n * d * 0.5 * math.log(2 * math.pi) + k * c  # y's terms free of the parameters

    def unpack(self, theta):
        """(alpha, mu, q, l) from the flat parameters."""
        k, a, b, c = self.k, self.k, self.k * (1 + self.d), self.k * (1 + 2 * self.d)
        return theta[:a], theta[a:b].reshape(k, -1), theta[b:c].reshape(k, -1), theta[c:].reshape(k, len(self.rows))


def gmm(theta, xp, p: GMM):
    """The gmm objective of the flat parameters with whole-array ops."""
    alpha, mu, q, l = p.unpack(theta)
    qdiag, sum_qs = xp.exp(q), q.sum(1)
    Q = xp.concatenate([qdiag.reshape(-1), l.reshape(-1), xp.asarray(np.zeros(1))])[p.gather]  # (k, d, d)
    z = Q @ (xp.asarray(p.xt) - mu.reshape(p.k, p.d, 1))  # Q_k (x_i - mu_k): (k, d, n)
    inner = (alpha + sum_qs).reshape(p.k, 1) - 0.5 * (z * z).sum(1)
    prior = 0.5 * p.gamma**2 * ((qdiag * qdiag).sum() + (l * l).sum()) - p.m * sum_qs.sum()
    return p.constant + logsumexp(inner, xp).sum() - p.n * logsumexp(alpha, xp) - prior


def gmm_input(d: int, k: int, n: int, seed: int = 31337) -> tuple[np.ndarray, GMM]:
    """GradBench's generate(), drawn in its order: (the flat alpha, mu, q, l; the problem)."""
    rng = np.random.default_rng(seed=seed)
    x = np.array([rng.normal(size=d) for _ in range(n)])
    mu = np.array([rng.uniform(size=d) for _ in range(k)])
    q = np.array([rng.normal(size=d) for _ in range(k)])
    l = np.array([rng.normal(size=d * (d - 1) // 2) for _ in range(k)])
    return np.concatenate([rng.normal(size=k), mu.ravel(), q.ravel(), l.ravel()]), GMM(d, k, x)


def gmm_reference(theta: np.ndarray, p: GMM) -> tuple[float, np.ndarray]:
    """The value, and the gradient by hand, in NumPy (Q set entry by entry: no gather)."""
    alpha, mu, q, l = p.unpack(theta)
    Q = np.zeros((p.k, p.d, p.d))
    Q[:, np.arange(p.d), np.arange(p.d)] = np.exp(q)
    Q[:, p.rows, p.cols] = l
    xc = p.x.T[None] - mu[:, :, None]
    z = Q @ xc
    inner = (alpha + q.sum(1))[:, None] - 0.5 * (z * z).sum(1)
    lse_i, lse_alpha, g2 = logsumexp(inner, np), logsumexp(alpha, np), p.gamma**2
    value = p.constant + lse_i.sum() - p.n * lse_alpha - 0.5 * g2 * (np.exp(2 * q).sum() + (l * l).sum()) + p.m * q.sum()
    w = np.exp(inner - lse_i)  # (k, n): each point's responsibilities
    gz = -w[:, None, :] * z
    gQ = gz @ xc.transpose(0, 2, 1)
    g_alpha = w.sum(1) - p.n * np.exp(alpha - lse_alpha)
    g_mu = -(Q.transpose(0, 2, 1) @ gz).sum(2)
    g_q = w.sum(1)[:, None] + p.m + np.diagonal(gQ, axis1=1, axis2=2) * np.exp(q) - g2 * np.exp(2 * q)
    g_l = gQ[:, p.rows, p.cols] - g2 * l
    return float(value), np.concatenate([g_alpha, g_mu.ravel(), g_q.ravel(), g_l.ravel()])


def qtimesx(d: int, qdiag: np.ndarray, ltri: np.ndarray, x: np.ndarray) -> np.ndarray:
    """GradBench's Qtimesx, line by line."""
    out, idx = qdiag * x, 0
    for i in range(d):
        for j in range(i + 1, d):
            out[j] += ltri[idx] * x[i]
            idx += 1
    return out


@functools.cache
def check_references() -> None:
    """Tiny sizes: references vs central differences and tapegrad; Q vs Qtimesx (d = 4: column-wise
    and row-wise orders differ)."""
    theta, p = gmm_input(4, 2, 7, seed=1)
    x = np.random.default_rng(2).normal(size=5)
    for f, ref, at in ((lse, lse_reference, x), (functools.partial(gmm, p=p), functools.partial(gmm_reference, p=p), theta)):
        value, grad = ref(at)
        np.testing.assert_allclose(f(at, np), value, rtol=RTOL)
        fd = [(f(at + e, np) - f(at - e, np)) / 2e-6 for e in np.eye(len(at)) * 1e-6]
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
        harness.check(tg.value_and_grad(lambda t: f(t, tnp))(at), value, grad, RTOL)  # noqa: B023
    _, mu, q, l = p.unpack(theta)
    Q = np.concatenate([np.exp(q).ravel(), l.ravel(), [0.0]])[p.gather]
    for c in range(p.k):
        xc = p.x[0] - mu[c]
        np.testing.assert_allclose(Q[c] @ xc, qtimesx(p.d, np.exp(q[c]), l[c], xc), rtol=1e-14)


# --------------------------------------------------------------------------- problems and systems
@dataclass
class Problem:
    group: str
    objective: Callable  # objective(theta, xp)
    theta: np.ndarray
    value: float  # the reference value and gradient
    grad: np.ndarray


def _label(ev: str, size) -> str:
    return f"{ev}-" + ("x".join(map(str, size)) if isinstance(size, tuple) else str(size))


@functools.cache
def problem(ev: str, size) -> Problem:
    if ev == "lse":
        x = lse_input(size)
        return Problem(_label(ev, size), lse, x, *lse_reference(x))
    theta, p = gmm_input(*size)
    return Problem(_label(ev, size), functools.partial(gmm, p=p), theta, *gmm_reference(theta, p))


SYSTEMS: dict[str, Callable[[Problem], harness.System]] = {
    "torch-eager": lambda pr: harness.torch_peer(pr.objective, pr.theta),
    "jax-jit": lambda pr: harness.jax_peer(pr.objective, pr.theta),
    "tapegrad": lambda pr: (functools.partial(tg.value_and_grad(lambda t: pr.objective(t, tnp)), pr.theta), None),
}
PEERS = [name for name in SYSTEMS if name != "tapegrad"]
MEDIANS: dict[str, dict[str, float]] = {}  # group -> system -> median seconds


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("ev,size", [
    pytest.param(ev, size, id=_label(ev, size), marks=pytest.mark.benchmark(group=f"{_label(ev, size)} gradient"))
    for ev, sizes in CASES.items() for size in sizes
])
def test_gradient(benchmark, ev, size, name):
    """Timed: value and gradient at GradBench's input, checked before and after the timing."""
    check_references()
    pr = problem(ev, size)
    median = harness.run_checked(benchmark, SYSTEMS[name](pr), lambda r: harness.check(r, pr.value, pr.grad, RTOL))
    if median is None:
        return
    medians = MEDIANS.setdefault(pr.group, {})
    medians[name] = median
    if name == "tapegrad":  # timed last: the peers' medians are in
        benchmark.extra_info.update({f"tapegrad/{peer}": round(median / medians[peer], 3)
                                     for peer in PEERS if peer in medians})


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not MEDIANS:
            return
        tr, width = terminalreporter, 16
        tr.section("GradBench lse and gmm, eager arrays: median us, tapegrad / peers")
        tr.write_line(f"{'group':<16}" + "".join(f"{n:>{width}}" for n in [*SYSTEMS, *("tg/" + p for p in PEERS)]))
        for group, m in MEDIANS.items():
            cells = [f"{m[n] * 1e6:>{width}.1f}" if n in m else f"{'-':>{width}}" for n in SYSTEMS]
            cells += [f"{m['tapegrad'] / m[p]:>{width}.2f}" if {p, "tapegrad"} <= m.keys() else f"{'-':>{width}}"
                      for p in PEERS]
            tr.write_line(f"{group:<16}" + "".join(cells))


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("tapegrad-array-gradbench-summary"):
        manager.register(_Summary(), "tapegrad-array-gradbench-summary")
