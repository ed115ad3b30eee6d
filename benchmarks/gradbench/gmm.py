"""GradBench's ``gmm``: the Gaussian mixture log-likelihood with a Wishart prior (ADBench's ``gmm.h``).

Q_k is lower triangular with diagonal exp(q_k) and strictly lower part l_k filled column by column
(``Qtimesx``: Q[j, i] = l[p] for i = 0.., j = i+1.., p = 0, 1, ..), and

    y = -n d/2 log(2 pi) + sum_i logsumexp_k(alpha_k + sum(q_k) - 1/2 |Q_k (x_i - mu_k)|^2)
        - n logsumexp(alpha) - sum_k (gamma^2/2 (|exp(q_k)|^2 + |l_k|^2) - m sum(q_k)) + k C,

C = n' d (log gamma - log(2)/2) - log Gamma_d(n'/2), n' = d + m + 1 (``log_wishart_prior``). The
gradient is taken with respect to alpha, mu, q and l, packed into one flat vector that every system
unpacks by slicing; Q comes from a gather out of [exp(q), l, 0]. Inputs as GradBench's ``generate``
(``default_rng(31337)``; x, q, l, alpha ~ N(0, 1), mu ~ U(0, 1); m = 0, gamma = 1), replayed by
:func:`make_input`; GradBench runs n = 1000 with d in 2..64 and k in 5..100.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import inputs, programs
from .lse import logsumexp

FUNCTIONS = ("objective", "jacobian")


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
        return (
            theta[:a],
            theta[a:b].reshape(k, -1),
            theta[b:c].reshape(k, -1),
            theta[c:].reshape(k, len(self.rows)),
        )


def gmm(theta, xp, p: GMM):
    """The gmm objective of the flat parameters with whole-array ops."""
    alpha, mu, q, l = p.unpack(theta)
    qdiag, sum_qs = xp.exp(q), q.sum(1)
    Q = xp.concatenate([qdiag.reshape(-1), l.reshape(-1), xp.asarray(np.zeros(1))])[p.gather]  # (k, d, d)
    z = Q @ (xp.asarray(p.xt) - mu.reshape(p.k, p.d, 1))  # Q_k (x_i - mu_k): (k, d, n)
    inner = (alpha + sum_qs).reshape(p.k, 1) - 0.5 * (z * z).sum(1)
    prior = 0.5 * p.gamma**2 * ((qdiag * qdiag).sum() + (l * l).sum()) - p.m * sum_qs.sum()
    return p.constant + logsumexp(inner, xp).sum() - p.n * logsumexp(alpha, xp) - prior


def make_input(d: int, k: int, n: int, seed: int = 31337) -> tuple[np.ndarray, GMM]:
    """GradBench's generate(), drawn in its order: (the flat alpha, mu, q, l; the problem)."""
    rng = np.random.default_rng(seed=seed)
    x = np.array([rng.normal(size=d) for _ in range(n)])
    mu = np.array([rng.uniform(size=d) for _ in range(k)])
    q = np.array([rng.normal(size=d) for _ in range(k)])
    l = np.array([rng.normal(size=d * (d - 1) // 2) for _ in range(k)])
    return np.concatenate([rng.normal(size=k), mu.ravel(), q.ravel(), l.ravel()]), GMM(d, k, x)


def message(size: tuple[int, int, int]) -> dict:
    """The evaluate input for (d, k, n), from :func:`make_input`."""
    theta, p = make_input(*size)
    fields = dict(zip(("alpha", "mu", "q", "l"), (part.tolist() for part in p.unpack(theta))))
    return {"d": p.d, "k": p.k, "n": p.n, **fields, "x": p.x.tolist(), "gamma": p.gamma, "m": p.m}


def reference(theta: np.ndarray, p: GMM) -> tuple[float, np.ndarray]:
    """The value, and the gradient by hand, in NumPy (Q set entry by entry: no gather)."""
    alpha, mu, q, l = p.unpack(theta)
    Q = np.zeros((p.k, p.d, p.d))
    Q[:, np.arange(p.d), np.arange(p.d)] = np.exp(q)
    Q[:, p.rows, p.cols] = l
    xc = p.x.T[None] - mu[:, :, None]
    z = Q @ xc
    inner = (alpha + q.sum(1))[:, None] - 0.5 * (z * z).sum(1)
    lse_i, lse_alpha, g2 = logsumexp(inner, np), logsumexp(alpha, np), p.gamma**2
    value = (
        p.constant
        + lse_i.sum()
        - p.n * lse_alpha
        - 0.5 * g2 * (np.exp(2 * q).sum() + (l * l).sum())
        + p.m * q.sum()
    )
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


def from_message(message: dict) -> tuple[np.ndarray, GMM]:
    """(the flat parameters, the problem) of an evaluate message (alpha, mu, q, l, x, gamma, m)."""
    d, k = int(message["d"]), int(message["k"])
    x = inputs.vector(message, "x").reshape(-1, d)
    theta = np.concatenate([inputs.vector(message, name).ravel() for name in ("alpha", "mu", "q", "l")])
    return theta, GMM(d, k, x, m=int(message.get("m", 0)), gamma=float(message.get("gamma", 1.0)))


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad (the gradient by hand)."""
    theta, p = from_message(message)
    value, grad = reference(theta, p)
    if function == "objective":
        return value
    return {name: g.tolist() for name, g in zip(("alpha", "mu", "q", "l"), p.unpack(grad))}


def prepare(function: str, message: dict, replay: bool):
    theta, p = from_message(message)
    f = functools.partial(gmm, p=p)
    if function == "objective":
        return programs.value(f, theta, arrays=True, replay=replay), float
    if function == "jacobian":
        call = programs.value_and_grad(f, theta, arrays=True, replay=replay)
        names = ("alpha", "mu", "q", "l")
        return call, lambda r: {name: part.tolist() for name, part in zip(names, p.unpack(r[1]))}
    raise inputs.unknown("gmm", function, FUNCTIONS)
