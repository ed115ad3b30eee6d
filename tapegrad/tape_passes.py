"""Tape optimization: passes that make a recorded tape smaller before it is replayed many times.

``tg.compile(f, optimize=True)`` runs them on every tape it records; :func:`optimize` runs them on
one :class:`~tapegrad.compiled.Variant`. In order:

``dce``
    Dead-code elimination: drops the rows no output reads, directly or through other rows.
    Input rows stay (the input vector keeps its layout), and so do guards and the rows they read:
    guards are how a replay notices that ``f`` would take another branch.
``fold``
    Constant folding: a row whose operands are all constant becomes a ``const`` row holding the
    value the tape's own forward sweep gives it (so, to the bit, the value a replay computed); a
    binary row with one constant operand reads it from the pool (its ``vc``/``cv`` opcode); a guard
    on a constant that holds is dropped.
``cse``
    Common-subexpression elimination: a row computing what an earlier row computes (same opcode,
    same operand rows, the same constants to the bit; ``add``, ``mul``, ``eq``, ``ne`` with their
    operands in either order) is replaced by that row. ``maximum`` and ``minimum`` are not taken as
    commutative: ``maximum(0.0, -0.0)`` is ``0.0`` and ``maximum(-0.0, 0.0)`` is ``-0.0``.
``reorder``
    Rows sorted by level (one more than their operands' highest), then by opcode, so that the
    sweeps meet long runs of one opcode; operands still come first. A tape is sorted when its
    opcodes follow no short pattern (:func:`mispredicted`: sorted, its branches are predictable)
    or when sorted, many more of its rows fall in unit runs (:mod:`kernels.runs`: rows of one op
    stepping through their operands, which the sweeps run as one vectorized loop each). A loop over a vector
    gains most: its rows for one op across all elements become one run.

``fold`` and ``cse`` also drop the rows they leave unread. Folding and common subexpressions are
found among the scalar rows; array rows go through every pass with their operand rows, ``pack``
lists and blocks renumbered. The constant pool is compacted at the end (equal constants shared).

Exactness: every pass keeps forward values (and tangents: ``jvp``, forward-mode jacobians)
identical to the bit, and after ``dce`` and ``fold`` gradients too. ``cse`` and ``reorder`` change
the order in which the reverse sweep sums a row's adjoint contributions (a merged row gets its
duplicate's readers' contributions added before it pushes them on; reordered readers add theirs in
another order), so gradients and Hessian-vector products then agree to rounding (a few ulps of the
contributions summed), not to the bit. Pass ``optimize=("dce", "fold")`` to keep them bit-identical.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import anomaly, kernels
from .compiled import Variant
from .kernels import ARRAY_CODE, ARRAY_ROW, CODE, OPCODES, OPERAND_MASK, runs
from .kernels import passes as kernel_passes
from .kernels.table import CV, VC, VV
from .tape import CONST, GUARD, INPUT, Tape, TapeArrays

PASSES = ("dce", "fold", "cse", "reorder")
# reorder sorts a tape's rows when more of them than this would miss the branch predictor (measured:
# a loop repeating a few ops ran 1.3x slower sorted, its sum being one long chain of dependent
# rows; a random mix of ops ran 2.3x faster)
REORDER_ABOVE = 0.1
# ... or when sorted, more rows than this share of the tape fall in runs (a run is one loop in the
# sweeps: the loop repeating a few ops that ran 1.3x slower sorted ran 1.5x faster so)
RUNS_GAIN = 0.1

# Per opcode: which operands are rows (a guard's a is one), which are constant pool indices
_KIND = np.array([o.kind for o in OPCODES])
_IS_GUARD = np.arange(len(OPCODES)) == GUARD
_READS_A = np.isin(_KIND, ["v", VV, VC]) | _IS_GUARD
_READS_B = np.isin(_KIND, [VV, CV])
_POOL_A = (_KIND == CV) | (np.arange(len(OPCODES)) == CONST)
_POOL_B = _KIND == VC
_PARAMS = np.array([o.spec.params for o in OPCODES])  # pool entries from b on (unary ops)
_FOLDABLE = _KIND != ""  # the ops of the table (not input, const, guard, array rows)
assert _PARAMS.max() <= 2, "value numbering keys hold two parameters"
# binary opcodes by operand kinds, and the ops whose operands may be swapped (bit-exact)
_VC_OF = np.arange(len(OPCODES))
_CV_OF = np.arange(len(OPCODES))
_COMMUTATIVE = np.zeros(len(OPCODES), dtype=bool)
for _o in OPCODES:
    if _o.kind in (VV, VC, CV):
        _VC_OF[_o.code] = CODE[(_o.spec.name, VC)]
        _CV_OF[_o.code] = CODE[(_o.spec.name, CV)]
        _COMMUTATIVE[_o.code] = _o.spec.name in ("add", "mul", "eq", "ne")
_PACK = ARRAY_CODE["pack"]
_ARRAY_CONST = ARRAY_CODE["array_const"]


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`optimize` did to one tape."""

    rows_before: int
    rows_after: int
    removed: dict[str, int]  # rows each pass removed (dropped, or left unread), by pass name
    folded: int  # rows the fold pass turned into constants
    merged: int  # rows the cse pass found to compute what an earlier row computes
    reordered: bool  # whether the reorder pass found the opcodes irregular enough to sort them
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict (``cf.stats()["optimize"]``)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Program:
    """A tape being optimized: the variant's arrays, and where each row and array entry came from."""

    op: np.ndarray  # uint8
    a: np.ndarray  # uint32
    b: np.ndarray  # uint32
    consts: np.ndarray
    arr: tuple[np.ndarray, ...]  # the array table: code, x, y, meta, off, size, imeta
    array_slots: int
    input_slots: np.ndarray  # int64
    out_slots: np.ndarray  # int64
    vals: np.ndarray  # each row's recorded value (for the tape's listing)
    origin: np.ndarray  # each row's row in the recorded tape
    entry_origin: np.ndarray  # each array table entry's entry in the recorded tape
    live: np.ndarray | None = None  # the rows _live gives, where known


def passes_of(optimize: bool | str | Sequence[str]) -> tuple[str, ...]:
    """The passes ``tg.compile(optimize=...)`` asks for: none, all (True), or the ones named."""
    if optimize is True:
        return PASSES
    if not optimize:
        return ()
    names = (optimize,) if isinstance(optimize, str) else tuple(optimize)
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise ValueError(f"tg.compile: unknown tape passes {unknown}; the passes are {list(PASSES)}")
    return names


def optimize(variant: Variant, passes: Sequence[str] = PASSES) -> tuple[Variant, Report]:
    """`variant` with the named passes applied (in the order of :data:`PASSES`), and a report.

    The new variant has its own frozen :class:`~tapegrad.tape.Tape` (listing, stats), which takes
    over the recorded tape's traced argument nodes and anomaly-mode source lines."""
    start = time.perf_counter()
    passes = passes_of(passes)
    p = _program(variant)
    removed: dict[str, int] = {}
    folded = merged = 0
    reordered = False
    for name in PASSES:
        if name not in passes:
            continue
        rows = len(p.op)
        if name == "dce":
            live = np.flatnonzero(_live(p))
            p = dataclasses.replace(_rebuild(p, live), live=np.ones(len(live), dtype=bool))
        elif name == "fold":
            p, folded = _fold(p)
        elif name == "cse":
            p, merged = _cse(p)
        else:
            p, reordered = _reorder(p)
        removed[name] = rows - len(p.op)
    p = _compact_pool(p)
    report = Report(variant.rows, len(p.op), removed, folded, merged, reordered, time.perf_counter() - start)
    return _variant(variant, p)._replace(optimized=report), report


# --------------------------------------------------------------------------- the passes
def _fold(p: _Program) -> tuple[_Program, int]:
    """Constant folding (see the module's docstring); the rows it folded."""
    starts, operands = _operands(p)
    constant = kernel_passes.constant_rows(starts, operands, p.op == CONST, _FOLDABLE[p.op])
    rows = np.flatnonzero(constant)
    value = np.zeros(len(p.op))
    value[rows] = _forward(p, rows)
    fold = constant & (p.op != CONST)
    folded = np.flatnonzero(fold)
    op, a, b = p.op.copy(), p.a.copy(), p.b.copy()
    op[folded], a[folded], b[folded] = CONST, len(p.consts) + np.arange(len(folded)), 0
    # every constant row is now a const row: a binary row with one constant operand reads its pool entry
    vv = np.flatnonzero((_KIND[op] == VV) & ~constant)
    first, second = vv[constant[a[vv]]], vv[constant[b[vv]]]
    op[first], a[first] = _CV_OF[op[first]], a[a[first]]
    op[second], b[second] = _VC_OF[op[second]], a[b[second]]
    guards = np.flatnonzero(op == GUARD)
    guards = guards[constant[a[guards]]]
    holding = guards[(value[a[guards]] != 0.0) == (b[guards] != 0)]
    vals = p.vals.copy()
    vals[folded] = value[folded]
    changed = dataclasses.replace(p, op=op, a=a, b=b, consts=np.concatenate([p.consts, value[folded]]),
                                  vals=vals, live=None)
    kept = np.ones(len(op), dtype=bool)
    kept[holding] = False
    kept = np.flatnonzero(kept)
    return _unread_dropped(p, _rebuild(changed, kept), kept), len(folded)


def _forward(p: _Program, rows: np.ndarray) -> np.ndarray:
    """The values of `rows` (rows that read no input: constants and what they make) by the forward
    sweep, run on a tape of those rows alone."""
    position = np.full(len(p.op), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    op, a, b = p.op[rows], p.a[rows], p.b[rows]
    reads_a, reads_b = _READS_A[op], _READS_B[op]
    a[reads_a], b[reads_b] = position[a[reads_a]], position[b[reads_b]]
    value = np.empty(len(rows))
    kernels.sweeps().forward(op, a, b, value, p.consts, np.zeros(0), 0, len(rows))
    return value


def _cse(p: _Program) -> tuple[_Program, int]:
    """Common-subexpression elimination by value numbering (see the module's docstring); the
    rows it merged into earlier ones."""
    op = p.op
    bits = p.consts.view(np.int64)  # constants compare by bit pattern: -0.0 is not 0.0
    key_op, key_a, key_b = op.astype(np.int64), p.a.astype(np.int64), np.zeros(len(op), dtype=np.int64)
    key_c = np.zeros(len(op), dtype=np.int64)
    slot_a, slot_b = _READS_A[op].copy(), _READS_B[op].copy()
    key_b[slot_b | (op == GUARD)] = p.b[slot_b | (op == GUARD)]
    pool_a, pool_b = _POOL_A[op], _POOL_B[op]
    key_a[pool_a], key_b[pool_b] = bits[p.a[pool_a]], bits[p.b[pool_b]]
    one, two = _PARAMS[op] >= 1, _PARAMS[op] >= 2
    key_b[one], key_c[two] = bits[p.b[one]], bits[p.b[two] + 1]
    swap = (_KIND[op] == CV) & _COMMUTATIVE[op]  # c + x is x + c: one key
    key_op[swap], key_a[swap], key_b[swap] = _VC_OF[op[swap]], p.b[swap], bits[p.a[swap]]
    slot_a[swap], slot_b[swap] = True, False
    eligible = (op < ARRAY_ROW) & (op != INPUT)
    commutative = _COMMUTATIVE[op] & (_KIND[op] == VV)
    number = kernel_passes.value_numbers(key_op, key_a, key_b, key_c, slot_a, slot_b, commutative, eligible)
    first = np.flatnonzero(number == np.arange(len(op)))
    return _unread_dropped(p, _rebuild(p, first, number), first), len(op) - len(first)


def _reorder(p: _Program) -> tuple[_Program, bool]:
    """Rows sorted by level, opcode, then where their first operand went (a topological order with
    runs of one opcode), if the tape's opcodes are irregular (see :func:`mispredicted`) or sorted
    they make longer unit runs (:mod:`kernels.runs`); and whether it reordered them."""
    p = _compact_pool(p)  # equal constants shared: a run's constant operand then stays in place
    level = kernel_passes.levels(*_operands(p))
    rows = np.arange(len(p.op))
    # within a level and an opcode, by constant operand, then by where the first operand row went:
    # rows of one expression across a vector then follow each other, not in turns (h * k[i] and
    # 2.0 * k[i]; 0.1 * x[i] and 0.2 * y[i])
    first = np.where(_READS_A[p.op], p.a, np.where(_READS_B[p.op], p.b.astype(np.int64), -1))
    constant = np.where(_POOL_A[p.op] & (_KIND[p.op] == CV), p.a.astype(np.int64),
                        np.where(_POOL_B[p.op], p.b.astype(np.int64), -1))
    order = kernel_passes.grouped_order(np.lexsort((rows, p.op, level)), level, p.op, first, constant)
    sorted_ = _rebuild(p, order)
    gain = runs.rows_in_runs(sorted_.op, sorted_.a, sorted_.b, unit=True) - runs.rows_in_runs(
        p.op, p.a, p.b, unit=True)
    if mispredicted(p.op) > REORDER_ABOVE or gain > RUNS_GAIN * len(p.op):
        return sorted_, True
    return p, False


def mispredicted(op: np.ndarray, history: int = 4) -> float:
    """The share of rows whose opcode differs from the one that followed the same `history`
    opcodes where they last occurred before: about how often a branch predictor misses the sweeps'
    dispatch on this tape. A loop repeating a few ops gives about 0, a random mix of ops about 1."""
    if len(op) <= history:
        return 0.0
    window = np.zeros(len(op) - history, dtype=np.int64)  # the history and the next opcode
    for k in range(history + 1):
        window = (window << 8) | op[k : len(op) - history + k]
    seen = window[np.argsort(window >> 8, kind="stable")]  # by context, in tape order
    hits = np.count_nonzero((seen[1:] >> 8 == seen[:-1] >> 8) & (seen[1:] == seen[:-1]))
    return 1.0 - hits / len(window)


def _unread_dropped(before: _Program, after: _Program, kept: np.ndarray) -> _Program:
    """`after` (the rows `kept` of `before`, rewritten) without the rows that were read in
    `before` and are not any more: what the pass disconnected, not what was dead already."""
    live = _live(after)
    gone = _live(before)[kept] & ~live
    return dataclasses.replace(_rebuild(after, np.flatnonzero(~gone)), live=live[~gone])


# --------------------------------------------------------------------------- rows and operands
def _live(p: _Program) -> np.ndarray:
    """Rows an output, an input slot or a guard reads (themselves included)."""
    if p.live is not None:
        return p.live
    roots = p.op == GUARD
    roots[p.out_slots] = True
    roots[p.input_slots] = True
    return kernel_passes.live_rows(*_operands(p), roots)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices start, ..., start + length - 1 of every range, concatenated."""
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total, dtype=np.int64)


def _array_rows(p: _Program) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The array rows, their entries in the array table and the entries' codes."""
    rows = np.flatnonzero(p.op >= ARRAY_ROW)
    entries = p.a[rows].astype(np.int64)
    return rows, entries, p.arr[0][entries]


def _operands(p: _Program) -> tuple[np.ndarray, np.ndarray]:
    """The rows each row reads, as CSR: operands[starts[i] : starts[i + 1]] for row i (a, then b;
    for an array row x, then y, or its pack list)."""
    reads_a, reads_b = _READS_A[p.op], _READS_B[p.op]
    count = reads_a.astype(np.int64) + reads_b
    arows, entries, code = _array_rows(p)
    has_x, has_y = (OPERAND_MASK[code] & 1) != 0, (OPERAND_MASK[code] & 2) != 0
    sizes = np.where(code == _PACK, p.arr[5][entries], 0)
    count[arows] = has_x.astype(np.int64) + has_y + sizes
    starts = np.zeros(len(p.op) + 1, dtype=np.int64)
    np.cumsum(count, out=starts[1:])
    operands = np.empty(starts[-1], dtype=np.int64)
    operands[starts[:-1][reads_a]] = p.a[reads_a]
    operands[starts[:-1][reads_b] + reads_a[reads_b]] = p.b[reads_b]
    first = starts[arows]
    operands[first[has_x]] = p.arr[1][entries[has_x]]
    operands[first[has_y] + has_x[has_y]] = p.arr[2][entries[has_y]]
    pack = sizes > 0
    operands[_ranges(first[pack], sizes[pack])] = p.arr[6][_ranges(p.arr[3][entries[pack]], sizes[pack])]
    return starts, operands


def _rebuild(p: _Program, order: np.ndarray, target: np.ndarray | None = None) -> _Program:
    """The rows `order` of `p`, in that order, every row reference renumbered; a row not kept
    that others read must have a `target` (the kept row standing for it) that is kept."""
    if target is None and len(order) == len(p.op) and np.all(order[1:] > order[:-1]):
        return p  # every row, in order
    new = np.full(len(p.op), -1, dtype=np.int64)
    new[order] = np.arange(len(order))
    if target is not None:
        new = new[target]
    op, a, b = p.op[order], p.a[order], p.b[order]
    arows = np.flatnonzero(op >= ARRAY_ROW)
    entries = a[arows].astype(np.int64)
    code, x, y, meta, off, size = (column[entries] for column in p.arr[:6])
    imeta = p.arr[6].copy()  # kept whole: the entries of dropped rows stay, unread
    has_x, has_y = (OPERAND_MASK[code] & 1) != 0, (OPERAND_MASK[code] & 2) != 0
    packed = _ranges(meta[code == _PACK], size[code == _PACK])
    reads_a, reads_b = _READS_A[op], _READS_B[op]
    renamed = [new[r] for r in (a[reads_a], b[reads_b], x[has_x], y[has_y], imeta[packed],
                                p.input_slots, p.out_slots)]
    assert all(np.all(r >= 0) for r in renamed), "a row that is read was dropped"
    a[reads_a], b[reads_b], x[has_x], y[has_y], imeta[packed], input_slots, out_slots = renamed
    block = op[arows] == ARRAY_ROW  # array_scalar rows write their scalar slot, no block
    off = np.where(block, np.cumsum(size * block) - size * block, 0)
    a[arows] = np.arange(len(arows))
    return _Program(
        op=op, a=a, b=b, consts=p.consts, arr=(code, x, y, meta, off, size, imeta),
        array_slots=int((size * block).sum()), input_slots=input_slots, out_slots=out_slots,
        vals=p.vals[order], origin=p.origin[order], entry_origin=p.entry_origin[entries],
    )


def _compact_pool(p: _Program) -> _Program:
    """The constant pool cut to the entries rows read, single constants shared by value (to the bit)."""
    op = p.op
    arows, entries, code = _array_rows(p)
    ew = np.minimum(code, len(OPCODES) - 1)  # elementwise entries' opcodes (others masked below)
    elementwise = code < len(OPCODES)
    x_pool = elementwise & (_KIND[ew] == CV)
    y_pool = elementwise & (_KIND[ew] == VC)
    y_params = np.where(elementwise, _PARAMS[ew], 0)
    data = code == _ARRAY_CONST
    x, y = p.arr[1].copy(), p.arr[2].copy()
    a, b = p.a.copy(), p.b.copy()
    pool_a, pool_b = _POOL_A[op], _POOL_B[op]
    params = _PARAMS[op]
    # single entries: one per distinct bit pattern
    single = np.concatenate([a[pool_a], b[pool_b], x[entries[x_pool]], y[entries[y_pool]]]).astype(np.int64)
    distinct, index = np.unique(p.consts.view(np.int64)[single], return_inverse=True)
    index = index.reshape(-1).astype(np.uint32)
    cuts = np.cumsum([pool_a.sum(), pool_b.sum(), x_pool.sum()])
    a[pool_a], b[pool_b], x[entries[x_pool]], y[entries[y_pool]] = np.split(index, cuts)
    # ranges (parameters, array data): copied whole, after the single entries
    with_params = params > 0
    starts = np.concatenate([b[with_params], y[entries[y_params > 0]], x[entries[data]]]).astype(np.int64)
    lengths = np.concatenate([params[with_params], y_params[y_params > 0], p.arr[5][entries[data]]])
    new_starts = (len(distinct) + np.cumsum(lengths) - lengths).astype(np.uint32)
    cuts = np.cumsum([with_params.sum(), (y_params > 0).sum()])
    b[with_params], y[entries[y_params > 0]], x[entries[data]] = np.split(new_starts, cuts)
    consts = np.concatenate([distinct.view(np.float64), p.consts[_ranges(starts, lengths)], [0.0]])
    return dataclasses.replace(p, a=a, b=b, consts=consts, arr=(p.arr[0], x, y, *p.arr[3:]))


# --------------------------------------------------------------------------- variants
def _program(v: Variant) -> _Program:
    """A variant's arrays, as a program to optimize (with its tape's recorded values, if any)."""
    recorded = v.tape.frozen
    return _Program(
        op=v.op, a=v.a, b=v.b, consts=v.consts, arr=v.arrays, array_slots=v.array_slots,
        input_slots=v.input_slots, out_slots=v.out_slots,
        vals=v.tape.arrays().vals if recorded else np.zeros(v.rows),
        origin=np.arange(v.rows), entry_origin=np.arange(len(v.arrays[0])),
    )


def _variant(v: Variant, p: _Program) -> Variant:
    """`v` with the program's rows, on a frozen tape of them."""
    arrays = (p.op >= ARRAY_ROW).any()
    table = kernels.array_table(*p.arr) if arrays else kernels.NO_ARRAYS
    return v._replace(
        tape=_tape(v.tape, p, table), op=p.op, run_op=runs.marked(p.op, p.a, p.b), a=p.a, b=p.b,
        consts=p.consts, input_slots=p.input_slots, out_slots=p.out_slots, rows=len(p.op),
        out_slot=int(p.out_slots[0]), arrays=table, array_slots=p.array_slots if arrays else 0,
    )


def _tape(old: Tape, p: _Program, table: tuple[np.ndarray, ...]) -> Tape:
    """A frozen tape holding the program's rows (what ``cf.tape`` lists and counts), with the
    recorded tape's inputs, array values and, in anomaly mode, source lines."""
    tape = Tape()
    # each recorded row's row here (inputs are kept; a loaded tape has no rows nor inputs)
    renamed = np.full(max(len(old), int(p.origin.max(initial=-1)) + 1), -1, dtype=np.int64)
    renamed[p.origin] = np.arange(len(p.origin))
    tape.inputs, tape.input_slots = list(old.inputs), renamed[old.input_slots].tolist()
    tape.input_width, tape.versions, tape.versioned = old.input_width, list(old.versions), list(old.versioned)
    tape.consts = p.consts[:-1].tolist()
    tape.blocks = np.stack([c.astype(np.int64) for c in table[:6]], axis=1).ravel().tolist()
    tape.imeta, tape.imeta_len, tape.array_slots = [table[6]], len(table[6]), p.array_slots
    vaddr = np.zeros(len(table[0]), dtype=np.int64)
    if old.frozen:
        vaddr = old.arrays().vaddr[p.entry_origin]
        tape.block_vals = [old.block_vals[j] for j in p.entry_origin]
        tape.vaddrs = vaddr.tolist()
    tape._arrays = TapeArrays(op=p.op, a=p.a, b=p.b, vals=p.vals, consts=p.consts, arr=table, vaddr=vaddr,
                              array_slots=p.array_slots)
    tape.frozen = tape.closed = True
    for node, slot in zip(old.inputs, tape.input_slots):
        if node._tape is old:  # a traced argument: it is this tape's input now
            node._tape, node._slot = tape, slot
    sources = anomaly._SOURCES.get(old)
    if sources:
        anomaly._SOURCES[tape] = {new: sources[int(o)] for new, o in enumerate(p.origin) if int(o) in sources}
    return tape


__all__ = ["PASSES", "REORDER_ABOVE", "Report", "mispredicted", "optimize", "passes_of"]
