"""The base class of traced scalars (``Tensor`` and ``Value``) and the thread's current tape."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .state import PAUSED, TAPE_ROWS_LIMIT, get_tape, restore_tape, set_tape, tape_ref
from .tape import GUARD, Tape

if TYPE_CHECKING:  # the op methods and operators install_ops adds at runtime (tapegrad.stubs)
    from ._op_methods import OpMethods as _OpMethods
else:
    _OpMethods = object


_N = TypeVar("_N", bound="Node")


class Node(_OpMethods):
    """A traced scalar: a value, and (once recorded) the tape and slot that produced it."""

    __slots__ = ("_v", "_tape", "_slot", "_reg", "_rg", "_grad")

    _v: Any
    _tape: Tape | None  # tape of the row that produced this node; None for leaves
    _slot: int
    _reg: tuple[int, int] | None  # (tape serial, slot) where this node was last registered as an input
    _rg: bool  # requires grad
    _grad: Any

    @classmethod
    def _leaf(cls: type[_N], value: Any, requires_grad: bool = False) -> _N:
        node = object.__new__(cls)
        node._v = value
        node._tape = None
        node._slot = -1
        node._reg = None
        node._rg = requires_grad
        node._grad = None
        return node

    def _accumulate_grad(self, g: Any) -> None:
        """Add `g` to this leaf's gradient (each node class keeps its own kind of .grad)."""
        raise NotImplementedError

    def _register(self, tape: Tape) -> int:
        """The row of this node as an operand on `tape`, which has not seen it: an input row."""
        return tape.add_input(self)

    @property
    def is_leaf(self) -> bool:
        """True for nodes created by the user, and for every node that does not require grad."""
        return self._tape is None or not self._rg

    @property
    def tape(self) -> Tape | None:
        """The tape that recorded this node (None for leaves)."""
        return self._tape

    def __bool__(self) -> bool:
        truth = bool(self._v)
        if self._tape is not None or self._rg:
            record_guard(self, truth)
        return truth

    def _untraced(self, what: str, instead: str) -> Any:
        """The value, or a TracingError if it would leave a tape recorded for tg.compile."""
        if self._tape is not None and self._tape.tracing:
            raise TracingError(
                f"{what} of a traced value while recording for tg.compile: the tape would not "
                f"follow the value at other inputs. {instead}"
            )
        return self._v

    def __float__(self) -> float:
        return float(self._untraced("float()", KEEP_TRACED))

    def __int__(self) -> int:
        return int(self._untraced("int()", KEEP_TRACED))

    def __index__(self) -> int:
        v = self._untraced("using as an index", "Index with Python integers.")
        if isinstance(v, (bool, int)):
            return int(v)
        raise TypeError("only integer tensors can be converted to an index")

    __hash__ = object.__hash__


KEEP_TRACED = (
    "Keep it a tensor and use tapegrad's functions on it (tg.sqrt, tg.maximum, tg.clamp, ...); "
    "for a branch use tg.where(condition, a, b), or a Python `if` on a comparison (it records a "
    "guard, and tg.compile records again when a replay would take the other branch)."
)


class TracingError(RuntimeError):
    """A traced value was turned into a Python number while recording for tg.compile."""


def current_tape(*operands: Any) -> Tape | None:
    """The calling thread's tape for a new row reading `operands`, or None while recording is
    paused (``no_grad``). A fresh tape starts when there is none, or it is closed (by a backward),
    or full. A full tape still takes the rows of a graph begun on it (a row reading one of its
    nodes): a graph split across tapes would make the new tape hold the old one's nodes, and so the
    old tape, and a loop recording without backward grew a chain of full tapes without bound."""
    tape = get_tape()
    if tape is PAUSED:
        return None
    if not tape.closed:
        if len(tape.rows) < 4 * TAPE_ROWS_LIMIT or tape.tracing:  # (an open tape's list: 4 a row)
            return tape
        tape.closed = tape.full = True
    if not (tape.full and any(isinstance(o, Node) and o._tape is tape for o in operands)):
        tape = Tape()
        set_tape(tape)
    return tape


def slot_on(tape: Tape, node: Node) -> int:
    """The slot of `node` on `tape`, registering it as an input row if the tape has not seen it."""
    if node._tape is tape:
        return node._slot
    reg = node._reg
    if reg is not None and reg[0] == tape.serial:
        return reg[1]
    return node._register(tape)


def record_guard(node: Node, truth: bool) -> None:
    """Record that `node` was converted to a Python bool with result `truth`."""
    tape = current_tape(node)
    if tape is None:
        return
    slot = slot_on(tape, node)
    tape.rows += (GUARD, slot, int(truth), float(truth))


def as_number(value: Any, op: str) -> float | int | bool:
    """A Python number from an operand that is not a node, or a TypeError naming the op."""
    if isinstance(value, (float, int)):
        return value
    if isinstance(value, numbers.Real) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item() if hasattr(value, "item") else float(value)
    raise TypeError(f"{op}: expected a number or a tapegrad tensor, got {type(value).__name__}")


def grad_fn_name(node: Node) -> str | None:
    """torch-style name of the op that produced `node` (``MulBackward``), or None for leaves."""
    if node._tape is None or not node._rg:
        return None
    name = node._tape.op_name(node._slot)
    return _TORCH_NAMES.get(name, name.capitalize()) + "Backward"


# array ops under the names torch gives their backward functions
_TORCH_NAMES = {
    "sum_into": "Sum",
    "amax_into": "Max",
    "amin_into": "Min",
    "prod_into": "Prod",
    "gather": "Index",
    "log_softmax": "LogSoftmax",
    "logsumexp_into": "Logsumexp",
    "cross_entropy": "NllLoss",
    "pack": "Stack",
    "join": "Cat",
    "matmul": "Matmul",
}


class recording:
    """``with tg.recording() as tape:`` records the block's ops on a fresh tape (the thread's
    previous tape is current again afterwards)."""

    def __enter__(self) -> Tape:
        self._prev = tape_ref()
        self.tape = Tape()
        set_tape(self.tape)
        return self.tape

    def __exit__(self, *exc: object) -> None:
        restore_tape(self._prev)
