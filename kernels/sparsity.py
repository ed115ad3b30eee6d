"""Dependency sweeps over a tape, and graph coloring: the sparsity patterns of Jacobians and
Hessians and the seeds of their compressed sweeps.

A row's **index set** is the set of inputs it depends on through a nonzero partial (the op
table's ``dx``/``dy`` that are not ``0.0``). A Jacobian row's pattern is the index set of its
output. A Hessian entry (j, k) can be nonzero only where some row reached from the output has a
nonzero second partial (``dxx``, ``dxy``, ``dyy``) between operands whose index sets hold j and
k: the Hessian is the sum over rows of adj * (J_row' d2(row) J_row).

Scalar rows are tracked exactly. An array row is tracked as a block: each element depends on
every element of its operands, which is exact for a reduction to one number and conservative
(more entries, never fewer) for elementwise ops.

Index sets live in one int32 pool: only rows an output needs get a set, and a set's storage is
given back after its last reader, so a long sum (each partial sum holds more inputs) does not keep
them all.
"""

from __future__ import annotations

import numpy as np

from . import CURVES
from .jit import compiled
from .plans import XX, XY, YX, YY
from .table import ARRAY_CODE, ARRAY_OPS, ARRAY_ROW, OPCODES


def _depends(o) -> int:
    """Bit 1: the result depends on operand a (a slot) through a nonzero partial; bit 2: on b."""
    if not o.spec.differentiable:
        return 0
    return (int(o.reads_a and o.spec.dx != "0.0")) | (int(o.reads_b and o.spec.dy != "0.0") << 1)


# per code (opcodes, then ARRAY_OPS codes), as the sweeps index them
DEPENDS = np.array(
    [_depends(o) for o in OPCODES] + [(s.arity >= 1) | (s.arity == 2) << 1 for s in ARRAY_OPS], dtype=np.uint8
)
# bit 1: d2/da2 can be nonzero; bit 2: d2/db2; bit 4: d2/dadb: the op table's curvature (CURVES)
SECOND = ((CURVES & XX) | ((CURVES & YY) >> 2) | np.where(CURVES & (XY | YX), 4, 0)).astype(np.uint8)
_INPUT = 0
_ARRAY_INPUT = ARRAY_CODE["array_input"]
_PACK = ARRAY_CODE["pack"]
# The helpers run per row are inlined and never touch the array table: a call that passes arrays,
# or a branch that reads them, costs atomic reference counting on every row. Array rows (rare)
# go through the _array_* functions.
_inline = compiled(inline="always")
_kernel = compiled()


@_kernel
def _array_operands(j, arr, depends):
    """_operands of the array row of table entry j."""
    code, ax, ay, ameta, aoff, asize, imeta = arr
    c = code[j]
    if c == _PACK:
        return -1, ameta[j], asize[j]
    return _pick(depends[c], np.int64(ax[j]), np.int64(ay[j]))


@_inline
def _pick(bits, x, y):
    if bits == 3:
        return 2, x, y
    if bits == 1:
        return 1, x, x
    if bits == 2:
        return 1, y, y
    return 0, 0, 0  # (no operand rows: x, y may be pool offsets or input indices, not rows)


@_inline
def _room(count, x, y, size):
    """The pool room the union of a row's count operand sets can take."""
    return (size[x] if count >= 1 else 0) + (size[y] if count == 2 else 0)


@_inline
def _operands(i, op, a, b, arr, depends):
    """The rows whose index sets row i's result takes: (count, first, second), or for a pack row
    (-1, start, count) of its list of rows in the side table."""
    if op[i] >= ARRAY_ROW:
        return _array_operands(a[i], arr, depends)
    return _pick(depends[op[i]], np.int64(a[i]), np.int64(b[i]))


@_kernel
def _packed(arr, start, count):
    """The rows a pack row lists."""
    return arr[6][start : start + count]


@_inline
def _mark(i, r, need, free_after):
    need[r] = 1
    if free_after[r] < 0:
        free_after[r] = i


@_kernel
def _mark_needed(need, keep, op, a, b, arr, depends):
    """Close `need` over operands, from the last row back. Returns, per needed row, the row after
    which its index set can be given back: its last needed reader, itself when nothing reads it,
    len(op) for the rows in `keep`."""
    n = op.shape[0]
    free_after = np.where(keep != 0, n, -1)
    for k in range(n):
        i = n - 1 - k
        if not need[i]:
            continue
        if free_after[i] < 0:
            free_after[i] = i
        count, x, y = _operands(i, op, a, b, arr, depends)
        if count < 0:
            for r in _packed(arr, x, y):
                _mark(i, r, need, free_after)
        if count >= 1:
            _mark(i, x, need, free_after)
        if count == 2:
            _mark(i, y, need, free_after)
    return free_after


@_inline
def _merge_into(pool, top, p, p_len, q, q_len):
    """Write the union of the sorted sets pool[p : p + p_len] and pool[q : q + q_len] at
    pool[top:] (above both); return its length."""
    i = j = k = 0
    while i < p_len and j < q_len:
        u, v = pool[p + i], pool[q + j]
        pool[top + k] = min(u, v)
        i += u <= v
        j += v <= u
        k += 1
    for t in range(i, p_len):
        pool[top + k] = pool[p + t]
        k += 1
    for t in range(j, q_len):
        pool[top + k] = pool[q + t]
        k += 1
    return k


@_kernel
def _compact(pool, start, size, live, m):
    """Move the live sets (flags `live`) together, and grow the pool if they fill more than half
    of it with m more members. Returns (pool, top)."""
    rows = np.flatnonzero(live)
    rows = rows[np.argsort(start[rows])]
    top = 0
    for q in rows:
        s = start[q]
        pool[top : top + size[q]] = pool[s : s + size[q]]
        start[q] = top
        top += size[q]
    if top + m > pool.shape[0] // 2:
        grown = np.empty(2 * (top + m) + pool.shape[0], dtype=np.int32)
        grown[:top] = pool[:top]
        pool = grown
    return pool, top


@_kernel
def _array_set(j, count, x, y, arr, pool, top, start, size, live):
    """Write the index set of the array row of table entry j at the pool's top (reserving room);
    returns (pool, top, its length)."""
    code, ax, ay, ameta, aoff, asize, imeta = arr
    if code[j] == _ARRAY_INPUT:
        if top + asize[j] > pool.shape[0]:
            pool, top = _compact(pool, start, size, live, asize[j])
        pool[top : top + asize[j]] = np.arange(np.int64(ax[j]), np.int64(ax[j]) + asize[j])
        return pool, top, asize[j]
    if count >= 0:
        room = _room(count, x, y, size)
        if top + room > pool.shape[0]:
            pool, top = _compact(pool, start, size, live, room)
        return pool, top, _scalar_set(count, x, y, pool, top, start, size)
    rows = _packed(arr, x, y)
    if top + size[rows].sum() > pool.shape[0]:
        pool, top = _compact(pool, start, size, live, size[rows].sum())
    t = top
    for r in rows:
        pool[t : t + size[r]] = pool[start[r] : start[r] + size[r]]
        t += size[r]
    members = np.unique(pool[top:t])
    pool[top : top + members.shape[0]] = members
    return pool, top, members.shape[0]


@_inline
def _scalar_set(count, x, y, pool, top, start, size):
    """Write the union of the sets of a row's count operand rows x, y at pool[top:]; its length."""
    if count == 0:
        return 0
    if count == 1:
        pool[top : top + size[x]] = pool[start[x] : start[x] + size[x]]
        return size[x]
    return _merge_into(pool, top, start[x], size[x], start[y], size[y])


@_kernel
def _add_pairs(pairs, n_pairs, p_set, q_set):
    """Append every (u, v) of p_set x q_set to pairs (grown as needed)."""
    total = n_pairs + p_set.shape[0] * q_set.shape[0]
    if total > pairs.shape[0]:
        grown = np.empty((2 * total, 2), dtype=np.int64)
        grown[:n_pairs] = pairs[:n_pairs]
        pairs = grown
    for u in p_set:
        for v in q_set:
            pairs[n_pairs, 0] = u
            pairs[n_pairs, 1] = v
            n_pairs += 1
    return pairs, n_pairs


@_kernel
def index_sets(op, a, b, arr, keep, second, depends):
    """Index sets of the rows in `keep` (uint8 per row), and the Hessian's entry pairs.

    second: uint8 per row, the SECOND bits of the rows reached from the output (else 0); each such
    row adds the pairs of inputs its second partials join. Returns (pool, start, size, pairs): row
    r's set is pool[start[r] : start[r] + size[r]] (r in keep); pairs is a (p, 2) array of input
    pairs (j, k), with repeats; an (x, y) pair comes in one order only."""
    n = op.shape[0]
    need = keep | (second != 0)
    free_after = _mark_needed(need, keep, op, a, b, arr, depends)
    pool = np.empty(max(1024, 2 * n), dtype=np.int32)
    top = 0
    start = np.zeros(n, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    live = np.zeros(n, dtype=np.uint8)
    dying = np.full(n + 1, -1, dtype=np.int64)  # heads of lists: the rows whose sets go after row i
    next_dying = np.full(n, -1, dtype=np.int64)
    pairs = np.empty((1024, 2), dtype=np.int64)
    n_pairs = 0
    for i in range(n):
        if not need[i]:
            continue
        count, x, y = _operands(i, op, a, b, arr, depends)
        bits = second[i]
        if bits:  # (a pack row is linear: never here)
            sx = pool[start[x] : start[x] + size[x]]
            sy = pool[start[y] : start[y] + size[y]]
            if bits & 1:
                pairs, n_pairs = _add_pairs(pairs, n_pairs, sx, sx)
            if bits & 2:
                pairs, n_pairs = _add_pairs(pairs, n_pairs, sy, sy)
            if bits & 4:
                pairs, n_pairs = _add_pairs(pairs, n_pairs, sx, sy)
        if free_after[i] == i:  # no later row reads this row's set
            continue
        if op[i] >= ARRAY_ROW:
            pool, top, size[i] = _array_set(a[i], count, x, y, arr, pool, top, start, size, live)
        else:
            room = _room(count, x, y, size) + 1
            if top + room > pool.shape[0]:
                pool, top = _compact(pool, start, size, live, room)
            if op[i] == _INPUT:
                pool[top] = a[i]
                size[i] = 1
            else:
                size[i] = _scalar_set(count, x, y, pool, top, start, size)
        start[i] = top
        top += size[i]
        live[i] = 1
        f = free_after[i]
        next_dying[i] = dying[f]
        dying[f] = i
        r = dying[i]  # the sets whose last reader was row i
        while r >= 0:
            live[r] = 0
            r = next_dying[r]
    return pool, start, size, pairs[:n_pairs]


@_kernel
def reached(op, a, b, arr, out_slot, depends):
    """uint8 per row: 1 where the output depends on the row (its adjoint can be nonzero)."""
    n = op.shape[0]
    flags = np.zeros(n, dtype=np.uint8)
    flags[out_slot] = 1
    for k in range(n):
        i = n - 1 - k
        if not flags[i]:
            continue
        count, x, y = _operands(i, op, a, b, arr, depends)
        if count < 0:
            flags[_packed(arr, x, y)] = 1
        if count >= 1:
            flags[x] = 1
        if count == 2:
            flags[y] = 1
    return flags


@_kernel
def row_codes(op, a, code):
    """The code of each row: its opcode, or for an array row its array table code."""
    out = op.astype(np.int64)
    for i in range(op.shape[0]):
        if op[i] >= ARRAY_ROW:
            out[i] = code[a[i]]
    return out


@_kernel
def color_columns(indptr, indices, n_cols):
    """Greedy distance-1 coloring of the column intersection graph of a CSR pattern (columns that
    share a row get different colors), columns in their natural order. Returns (colors, count)."""
    n_rows = indptr.shape[0] - 1
    # the pattern by columns
    counts = np.zeros(n_cols + 1, dtype=np.int64)
    for k in range(indices.shape[0]):
        counts[indices[k] + 1] += 1
    col_ptr = np.cumsum(counts)
    col_rows = np.empty(indices.shape[0], dtype=np.int64)
    fill = col_ptr[:-1].copy()
    for r in range(n_rows):
        for k in range(indptr[r], indptr[r + 1]):
            c = indices[k]
            col_rows[fill[c]] = r
            fill[c] += 1
    colors = np.full(n_cols, -1, dtype=np.int64)
    forbidden = np.full(n_cols + 1, -1, dtype=np.int64)  # forbidden[color] == j: taken near column j
    count = 0
    for j in range(n_cols):
        for k in range(col_ptr[j], col_ptr[j + 1]):
            r = col_rows[k]
            for q in range(indptr[r], indptr[r + 1]):
                other = colors[indices[q]]
                if other >= 0:
                    forbidden[other] = j
        color = 0
        while forbidden[color] == j:
            color += 1
        colors[j] = color
        count = max(count, color + 1)
    return colors, count


@_kernel
def gather_sets(pool, start, size, slots, lo, hi):
    """CSR (indptr, indices) of the index sets of `slots`, one row each, keeping the members in
    [lo, hi), shifted by -lo."""
    indptr = np.zeros(slots.shape[0] + 1, dtype=np.int64)
    for r in range(slots.shape[0]):
        s = slots[r]
        count = 0
        for k in range(start[s], start[s] + size[s]):
            count += lo <= pool[k] < hi
        indptr[r + 1] = indptr[r] + count
    indices = np.empty(indptr[-1], dtype=np.int64)
    t = 0
    for r in range(slots.shape[0]):
        s = slots[r]
        for k in range(start[s], start[s] + size[s]):
            if lo <= pool[k] < hi:
                indices[t] = pool[k] - lo
                t += 1
    return indptr, indices
