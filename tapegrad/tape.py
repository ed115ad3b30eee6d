"""The Wengert tape: rows of (opcode, operand a, operand b), one value slot per row, a constant pool.

While recording, rows go to one plain Python list (the cheapest append there is): opcode, two
operands and the value, with a constant operand written inline; a sweep converts them once to
flat NumPy arrays (:meth:`Tape.arrays`), moving inline constants to the pool. Slots are SSA: every
row writes a fresh slot (for scalar rows, the slot equal to its row index), so any sweep can run
any number of times.

Array rows (to come) write a contiguous block of slots: the row/slot correspondence then becomes
a per-row slot offset (the cumulative widths), while operands stay slot numbers, so scalar rows,
the op table and the sweeps' scalar branches stay as they are.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .kernels import OPCODES
from .kernels.table import CV, VC

if TYPE_CHECKING:
    from .node import Node

_serials = itertools.count(1)

INPUT = 0  # opcode of the input row, see kernels.table
CONST = 1
GUARD = 2
# opcodes whose operand a (resp. b) is a constant, written inline while recording
_CONST_A = np.array([o.kind == CV for o in OPCODES], dtype=bool)
_CONST_B = np.array([o.kind == VC for o in OPCODES], dtype=bool)


class TapeArrays(NamedTuple):
    """A tape as flat arrays: what every sweep takes."""

    op: np.ndarray  # uint8 opcode per row
    a: np.ndarray  # uint32 operand per row
    b: np.ndarray  # uint32 operand per row
    vals: np.ndarray  # float64 value per slot
    consts: np.ndarray  # float64 constant pool


class Tape:
    """A recorded sequence of ops (one per thread while recording eagerly)."""

    __slots__ = (
        "serial", "rows", "consts", "inputs", "input_slots", "retained",
        "freed", "adj", "closed", "released", "frozen", "tracing", "_arrays", "__weakref__",
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
        self.closed = False  # a backward ran: new graphs start on a fresh tape
        self.released = False  # values dropped after a backward consumed every row
        self.tracing = False  # recording for tg.compile: values must not leave the tape
        self.frozen = False  # rows kept only as arrays (a tape that will not grow: tg.compile's)
        self._arrays: TapeArrays | None = None

    def __len__(self) -> int:
        """Number of rows (one slot each)."""
        return len(self._arrays.op) if (self.released or self.frozen) else len(self.rows) >> 2

    def add_traced_input(self, cls: type, value: float) -> Node:
        """A new node standing for an input of the tape (a traced argument of tg.compile)."""
        slot = len(self.rows) >> 2
        self.rows += (INPUT, len(self.inputs), 0, value)
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

    def add_input(self, node: Node) -> int:
        """Register `node` as an input of this tape; return its slot."""
        slot = len(self.rows) >> 2
        self.rows += (INPUT, len(self.inputs), 0, float(node._v))
        self.inputs.append(node)
        self.input_slots.append(slot)
        node._reg = (self, slot)
        return slot

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
            return cached._replace(vals=np.zeros(len(cached.op)))
        if cached is not None and 4 * len(cached.op) == len(self.rows):
            return cached
        rows = np.array(self.rows, dtype=np.float64).reshape(-1, 4)
        op = rows[:, 0].astype(np.uint8)
        a, b = rows[:, 1].copy(), rows[:, 2].copy()
        const_a, const_b = _CONST_A[op], _CONST_B[op]
        inline_a, inline_b = a[const_a], b[const_b]
        start = len(self.consts)
        a[const_a] = np.arange(start, start + len(inline_a))
        start += len(inline_a)
        b[const_b] = np.arange(start, start + len(inline_b))
        consts = np.concatenate([np.array(self.consts, dtype=np.float64), inline_a, inline_b, [0.0]])
        arrays = TapeArrays(
            op=op,
            a=a.astype(np.uint32),
            b=b.astype(np.uint32),
            vals=rows[:, 3].copy(),
            consts=consts,
        )
        self._arrays = arrays
        return arrays

    def opcode(self, slot: int) -> int:
        """Opcode of the row that wrote `slot`."""
        return int(self._arrays.op[slot] if (self.released or self.frozen) else self.rows[4 * slot])

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
        self._arrays = self.arrays()._replace(vals=np.zeros(0))
        self.rows, self.consts = [], []
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
