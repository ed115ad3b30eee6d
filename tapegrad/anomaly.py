"""``tg.detect_anomaly()``: find the first op whose value or adjoint is NaN or infinite.

Inside the context every op recorded eagerly keeps the line of the user's code that recorded it,
and its value is checked: the first op that makes a NaN or an infinity out of finite operands
raises :class:`AnomalyError`, naming the op, its operands and that line. A backward checks each
tape's adjoints after its sweep: the first row, in sweep order, whose adjoint is not finite is
reported with the row whose reverse rule produced it. Recording for ``tg.compile`` is checked the
same way, and so are replays in the mode (``cf(x)``, ``cf.value_and_grad``, ``cf.grad``: values,
then adjoints). Outside the mode recording costs nothing extra (the recorder's hook runs only on a
full tape). As torch's, the mode is global, and nests.
"""

from __future__ import annotations

import linecache
import os
import sys
import threading
import weakref
from types import FrameType
from typing import Any

import numpy as np

from . import tape as tape_module
from .kernels import ARRAY_CODE, ARRAY_OPS, ARRAY_ROW, OPCODES, OPERAND_MASK
from .state import TAPE_ROWS_LIMIT

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tape -> {row: source line}
_lock = threading.Lock()
_depth = 0
_DATA = (ARRAY_CODE["array_input"], ARRAY_CODE["array_const"])  # a user's data, not an op's result
_PACK = ARRAY_CODE["pack"]
_INPUTS = ("input (opcode 0)", "array_input")


class AnomalyError(RuntimeError):
    """An op produced a NaN or an infinity from finite operands (forward or backward)."""


class detect_anomaly:
    """``with tg.detect_anomaly():`` check every recorded value and every backward's adjoints
    for NaN and infinity, and name the first op that produced one, with its source line."""

    def __enter__(self) -> detect_anomaly:
        from . import recorder  # imported late: the recorder imports the engine, which imports this

        global _depth
        with _lock:
            _depth += 1
            if _depth == 1:
                recorder.set_row_hook(_scalar_row)
                tape_module.ROW_HOOK = _array_row
        return self

    def __exit__(self, *exc: object) -> None:
        from . import recorder

        global _depth
        with _lock:
            _depth -= 1
            if _depth == 0:
                recorder.set_row_hook(None)
                tape_module.ROW_HOOK = None


def is_anomaly_enabled() -> bool:
    """Whether a detect_anomaly block is open (in any thread)."""
    return _depth > 0


def _user_line() -> str:
    """file:line: code of the innermost frame outside tapegrad."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or frame.f_code.co_filename.startswith("<tapegrad")):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    name, line = frame.f_code.co_filename, frame.f_lineno
    return f"{name}:{line}: {linecache.getline(name, line).strip()}"


def _finite(value: Any) -> bool:
    return bool(np.all(np.isfinite(value)))


def _value(tape: Any, row: int) -> Any:
    """Row `row`'s value while recording: a float, or its array."""
    rows = tape.rows
    if rows[4 * row] == ARRAY_ROW:
        return tape.block_value(int(rows[4 * row + 1]))
    return rows[4 * row + 3]


def _describe(tape: Any, row: int) -> str:
    rows = tape.rows
    op = int(rows[4 * row])
    if op < ARRAY_ROW:
        return f"{OPCODES[op].spec.name} (opcode {op}, {OPCODES[op].kind or 'structural'})"
    code = tape.blocks[6 * int(rows[4 * row + 1])]
    name = OPCODES[code].spec.name if code < ARRAY_ROW else ARRAY_OPS[code - ARRAY_ROW - 2].name
    return f"{name} (array row, code {code})"


def _source(tape: Any, row: int) -> str:
    return _SOURCES.get(tape, {}).get(row, "a line outside detect_anomaly")


def _operands(tape: Any, row: int) -> list[tuple[str, Any]]:
    """(what, value) of each operand of a row while recording: rows, constants, parameters."""
    rows = tape.rows
    op = int(rows[4 * row])
    if op >= ARRAY_ROW:
        j = 6 * int(rows[4 * row + 1])
        code, x, y = tape.blocks[j : j + 3]
        mask = OPERAND_MASK[code]
        return [(f"row {r}", _value(tape, r)) for bit, r in ((1, x), (2, y)) if mask & bit]
    spec, a, b = OPCODES[op], rows[4 * row + 1], rows[4 * row + 2]
    out = []
    if spec.reads_a:
        out.append((f"row {a}", _value(tape, int(a))))
    elif spec.kind == "cv":
        out.append(("constant", a))
    if spec.reads_b:
        out.append((f"row {b}", _value(tape, int(b))))
    elif spec.kind == "vc":
        out.append(("constant", b))
    elif spec.kind == "v" and spec.spec.params:
        out += [("parameter", tape.consts[int(b) + k]) for k in range(spec.spec.params)]
    return out


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        bad = np.flatnonzero(~np.isfinite(value))
        where = f", first non-finite at flat index {bad[0]}" if len(bad) else ""
        return f"an array of shape {value.shape}{where}"
    return repr(float(value))


def _check(tape: Any, row: int) -> None:
    _SOURCES.setdefault(tape, {})[row] = _user_line()
    value = _value(tape, row)
    if value is None or _finite(value):
        return
    operands = _operands(tape, row)
    if all(_finite(v) for _, v in operands):
        listed = ", ".join(f"{what} = {_show(v)}" for what, v in operands) or "none"
        raise AnomalyError(
            f"detect_anomaly: {_describe(tape, row)} made {_show(value)} from finite operands ({listed}), "
            f"recorded at {_source(tape, row)}"
        )


def _scalar_row(tape: Any, slot: int) -> None:
    from .recorder import tape_full

    if slot >= TAPE_ROWS_LIMIT:
        tape_full(tape, slot)
    _check(tape, slot)


def _array_row(tape: Any, row: int) -> None:
    if tape.blocks[6 * int(tape.rows[4 * row + 1])] not in _DATA:
        _check(tape, row)


def check_adjoints(tape: Any, arrays: Any, adj: np.ndarray, aadj: np.ndarray) -> None:
    """After a backward sweep of `tape`: raise AnomalyError at the first row (in sweep order,
    the last recorded) whose adjoint is NaN or infinite, naming the row whose reverse rule made it."""
    op, a, b = arrays.op, arrays.a, arrays.b
    code, ax, ay, ameta, aoff, asize, imeta = arrays.arr
    bad = ~np.isfinite(adj)
    for row in np.flatnonzero(op == ARRAY_ROW):
        j = a[row]  # array data has no adjoint (a replay never writes its block)
        bad[row] = code[j] != _DATA[1] and not _finite(aadj[aoff[j] : aoff[j] + asize[j]])
    rows = np.flatnonzero(bad)
    if len(rows) == 0:
        return
    r = int(rows[-1])
    readers = []
    for c in range(r + 1, len(op)):
        if op[c] >= ARRAY_ROW:
            j = a[c]
            mask = OPERAND_MASK[code[j]]
            packs = code[j] == _PACK and r in imeta[ameta[j] : ameta[j] + asize[j]]
            if (mask & 1 and ax[j] == r) or (mask & 2 and ay[j] == r) or packs:
                readers.append(c)
        elif (OPCODES[op[c]].reads_a and a[c] == r) or (OPCODES[op[c]].reads_b and b[c] == r):
            readers.append(c)
    where = "an input of the tape" if _name(op, code, a, r) in _INPUTS else f"recorded at {_source(tape, r)}"
    what = f"the adjoint of row {r}, {_name(op, code, a, r)} ({where}), is not finite"
    if not readers:
        raise AnomalyError(f"detect_anomaly: {what}: it is a seed of the backward (its gradient argument)")
    made = "; ".join(f"row {c}, {_name(op, code, a, c)} recorded at {_source(tape, c)}" for c in readers)
    raise AnomalyError(
        f"detect_anomaly: {what}: its reverse rule in {made} returned it from a finite adjoint"
    )


def _name(op: np.ndarray, code: np.ndarray, a: np.ndarray, row: int) -> str:
    if op[row] < ARRAY_ROW:
        return f"{OPCODES[op[row]].spec.name} (opcode {op[row]})"
    c = code[a[row]]
    return OPCODES[c].spec.name if c < ARRAY_ROW else ARRAY_OPS[c - ARRAY_ROW - 2].name


def _row_operands(op: np.ndarray, a: np.ndarray, b: np.ndarray, arr: tuple, r: int) -> list[int]:
    """The rows row r of a frozen tape reads."""
    if op[r] < ARRAY_ROW:
        spec = OPCODES[op[r]]
        return [int(v) for v, reads in ((a[r], spec.reads_a), (b[r], spec.reads_b)) if reads]
    code, ax, ay, ameta, _, asize, imeta = arr
    j = a[r]
    if code[j] == _PACK:
        return [int(v) for v in imeta[ameta[j] : ameta[j] + asize[j]]]
    mask = OPERAND_MASK[code[j]]
    return [int(v) for bit, v in ((1, ax[j]), (2, ay[j])) if mask & bit]


def check_replay(variant: Any, vals: np.ndarray, arena: np.ndarray, adj: np.ndarray | None = None,
                 aadj: np.ndarray | None = None) -> None:
    """After a replay of a compiled tape: raise AnomalyError at the first row whose value is NaN
    or infinite while its operands are finite, then (with adjoints) as check_adjoints does."""
    op, a, b, arr = variant.op, variant.a, variant.b, variant.arrays
    code, _, _, _, aoff, asize, _ = arr
    bad = ~np.isfinite(vals)
    for row in np.flatnonzero(op == ARRAY_ROW):
        j = a[row]
        bad[row] = not _finite(arena[aoff[j] : aoff[j] + asize[j]])
    for r in (int(row) for row in np.flatnonzero(bad)):
        data = op[r] in (0, 1) or (op[r] == ARRAY_ROW and code[a[r]] in _DATA)
        operands = _row_operands(op, a, b, arr, r)
        if not data and not bad[operands].any():
            name = _name(op, code, a, r)
            raise AnomalyError(
                f"detect_anomaly: replaying row {r}, {name}, made a NaN or an infinity from finite operands "
                f"(rows {operands}), recorded at {_source(variant.tape, r)}"
            )
    if adj is not None:
        check_adjoints(variant.tape, _Frozen(op, a, b, arr), adj, aadj if aadj is not None else np.zeros(0))


class _Frozen:
    """The arrays of a compiled tape, as check_adjoints reads them."""

    def __init__(self, op: np.ndarray, a: np.ndarray, b: np.ndarray, arr: tuple) -> None:
        self.op, self.a, self.b, self.arr = op, a, b, arr
