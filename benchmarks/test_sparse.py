"""Sparse Jacobians: compressed sweeps against the dense Jacobian and finite differences.

The problem is the Bratu residual of ``tapegrad.examples.bratu`` (5-point stencil, n unknowns).
Methods: ``sparse`` (``cf.sparse_jacobian``: one tangent sweep per color, pattern found once),
``dense`` (``cf.jacobian``: one sweep per unknown), ``fd-colored`` (forward differences with the
same coloring: colors + 1 replays of F) and ``fd-dense`` (n + 1 replays). Each run is checked
against the sparse Jacobian; ``extra_info`` holds the sweeps (or replays) per Jacobian and the
peak memory (tracemalloc) of one evaluation.
"""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse

import tapegrad as tg
from tapegrad.examples.bratu import residual

SIDES = (20, 40, 80, 400)  # 400 .. 160,000 unknowns
DENSE_LIMIT = 6400  # unknowns: the dense paths beyond this take minutes (and 8 n^2 bytes)


def colored_differences(F, u, pattern, h=1e-7):
    """Forward differences, one replay of F per color: the columns of a color share no row."""
    base = F(u)
    values = np.empty(pattern.nnz)
    columns = pattern.colors[pattern.cols]
    for c in range(pattern.n_colors):
        step = np.where(pattern.colors == c, h, 0.0)
        diff = (F(u + step) - base) / h
        here = columns == c
        values[here] = diff[pattern.rows[here]]
    return pattern.matrix(values)


def dense_differences(F, u, h=1e-7):
    base = F(u)
    jac = np.empty((len(base), len(u)))
    for j in range(len(u)):
        step = np.zeros_like(u)
        step[j] = h
        jac[:, j] = (F(u + step) - base) / h
    return jac


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("method", ["sparse", "dense", "fd-colored", "fd-dense"])
def test_jacobian(benchmark, method, side):
    n = side * side
    if method in ("dense", "fd-dense") and n > DENSE_LIMIT:
        pytest.skip(f"{method} at {n} unknowns: {8 * n * n / 1e9:.1f} GB and {n} sweeps")
    F = tg.compile(lambda u: residual(u, 6.0))
    u = np.random.default_rng(0).uniform(0.0, 0.5, n)
    pattern = F.jacobian_sparsity(u)
    reference = F.sparse_jacobian(u)
    run, sweeps = {
        "sparse": (lambda: F.sparse_jacobian(u), pattern.sweeps),
        "dense": (lambda: F.jacobian(u), n),
        "fd-colored": (lambda: colored_differences(F, u, pattern), pattern.n_colors + 1),
        "fd-dense": (lambda: dense_differences(F, u), n + 1),
    }[method]
    tracemalloc.start()
    result = run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    error = abs(scipy.sparse.csr_matrix(result) - reference).max()
    assert error <= (1e-13 if method in ("sparse", "dense") else 1e-4) * abs(reference).max()
    benchmark.extra_info.update(unknowns=n, sweeps=sweeps, colors=pattern.n_colors, nnz=pattern.nnz,
                                peak_mb=round(peak / 1e6, 3))
    if n > DENSE_LIMIT or method == "fd-dense":
        benchmark.pedantic(run, rounds=3, iterations=1)
    else:
        benchmark(run)
