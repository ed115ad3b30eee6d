"""Newton's method on the Bratu problem with sparse Jacobians: ``python -m tapegrad.examples.bratu``.

The Bratu (solid fuel ignition) problem -Δu = λ e^u on the unit square, u = 0 on the boundary,
discretized with the 5-point Laplacian on an n x n interior grid: n² unknowns and residuals. At
the default n = 400 that is 160,000 unknowns: the dense Jacobian would take 205 GB, while its
pattern has 5 entries a row. tapegrad records the residual once, finds the Jacobian's pattern
with a dependency sweep over the tape, colors its columns, and gets every Newton step's Jacobian
from one tangent sweep per color (7 here) instead of one per unknown.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import tapegrad as tg


def residual(u: Any, lam: float) -> Any:
    """F(u) = (4 u_ij - the 4 neighbours) / h² - λ exp(u_ij), flattened (u: n² numbers, traced or
    not; neighbours outside the grid are the boundary's 0)."""
    n = int(round(np.sqrt(len(u))))
    grid = np.asarray(u).reshape(n, n)
    laplacian = 4.0 * grid
    laplacian[1:, :] = laplacian[1:, :] - grid[:-1, :]
    laplacian[:-1, :] = laplacian[:-1, :] - grid[1:, :]
    laplacian[:, 1:] = laplacian[:, 1:] - grid[:, :-1]
    laplacian[:, :-1] = laplacian[:, :-1] - grid[:, 1:]
    return (laplacian * (n + 1) ** 2 - lam * np.exp(grid)).ravel()


def solve(n: int = 400, lam: float = 6.0, tol: float = 1e-9, report: bool = True) -> dict[str, Any]:
    """Newton's method from u = 0; returns the solution and what it cost."""
    from scipy.sparse.linalg import spsolve

    say = print if report else (lambda *args: None)
    F = tg.compile(lambda u: residual(u, lam))
    u = np.zeros(n * n)
    start = time.perf_counter()
    r = F(u)
    record = time.perf_counter() - start
    start = time.perf_counter()
    pattern = F.jacobian_sparsity(u)
    find = time.perf_counter() - start
    say(f"{n * n} unknowns; tape of {len(F.tape)} rows recorded in {record:.2f} s")
    say(f"Jacobian: {pattern.nnz} nonzeros (dense: {8 * (n * n) ** 2 / 1e9:.1f} GB); pattern and "
        f"coloring in {find:.2f} s: {pattern.n_colors} colors, {pattern.sweeps} {pattern.mode} sweeps "
        f"per Jacobian (max row degree {pattern.max_row_degree})")
    jacobian_seconds, steps = [], 0
    while np.linalg.norm(r, np.inf) > tol * (n + 1) ** 2 and steps < 20:
        start = time.perf_counter()
        J = F.sparse_jacobian(u)
        jacobian_seconds.append(time.perf_counter() - start)
        u = u - spsolve(J.tocsc(), r)
        r = F(u)
        steps += 1
        say(f"step {steps}: |F(u)|_inf = {np.linalg.norm(r, np.inf):.3e}, max u = {u.max():.6f} "
            f"(Jacobian in {1e3 * jacobian_seconds[-1]:.1f} ms)")
    return {"u": u, "steps": steps, "pattern": pattern, "jacobian_seconds": jacobian_seconds,
            "residual": float(np.linalg.norm(r, np.inf))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="grid points per side (n² unknowns)")
    parser.add_argument("--lam", type=float, default=6.0, help="λ, below the fold at about 6.808")
    args = parser.parse_args(argv)
    solve(args.n, args.lam)


if __name__ == "__main__":
    main()
