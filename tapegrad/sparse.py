"""Sparse Jacobians and Hessians of compiled functions.

The pattern comes from a dependency sweep over the recorded tape (:mod:`kernels.sparsity`);
a greedy coloring groups columns (or rows) that share no row (column) of the pattern, and one
compressed sweep per color gives every entry of its group: a tangent sweep seeded with the sum of
a color's columns, a reverse sweep seeded with the sum of a color's rows, or, for a Hessian, a
forward-over-reverse sweep (Curtis, Powell and Reid's compression; Gebremedhin, Manne and
Pothen's survey "What color is your Jacobian?" for the graph view).

The pattern is the tape's: the branch taken where it was recorded. Code whose branches depend on
the inputs can have other patterns at other points; solvers that fix the structure once want
branchless code (``tg.where``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import custom, kernels

if TYPE_CHECKING:
    import scipy.sparse

    from .compiled import Variant


@dataclass(frozen=True)
class Sparsity:
    """A derivative's pattern and the coloring its compressed sweeps use.

    ``rows``, ``cols``: the structural nonzeros, sorted by row then column (the order of the
    values that ``jacobian_values`` and ``hessian_values`` return; cyipopt's ``jacobianstructure``
    and ``hessianstructure`` return ``(rows, cols)``). ``mode``: "forward" (one tangent sweep per
    color of the columns), "reverse" (one reverse sweep per color of the rows) or "hessian" (one
    forward-over-reverse sweep per color of the columns). ``colors[k]`` is the color of column
    (or row, in reverse mode) k."""

    rows: np.ndarray
    cols: np.ndarray
    shape: tuple[int, int]
    colors: np.ndarray
    n_colors: int
    mode: str

    @property
    def nnz(self) -> int:
        """Number of structural nonzeros."""
        return len(self.rows)

    @property
    def sweeps(self) -> int:
        """Compressed sweeps per evaluation: one per color."""
        return self.n_colors

    @property
    def max_row_degree(self) -> int:
        """Most nonzeros in one row: a lower bound on the colors of the columns."""
        return int(np.bincount(self.rows, minlength=1).max()) if self.nnz else 0

    def structure(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols): the pattern alone, for solvers that take structure and values apart."""
        return self.rows, self.cols

    def lower(self) -> Sparsity:
        """The entries on and below the diagonal (the triangle Ipopt takes of a Hessian)."""
        keep = self.rows >= self.cols
        return Sparsity(self.rows[keep], self.cols[keep], self.shape, self.colors, self.n_colors, self.mode)

    def matrix(self, values: np.ndarray) -> scipy.sparse.csr_matrix:
        """The matrix with these values at the pattern's entries, as ``scipy.sparse.csr_matrix``."""
        import scipy.sparse

        return scipy.sparse.csr_matrix((values, (self.rows, self.cols)), shape=self.shape)


def _to_csr(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of entries sorted by row."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(rows, minlength=n_rows))
    return indptr, cols.astype(np.int64)


def jacobian_sparsity(variant: Variant, lo: int, hi: int) -> Sparsity:
    """The pattern of d outputs / d inputs[lo:hi] of a recorded variant, colored for the
    compressed sweeps: columns (tangent sweeps) or rows (reverse sweeps), whichever need fewer."""
    from .kernels import sparsity as deps  # (imports Numba: not with tapegrad)

    keep = np.zeros(variant.rows, dtype=np.uint8)
    keep[variant.out_slots] = 1
    pool, start, size, _ = deps.index_sets(
        variant.op, variant.a, variant.b, variant.arrays, keep, np.zeros_like(keep), deps.DEPENDS
    )
    indptr, indices = deps.gather_sets(pool, start, size, variant.out_slots, lo, hi)
    m, n = len(variant.out_slots), hi - lo
    rows, cols = np.repeat(np.arange(m), np.diff(indptr)), indices  # sets are sorted
    col_colors, n_col = deps.color_columns(indptr, indices, n)
    by_col = np.lexsort((rows, cols))
    row_colors, n_row = deps.color_columns(*_to_csr(cols[by_col], rows[by_col], n), m)
    if n_row < n_col or not custom.has_rule(variant.arrays, "jvp"):
        return Sparsity(rows, cols, (m, n), row_colors, n_row, "reverse")
    return Sparsity(rows, cols, (m, n), col_colors, n_col, "forward")


def hessian_sparsity(variant: Variant, lo: int, hi: int) -> Sparsity:
    """The pattern of the Hessian of a scalar variant's output in inputs[lo:hi], colored."""
    from .kernels import sparsity as deps

    codes = deps.row_codes(variant.op, variant.a, variant.arrays[0])
    reach = deps.reached(variant.op, variant.a, variant.b, variant.arrays, variant.out_slot, deps.DEPENDS)
    second = deps.SECOND[codes] * reach
    keep = np.zeros(variant.rows, dtype=np.uint8)
    _, _, _, pairs = deps.index_sets(
        variant.op, variant.a, variant.b, variant.arrays, keep, second, deps.DEPENDS
    )
    inside = np.all((pairs >= lo) & (pairs < hi), axis=1)
    pairs = pairs[inside] - lo
    n = hi - lo
    keys = np.unique(np.concatenate([pairs[:, 0] * n + pairs[:, 1], pairs[:, 1] * n + pairs[:, 0]]))
    rows, cols = keys // n, keys % n
    colors, n_colors = deps.color_columns(*_to_csr(rows, cols, n), n)
    return Sparsity(rows, cols, (n, n), colors, n_colors, "hessian")


class SparseDerivatives:
    """The sparse-derivative methods of :class:`tapegrad.CompiledFunction`."""

    def _sparsity(self, kind: str, args: tuple[Any, ...], argnums: int) -> tuple[Sparsity, Variant, Any]:
        """The pattern of `kind` ("jacobian" or "hessian") of the variant that replays at `args`
        (computed once per variant), the variant, and its values there."""
        variant, vals, inputs, _ = self._replay(args)  # type: ignore[attr-defined]
        if kind == "hessian" and variant.out_shape is not None:
            raise ValueError(f"sparse_hessian: the function returns shape {variant.out_shape}, not a scalar")
        if not isinstance(argnums, int) or not 0 <= argnums < len(args):
            raise ValueError(f"sparse {kind}: argnums must be an int in [0, {len(args)}), got {argnums!r}")
        sizes = [math.prod(np.shape(getattr(arg, "_v", arg))) for arg in args]
        lo = sum(sizes[:argnums])
        hi = lo + sizes[argnums]
        cache = self.__dict__.setdefault("_patterns", {})
        key = (id(variant), kind, lo, hi)
        if key not in cache or cache[key][0] is not variant:
            build = jacobian_sparsity if kind == "jacobian" else hessian_sparsity
            cache[key] = (variant, build(variant, lo, hi))
        pattern = cache[key][1]
        self._counts[f"{kind}_sweeps"] = pattern.sweeps  # type: ignore[attr-defined]
        return pattern, variant, (vals, inputs, lo, hi)

    def jacobian_sparsity(self, *args: Any, argnums: int = 0) -> Sparsity:
        """The pattern of d f / d args[argnums] (outputs and the argument flattened) and its
        coloring, from a dependency sweep over the tape recorded at `args`."""
        return self._sparsity("jacobian", args, argnums)[0]

    def jacobian_values(self, *args: Any, argnums: int = 0) -> np.ndarray:
        """The Jacobian's entries at the pattern's (rows, cols), one compressed sweep per color."""
        pattern, variant, (vals, inputs, lo, hi) = self._sparsity("jacobian", args, argnums)
        slots = variant.out_slots
        if pattern.mode == "forward":
            compressed = np.empty((len(slots), pattern.n_colors))
            seeds = np.zeros(len(inputs))
            for c in range(pattern.n_colors):
                seeds[lo:hi] = pattern.colors == c
                dot = self._tangent(variant, vals, seeds)  # type: ignore[attr-defined]
                compressed[:, c] = self._outputs(variant, dot, 1)  # type: ignore[attr-defined]
            return compressed[pattern.rows, pattern.colors[pattern.cols]]
        seeds = (pattern.colors == np.arange(pattern.n_colors)[:, None]).astype(np.float64)
        compressed = np.empty((pattern.n_colors, hi - lo))
        self._pullbacks(variant, vals, seeds, compressed, lo)  # type: ignore[attr-defined]
        return compressed[pattern.colors[pattern.rows], pattern.cols]

    def sparse_jacobian(self, *args: Any, argnums: int = 0) -> scipy.sparse.csr_matrix:
        """d f / d args[argnums] as a ``scipy.sparse.csr_matrix`` (flattened output x flattened
        argument), computed with one compressed sweep per color of its pattern."""
        pattern = self.jacobian_sparsity(*args, argnums=argnums)
        return pattern.matrix(self.jacobian_values(*args, argnums=argnums))

    def hessian_sparsity(self, *args: Any, argnums: int = 0, lower: bool = False) -> Sparsity:
        """The pattern of the Hessian of a scalar f in args[argnums] (flattened) and its coloring;
        ``lower=True``: the entries on and below the diagonal only."""
        pattern = self._sparsity("hessian", args, argnums)[0]
        return pattern.lower() if lower else pattern

    def hessian_values(self, *args: Any, argnums: int = 0, lower: bool = False) -> np.ndarray:
        """The Hessian's entries at the pattern's (rows, cols): one forward-over-reverse sweep
        (a Hessian-vector product) per color of the columns."""
        pattern, variant, (vals, inputs, lo, hi) = self._sparsity("hessian", args, argnums)
        custom.require(variant.arrays, "second order", "sparse_hessian")
        space = self._space(variant, keeps_clean=True)  # type: ignore[attr-defined]
        arrays = space.array_args[:2]
        adjoints = (space.array_args[2], *space.tangents) if variant.has_arrays else ()  # aadj, aadjd, adot
        plan = (space.plan(variant, True),) if variant.has_arrays else ()
        n = variant.rows
        rows = (variant.run_op, variant.a, variant.b, vals, variant.consts)
        seeds, adj, (dot, adjd) = np.zeros(len(inputs)), space.adj, space.second()
        compressed = np.empty((hi - lo, pattern.n_colors))
        for c in range(pattern.n_colors):
            seeds[lo:hi] = pattern.colors == c
            variant.sweep("tangent")(*rows, seeds, dot, 0, n, *arrays, *adjoints[2:], *plan)
            clean = space.clean and space.clean_d
            for rows_adjoints in (adj, adjd):
                variant.sweep("clear_rows")(variant.op, variant.a, variant.input_slots, rows_adjoints, clean,
                                            *space.array_args)
            for block in adjoints[:2]:
                kernels.sweeps().clear_adjoints(arrays[0], block, True, not clean)
            adj[variant.out_slot] = 1.0
            live = (kernels.live_blocks(arrays[0], variant.op, variant.a),) if adjoints else ()
            # consuming: every adjoint zeroed as it is read (see Workspace.clean)
            variant.sweep("second_order")(*rows, dot, adj, adjd, 0, n, True, *arrays, *adjoints, *plan, *live)
            space.clean = space.clean_d = True
            compressed[:, c] = self._input_adjoints(variant, adjd, hi, lo, second=True)  # type: ignore[attr-defined]
        if lower:
            pattern = pattern.lower()
        return compressed[pattern.rows, pattern.colors[pattern.cols]]

    def sparse_hessian(self, *args: Any, argnums: int = 0) -> scipy.sparse.csr_matrix:
        """The Hessian of a scalar f in args[argnums] as a ``scipy.sparse.csr_matrix``, computed
        with one Hessian-vector product per color of its pattern."""
        pattern = self.hessian_sparsity(*args, argnums=argnums)
        return pattern.matrix(self.hessian_values(*args, argnums=argnums))
