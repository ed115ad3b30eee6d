"""tapegrad's back end: the op table and the Numba sweeps generated from it.

Knows nothing of the front end. ``sweeps()`` returns the compiled module with ``forward``,
``reverse``, ``reverse_tracked`` and ``tangent`` (see :mod:`kernels.codegen`).
"""

from __future__ import annotations

import threading
import types
from collections.abc import Iterable

import numpy as np

from .table import (
    ARRAY_CODE,
    ARRAY_OPS,
    ARRAY_ROW,
    BY_NAME,
    CODE,
    OPCODES,
    OPS,
    REACHED,
    Opcode,
    OpSpec,
    _names,
)

_lock = threading.Lock()
_module: types.ModuleType | None = None

# Per-code facts the tracked reverse sweep reads (opcodes, then the codes of ARRAY_OPS): which
# operands are rows, whether the reverse rule reads saved values.
OPERAND_MASK = np.array([o.operands for o in OPCODES] + [s.operands for s in ARRAY_OPS], dtype=np.uint8)


# Per code: the operand rows its reverse rule may push a nonzero adjoint to (bit 1 x, bit 2 y).
PUSHES = np.array([o.pushes for o in OPCODES] + [s.pushes for s in ARRAY_OPS], dtype=np.uint8)


def adjoint_plan(
    op: np.ndarray, a: np.ndarray, arr: tuple, own_rows: Iterable[int] = ()
) -> tuple[np.ndarray, int]:
    """Where a consuming reverse sweep over the whole tape (rows last to first) may keep each
    array row's adjoint block: from the first row that pushes to it until its own row, which
    zeroes it as it reads it. Blocks never live at once share memory (ba's 33 MB of blocks: 7 MB,
    and a pullback 13% faster). Returns each table entry's offset in a scratch array (-1: the
    entry keeps its own block: array data, inputs, whose adjoints are read after the sweep, and
    `own_rows`', which the caller seeds) and the scratch's length. Freed blocks are zero."""
    code, ax, ay, size = arr[0], arr[1], arr[2], arr[5]
    offsets = np.full(len(code), -1, dtype=np.int64)
    keep = {ARRAY_CODE["array_input"], ARRAY_CODE["array_const"]}
    own = {int(a[r]) for r in own_rows if op[r] == ARRAY_ROW}
    free: dict[int, list[int]] = {}
    length = 0

    def place(j: int) -> None:
        nonlocal length
        if offsets[j] >= 0 or code[j] in keep or j in own:
            return
        spare = free.get(int(size[j]))
        if spare:
            offsets[j] = spare.pop()
        else:
            offsets[j], length = length, length + int(size[j])

    for i in np.flatnonzero((op == ARRAY_ROW) | (op == ARRAY_ROW + 1))[::-1].tolist():  # (0-d results too)
        j = int(a[i])
        pushes = PUSHES[code[j]]
        for bit, operand in ((1, ax[j]), (2, ay[j])):
            if pushes & bit and op[operand] == ARRAY_ROW:
                place(int(a[operand]))
        if op[i] == ARRAY_ROW:
            place(j)  # (a row nothing pushes to: a block of its own row's time only)
            if offsets[j] >= 0:
                free.setdefault(int(size[j]), []).append(int(offsets[j]))
    return offsets, length


def _reads(o: Opcode) -> int:
    """Which values the reverse rule of opcode o reads: bit 1 operand a's (a row), bit 2
    operand b's, bit 4 its own result's."""
    if not o.spec.differentiable or not o.kind:
        return 0
    used: set[str] = set()
    for term, partial in (("a", o.spec.dx), ("b", o.spec.dy)):
        if (o.reads_a if term == "a" else o.reads_b) and partial != "0.0":
            used |= _names(partial)
    x_row, y_row = o.kind in ("v", "vv", "vc"), o.kind in ("vv", "cv")
    return (int("x" in used and x_row)) | (int("y" in used and y_row) << 1) | (int("z" in used) << 2)


# Per code: the values its reverse rule reads (see _reads); an eager tape keeps an array row's
# values only while a reverse rule may read them, as torch keeps its saved tensors.
READS = np.array(
    [_reads(o) for o in OPCODES]
    + [sum(bit for name, bit in (("x", 1), ("y", 2), ("z", 4)) if name in s.reads) for s in ARRAY_OPS],
    dtype=np.uint8,
)
SAVES = np.array(
    [o.spec.differentiable and o.spec.saves for o in OPCODES] + [s.saves for s in ARRAY_OPS],
    dtype=np.uint8,
)


def _curves(o: Opcode) -> int:
    """The curvature bits (kernels.plans) of opcode o: which operand tangents its second-order
    rule reads besides the reverse rule on its adjoint's tangent (its nonzero second partials)."""
    if not o.spec.differentiable:
        return 0
    s, xr, yr = o.spec, o.reads_a, o.reads_b
    pairs = ((s.dxx, xr, xr), (s.dxy, xr, yr), (s.dxy, yr, xr), (s.dyy, yr, yr))
    return sum(1 << k for k, (d, target, source) in enumerate(pairs) if d != "0.0" and target and source)


# Per code: its curvature bits; whether a tangent sweep seeds it (an input, or scalar rows packed
# into an array: kernels.plans).
CURVES = np.array(
    [_curves(o) for o in OPCODES]
    + [sum(1 << ("xx", "xy", "yx", "yy").index(p) for p in s.curvature) for s in ARRAY_OPS],
    dtype=np.uint8,
)
SEEDED = np.array(
    [o.spec.name == "input" for o in OPCODES] + [s.name in ("array_input", "pack") for s in ARRAY_OPS],
    dtype=np.uint8,
)


def second_order_plan(
    op: np.ndarray, a: np.ndarray, b: np.ndarray, arr: tuple, every: bool = False
) -> np.ndarray:
    """The flags of each array row (kernels.plans) for the tangent and second-order sweeps of a
    Hessian-vector product on the tape (op, a, b; no run markers) with array table arr; with
    `every`, every flag of every row (a jvp's tangent sweep: every tangent)."""
    from . import plans

    if every:
        return np.full(len(arr[0]), plans.TANGENT | plans.SECOND, dtype=np.uint8)
    return plans.second_order_plan(
        op, a, b, arr[0], arr[1], arr[2], ARRAY_ROW, ARRAY_CODE["pack"], OPERAND_MASK, CURVES, SEEDED
    )


def array_table(code=(), x=(), y=(), meta=(), off=(), size=(), imeta=()) -> tuple[np.ndarray, ...]:
    """A tape's array table as the sweeps take it (empty for a tape without array rows)."""
    c = np.ascontiguousarray  # one memory layout: one compiled version of each sweep
    return (
        c(code, dtype=np.uint8), c(x, dtype=np.uint32), c(y, dtype=np.uint32), c(meta, dtype=np.int64),
        c(off, dtype=np.int64), c(size, dtype=np.int64), c(imeta, dtype=np.int64),
    )


def live_blocks(
    arr: tuple[np.ndarray, ...], op: np.ndarray, a: np.ndarray, seeded: Iterable[int] = (),
    stale: bool = False,
) -> np.ndarray:
    """The `live` bytes a reverse sweep takes (see the sweeps' array_reverse): one per array row,
    REACHED for the rows among `seeded` (tape rows) whose adjoint blocks the caller wrote; with
    `stale`, STALE for the input rows' (the caller zeroes them after the sweep: zero_stale, and
    need not before); every other block must be zero when the sweep starts."""
    live = np.zeros(len(arr[0]), dtype=np.uint8)
    if stale:
        sweeps().mark_stale(arr, live)
    for row in seeded:
        if op[row] == ARRAY_ROW:
            live[a[row]] = REACHED
    return live


NO_ARRAYS = array_table()
NO_ADDRESSES = np.zeros(0, dtype=np.int64)
NO_ADJOINTS = np.zeros(0)


def sweeps() -> types.ModuleType:
    """The compiled sweeps (generated and loaded on first use)."""
    global _module
    if _module is None:
        with _lock:
            if _module is None:
                from .blas import bind, bind_exp
                from .loader import load

                bind()
                module = load()
                bind_exp(module.exp_array.address)  # (before any kernel runs: they link to it)
                _module = module
    return _module


__all__ = [
    "ARRAY_CODE", "ARRAY_OPS", "ARRAY_ROW", "BY_NAME", "CODE", "NO_ADDRESSES", "NO_ADJOINTS", "NO_ARRAYS",
    "CURVES", "OPCODES", "OPERAND_MASK", "OPS", "OpSpec", "Opcode", "READS", "SAVES", "SEEDED", "array_table",
    "live_blocks",
    "second_order_plan", "sweeps",
]
