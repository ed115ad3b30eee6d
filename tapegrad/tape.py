"""The Wengert tape: rows of (opcode, operand a, operand b), one value slot per row, a constant pool.

While recording, rows go to one plain Python list (the cheapest append there is): opcode, two
operands and the value, with a constant operand written inline; a sweep converts them once to
flat NumPy arrays (:meth:`Tape.arrays`), moving inline constants to the pool. Slots are SSA: every
row writes a fresh slot (for scalar rows, the slot equal to its row index), so any sweep can run
any number of times.

An array op is one row too (opcode ``array``, or ``array_scalar`` for a 0-d result, which gets
the row's scalar slot). Its operand a indexes the tape's **array table**: the op's own code, its
operand rows x and y (or constant pool indices), the start of its entry in the int64 side table
(shapes, strides, index maps) and the offset and size of its block of array slots. While
recording eagerly an array row's values are the NumPy array NumPy computed (the tensor's own
data, held once); the sweeps reach it by address.
"""

from __future__ import annotations

import ctypes
import itertools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import kernels, memory
from .kernels import ARRAY_CODE, ARRAY_ROW, OPCODES
from .kernels.table import CV, VC

if TYPE_CHECKING:
    from .node import Node

_serials = itertools.count(1)

INPUT = 0  # opcode of the input row, see kernels.table
CONST = 1
GUARD = 2
ARRAY_SCALAR = ARRAY_ROW + 1
# A tape whose array values reach this many float64s (256 MB) takes no new graphs: a loop that
# records without ever calling backward lets old graphs go with their tensors
ARRAY_SLOTS_LIMIT = 1 << 25
# opcodes whose operand a (resp. b) is a constant, written inline while recording
_CONST_A = np.array([o.kind == CV for o in OPCODES], dtype=bool)
_CONST_B = np.array([o.kind == VC for o in OPCODES], dtype=bool)
_NO_VALUES = np.zeros(0)
_READS = tuple(kernels.READS.tolist())  # per code: the values its reverse rule reads (a tuple: fast)
_OPERAND_ROWS = tuple(kernels.OPERAND_MASK.tolist())  # per code: which operands are rows


class TapeArrays(NamedTuple):
    """A tape as flat arrays: what every sweep takes."""

    op: np.ndarray  # uint8 opcode per row
    a: np.ndarray  # uint32 operand per row
    b: np.ndarray  # uint32 operand per row
    vals: np.ndarray  # float64 value per slot
    consts: np.ndarray  # float64 constant pool
    arr: tuple[np.ndarray, ...]  # the array table (kernels.array_table)
    vaddr: np.ndarray  # address of each array row's value block (0: not read by any rule, or released)
    array_slots: int  # slots of all array blocks: the length of their adjoint array


# called with (tape, row) after each array row in anomaly mode (tapegrad.anomaly)
ROW_HOOK: Callable[[Tape, int], None] | None = None


def _data_offset() -> int | None:
    """Where NumPy's array struct holds the data pointer (PyArrayObject_fields.data), found on a
    probe array: reading it there costs 0.15 us, ``__array_interface__`` 1.3 us (an array row's
    values are read by address). None if not found (another object layout): the slow way then."""
    probe = np.zeros(1)
    want = probe.__array_interface__["data"][0]
    for offset in range(8, 64, 8):  # within the struct, which is larger
        if ctypes.c_void_p.from_address(id(probe) + offset).value == want:
            return offset
    return None


_DATA_OFFSET = _data_offset()


def address(value: np.ndarray) -> int:
    """The address of an array's first element."""
    if _DATA_OFFSET is None:
        return int(value.__array_interface__["data"][0])
    return ctypes.c_void_p.from_address(id(value) + _DATA_OFFSET).value or 0


class Tape:
    """A recorded sequence of ops (one per thread while recording eagerly)."""

    __slots__ = (
        "serial", "rows", "consts", "inputs", "input_slots", "retained",
        "freed", "adj", "closed", "full", "released", "frozen", "tracing", "_arrays", "__weakref__",
        "blocks", "block_vals", "vaddrs", "imeta", "imeta_len", "array_slots", "input_width", "versions",
        "versioned", "operand_values",
    )

    def __init__(self) -> None:
        self.serial = next(_serials)  # creation order: foreign inputs come from other tapes
        # op, a, b, value of each row, interleaved (a constant operand written inline)
        self.rows: list[float] = []
        self.consts: list[float] = []  # constant pool for op parameters (clamp's bounds)
        self.inputs: list[Node] = []  # tensors read by `input` rows: leaves, or tensors of other tapes
        self.input_slots: list[int] = []
        self.retained: list[Node] = []  # non-leaf tensors whose .grad is kept (retain_grad)
        self.freed: np.ndarray | None = None  # rows whose saved values a backward released
        self.adj: np.ndarray | None = None  # adjoints of the backward passes so far (Value.grad)
        self.closed = False  # a backward ran, or full: new graphs start on a fresh tape
        self.full = False  # a size limit reached (no backward yet): takes only rows continuing a graph
        self.released = False  # values dropped after a backward consumed every row
        self.tracing = False  # recording for tg.compile: values must not leave the tape
        self.frozen = False  # rows kept only as arrays (a tape that will not grow: tg.compile's)
        self._arrays: TapeArrays | None = None
        # the array table: code, x, y, side-table start, block offset, size per array row
        self.blocks: list[int] = []
        # each array row's values (None: 0-d); a weak reference to values no reverse rule reads
        self.block_vals: list[Any] = []
        self.vaddrs: list[int] = []  # the address of each held value (0: not held, or 0-d)
        self.operand_values: dict[int, np.ndarray] = {}  # the arrays of the next row's operand rows
        self.imeta: list[np.ndarray] = []  # entries of the int64 side table
        self.imeta_len = 0
        self.array_slots = 0
        self.input_width = 0  # length of the input vector the input rows read (an array: its size)
        self.versions: list[tuple[Node, int]] = []  # array inputs and their data's version when read
        self.versioned: list[int] = []  # the index in `inputs` of each of them

    @property
    def _swept(self) -> TapeArrays:
        """The arrays of a released or frozen tape, which keeps its rows only as arrays."""
        assert self._arrays is not None
        return self._arrays

    def __len__(self) -> int:
        """Number of rows (one slot each)."""
        return len(self._swept.op) if (self.released or self.frozen) else len(self.rows) >> 2

    def add_traced_input(self, cls: type[Node], value: float, index: int) -> Node:
        """A new node standing for entry `index` of the input vector (a traced argument of
        tg.compile, or an element of one)."""
        slot = len(self.rows) >> 2
        self.rows += (INPUT, index, 0, value)
        node = cls._leaf(value, True)
        node._tape, node._slot = self, slot
        self.inputs.append(node)
        self.input_slots.append(slot)
        return node

    def add_const(self, value: float) -> int:
        """A row holding a constant (a number the traced function returned, say); its slot."""
        slot = len(self.rows) >> 2
        self.rows += (CONST, len(self.consts), 0, value)
        self.consts.append(value)
        return slot

    def add_array(self, code: int, x: int, y: int, meta: np.ndarray | None, value: Any) -> int:
        """Record an array op (code of kernels.table, operand rows or constant indices x, y, its
        side-table entry) whose result is `value`: an array, or a float for a 0-d result."""
        row = len(self.rows) >> 2
        m = self.imeta_len
        if meta is not None:
            self.imeta.append(meta)
            self.imeta_len += len(meta)
        reads = _READS[code]
        if value.__class__ is np.ndarray:  # C-ordered float64: its memory is the block
            size = value.size
            self.rows += (ARRAY_ROW, len(self.block_vals), 0, 0.0)
            self.blocks += (code, x, y, m, self.array_slots, size)
            # held while a reverse rule may read it (this row's, or a later reader's: _hold)
            if reads & 4 or self.tracing:
                self.block_vals.append(value)
                self.vaddrs.append(address(value))
            else:
                self.block_vals.append(weakref.ref(value))
                self.vaddrs.append(0)
            self.array_slots += size
            if self.array_slots >= ARRAY_SLOTS_LIMIT and not self.tracing:
                self.closed = self.full = True  # the thread's next graph starts a new tape
        else:
            self.rows += (ARRAY_SCALAR, len(self.block_vals), 0, value)
            self.blocks += (code, x, y, m, 0, 1)
            self.block_vals.append(None)
            self.vaddrs.append(0)
        if reads & 1:
            self._hold(x)
        if reads & 2:
            self._hold(y)
        if _OPERAND_ROWS[code]:  # (a row of no operands, a registration, leaves them for its reader)
            self.operand_values.clear()
        if ROW_HOOK is not None:
            ROW_HOOK(self, row)
        return row

    def _hold(self, row: int) -> None:
        """Keep the values of array row `row` (an operand whose values a reverse rule reads)."""
        if self.rows[4 * row] == ARRAY_ROW:
            j = int(self.rows[4 * row + 1])
            held = self.block_vals[j]
            if held.__class__ is weakref.ref:
                # the reader's operand (its array may be another view of the data, a reshape's)
                value = self.operand_values.get(row)
                if value is None:
                    value = held()
                if value is None:
                    raise RuntimeError(f"tapegrad: the values of row {row} were dropped before a reader")
                self.block_vals[j] = value
                self.vaddrs[j] = address(value)

    def block_value(self, j: int) -> np.ndarray | None:
        """The values of array table entry j while recording, if still held (None: a 0-d result,
        or values no reverse rule reads whose tensor is gone)."""
        held = self.block_vals[j]
        return held() if held.__class__ is weakref.ref else held

    def add_array_const(self, value: np.ndarray) -> int:
        """A row holding array data that needs no gradient (read by the reverse rules); its row.
        A tape that will be replayed keeps the data in its constant pool."""
        offset = len(self.consts)
        if self.tracing:
            self.consts += value.reshape(-1).tolist()
        return self.add_array(ARRAY_CODE["array_const"], offset, 0, None, value)

    def add_pack(self, rows: list[int], value: np.ndarray) -> int:
        """A row making one array of scalar rows (traced scalars used as an array); its row."""
        return self.add_array(ARRAY_CODE["pack"], 0, 0, np.array(rows, dtype=np.int64), value)

    def block(self, row: int) -> tuple[int, int]:
        """[start, stop) of array row `row`'s block in the array slots."""
        j = 6 * int(self.rows[4 * row + 1] if not (self.released or self.frozen) else self._swept.a[row])
        return self.blocks[j + 4], self.blocks[j + 4] + self.blocks[j + 5]

    def add_input(self, node: Node) -> int:
        """Register `node` as an input of this tape; return its slot."""
        if node._v.__class__ is np.ndarray:
            slot = self.add_array(ARRAY_CODE["array_input"], self.input_width, 0, None, node._v)
            self.input_width += node._v.size
            self.versions.append((node, getattr(node, "_version", 0)))
            self.versioned.append(len(self.inputs))
        else:
            slot = len(self.rows) >> 2
            self.rows += (INPUT, self.input_width, 0, float(node._v))
            self.input_width += 1
        self.inputs.append(node)
        self.input_slots.append(slot)
        node._reg = (self.serial, slot)  # (not the tape: a leaf must not keep it alive)
        return slot

    def check_versions(self, reached: np.ndarray) -> None:
        """Refuse the adjoints of a sweep that read array inputs (rows `reached`) updated in place
        since the tape read them (an optimizer step before a second backward): their saved
        values are gone, as in torch. Only the inputs the sweep reached are checked."""
        slots = self.input_slots
        for (node, version), k in zip(self.versions, self.versioned):
            if getattr(node, "_version", 0) != version and reached[slots[k]]:
                self.closed, self.full = True, False  # the thread's next graph starts on a fresh tape
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an "
                    f"inplace operation: a tensor of shape {node._v.shape} is at version "
                    f"{getattr(node, '_version', 0)}; expected version {version} instead."
                )

    def arrays(self) -> TapeArrays:
        """The rows recorded so far as flat arrays (converted once, reused while nothing is added).

        After :meth:`release` the values are zeros: every row that reads saved values is marked
        freed, and a sweep stops at such a row before reading them."""
        cached = self._arrays
        if self.frozen:
            assert cached is not None
            return cached
        if self.released:
            assert cached is not None
            return cached._replace(
                vals=np.zeros(len(cached.op)), vaddr=np.zeros_like(cached.vaddr)
            )
        if cached is not None and 4 * len(cached.op) == len(self.rows):
            return cached
        memory.check_sweep(len(self.rows) >> 2, self.array_slots)
        sweeps = kernels.sweeps()
        rows, pool = np.array(self.rows, dtype=np.float64), np.array(self.consts, dtype=np.float64)
        if self.blocks:
            op, a, b, vals, consts, *columns = sweeps.unpack_tape(
                rows, pool, _CONST_A, _CONST_B, np.array(self.blocks, dtype=np.int64)
            )
            imeta = np.concatenate(self.imeta, dtype=np.int64) if self.imeta else kernels.NO_ARRAYS[6]
            arr = (*columns, imeta)
            vaddr = np.array(self.vaddrs, dtype=np.int64)
        else:
            op, a, b, vals, consts = sweeps.unpack_rows(rows, pool, _CONST_A, _CONST_B)
            arr, vaddr = kernels.NO_ARRAYS, kernels.NO_ADDRESSES
        arrays = TapeArrays(op=op, a=a, b=b, vals=vals, consts=consts, arr=arr, vaddr=vaddr,
                            array_slots=self.array_slots)
        self._arrays = arrays
        return arrays

    def opcode(self, slot: int) -> int:
        """Opcode of the row that wrote `slot`."""
        return int(self._swept.op[slot] if (self.released or self.frozen) else self.rows[4 * slot])

    def op_name(self, slot: int) -> str:
        """Name of the op of the row that wrote `slot` (an array row's own op: its code)."""
        op = self.opcode(slot)
        if op < ARRAY_ROW:
            return OPCODES[op].spec.name
        if self.released or self.frozen:
            code = int(self._swept.arr[0][self._swept.a[slot]])
        else:
            code = self.blocks[6 * int(self.rows[4 * slot + 1])]
        return OPCODES[code].spec.name if code < ARRAY_ROW else kernels.ARRAY_OPS[code - ARRAY_ROW - 2].name

    def to_dot(self, max_nodes: int = 500) -> str:
        """Graphviz DOT text of the tape's rows (see :mod:`tapegrad.viz`)."""
        from .viz import tape_to_dot

        return tape_to_dot(self, None, max_nodes)

    def freed_rows(self) -> np.ndarray:
        """Per-row flags of released saved values, grown to the tape's length."""
        n = len(self)
        if self.freed is None or len(self.freed) < n:
            grown = np.zeros(n, dtype=np.uint8)
            if self.freed is not None:
                grown[: len(self.freed)] = self.freed
            self.freed = grown
        return self.freed

    def freeze(self) -> TapeArrays:
        """Keep the rows only as arrays (17 bytes a row instead of the recording list's ~110):
        for a tape that will not grow, like one recorded by tg.compile."""
        arrays = self.arrays()
        self.rows, self.closed, self.frozen = [], True, True
        return arrays

    def release(self) -> None:
        """Drop the values and the recording lists, keeping the rows as compact arrays (9 bytes a
        row): a backward consumed every row and freed every row that reads saved values."""
        arrays = self.arrays()
        self._arrays = TapeArrays(arrays.op, arrays.a, arrays.b, _NO_VALUES, arrays.consts, arrays.arr,
                                  np.zeros(len(arrays.vaddr), dtype=np.int64), arrays.array_slots)
        self.rows, self.consts, self.block_vals, self.vaddrs = [], [], [], []
        self.released = True

    # ----------------------------------------------------------------------------- inspection
    def listing(self, limit: int | None = 50) -> str:
        """The rows as a Wengert list (``v3 = mul(v1, v2)``), with values and, after a backward,
        adjoints. Shows the first and last rows when there are more than `limit`."""
        from .listing import wengert_listing

        return wengert_listing(self, limit)

    def stats(self) -> dict[str, Any]:
        """Rows by op, slots, constants, inputs, guards and bytes held."""
        ops = self.arrays().op if len(self) else np.zeros(0, np.uint8)
        counts = np.bincount(ops, minlength=len(OPCODES))
        by_op: dict[str, int] = {}
        for oc in OPCODES:
            if counts[oc.code]:
                by_op[oc.spec.name] = by_op.get(oc.spec.name, 0) + int(counts[oc.code])
        rows = len(self)
        return {
            "rows": rows,
            "slots": rows,
            "constants": len(self.arrays().consts) - 1 if rows else 0,
            "inputs": len(self.inputs),
            "guards": by_op.get("guard", 0),
            "by_op": by_op,
            "bytes": rows * (1 + 4 + 4 + 8) + 8 * len(self.consts),  # as arrays
        }

    def __repr__(self) -> str:
        return f"<Tape #{self.serial}: {len(self)} rows>"

    def __str__(self) -> str:
        return f"{self!r}\n{self.listing()}"
