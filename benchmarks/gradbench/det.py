"""GradBench's ``det``: the determinant of an l x l matrix by expansion by minors.

From GradBench's ``det.hpp`` (cmpad's ``det_by_minor``): ``det_of_minor`` expands along the first
row of each minor, dropping rows and columns through the linked index lists ``r`` and ``c``. The
gradient is taken with respect to all l^2 entries (the cofactors). Inputs: ``rand(l * l)`` for
l = 5, 6, ..., 11 in turn from seed 31337.
"""

from __future__ import annotations

import numba
import numpy as np

from . import inputs, programs

FUNCTIONS = ("primal", "gradient")
SIZES = (5, 6, 7, 8, 9, 10, 11)


def det_by_minors(jit=lambda f: f, jit_minor=lambda f: f):
    """det(A) of a flat l*l matrix, plain Python (traced by tapegrad) or compiled by `jit` (the
    recursion, through the closure, by `jit_minor`)."""

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


det_python = det_by_minors()
# without NRT reference counting the recursion runs 3.7x faster
det_njit = det_by_minors(numba.njit, numba.njit(_nrt=False))


def make_input(ell: int) -> np.ndarray:
    return inputs.seeded_rand(SIZES, lambda e: e * e, ell)


def message(ell: int) -> dict:
    """The evaluate input GradBench sends for l = ell."""
    return {"A": make_input(ell).tolist(), "ell": ell}


def reference(A: np.ndarray) -> tuple[float, np.ndarray]:
    """det(A) and its gradient, the cofactors det(A) inv(A)^T, by LU."""
    ell = round(len(A) ** 0.5)
    M = A.reshape(ell, ell)
    det = np.linalg.det(M)
    return float(det), (det * np.linalg.inv(M).T).ravel()


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad (by LU)."""
    value, grad = reference(inputs.vector(message, "A"))
    return value if function == "primal" else grad.tolist()


def prepare(function: str, message: dict, replay: bool):
    A = inputs.vector(message, "A")
    return programs.value_then_gradient(
        "det", function, FUNCTIONS, det_python, A, arrays=False, replay=replay
    )
