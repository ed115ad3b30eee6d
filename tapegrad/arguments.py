"""The traced arguments of a function that tg.compile records.

The arguments are the first entries of the tape's input vector, flat, in order. A float argument
is one ``input`` row. An array argument is a :class:`TracedArray`, which reads its entries the way
the function uses it. Indexing with integers and slices (and iteration, ``tolist``,
``np.asarray``) gives traced scalars, one ``input`` row per element made at the first such use, in
an object array for a slice: what scalar code wants, as it did when arguments were object arrays.
As an operand of array ops (arithmetic, reductions, NumPy's functions) and as ``tnp.asarray(x)``
it is one ``array_input`` row reading its whole range (or a ``pack`` of its elements once those
exist; indexing it after that gathers from the row). Either way each input entry has one row
reading it, which :func:`input_rows` lists for the sweeps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .array import ArrayTensor, pack
from .kernels import ARRAY_CODE
from .node import KEEP_TRACED, TracingError
from .tape import Tape
from .tensor import Tensor


class TracedArray(ArrayTensor):
    """An array argument of a recording: input entries [offset, offset + size) of the tape."""

    __slots__ = ("_offset", "_elements", "_recording")
    _offset: int  # its first entry in the input vector
    _elements: np.ndarray | None  # its elements as traced scalars, once scalar code asked for them
    _recording: Tape  # the tape recording f

    @classmethod
    def argument(cls, tape: Tape, value: np.ndarray, offset: int) -> TracedArray:
        node = cls._leaf(value, True)
        node._offset, node._elements, node._recording = offset, None, tape
        return node

    def _untraced(self, what: str, instead: str) -> Any:
        raise TracingError(
            f"{what} of a traced value while recording for tg.compile: the tape would not follow the "
            f"value at other inputs. {instead}"
        )

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(x)``: its elements as traced scalars (an object array, for scalar code)."""
        if dtype is not None and np.dtype(dtype) != object:
            self._untraced(f"converting to a NumPy array of {np.dtype(dtype)}", KEEP_TRACED)
        return self.elements().copy()

    def tolist(self) -> list:
        """Its elements as (nested) lists of traced scalars."""
        return self.elements().tolist()

    def __getitem__(self, key: Any) -> Any:
        if (self._tape is None or self._elements is not None) and _elementwise(key):  # scalar code
            return self.elements()[key]
        return super().__getitem__(key)

    def array(self) -> ArrayTensor:
        """It as one array tensor: its rows are array rows (``tnp.asarray`` of an argument)."""
        if self._tape is None:
            self._register(self._recording)
        node = ArrayTensor._leaf(self._v, True)
        node._tape, node._slot = self._tape, self._slot
        return node

    def elements(self) -> np.ndarray:
        """The elements as an object array of traced scalars (their input rows made on first use)."""
        if self._elements is None:
            tape, flat = self._recording, self._v.ravel()
            nodes = np.empty(flat.size, dtype=object)
            nodes[:] = [tape.add_traced_input(Tensor, float(v), self._offset + k) for k, v in enumerate(flat)]
            self._elements = nodes.reshape(self._v.shape)
        return self._elements

    def _register(self, tape: Tape) -> int:
        """Its row as an operand of an array op: the pack of its elements if they exist (scalar
        code came first), else one array_input row."""
        if tape is not self._recording:
            raise TracingError(f"an argument of a tg.compile recording used outside it. {KEEP_TRACED}")
        if self._elements is not None:
            slot = pack(self._elements)._slot
        else:
            slot = tape.add_array(ARRAY_CODE["array_input"], self._offset, 0, None, self._v)
            tape.inputs.append(self)
            tape.input_slots.append(slot)
        self._tape, self._slot = tape, slot
        return slot

    def rows(self) -> list[int]:
        """The row reading each of its input entries (an array_input row reads them all)."""
        if self._elements is not None:
            return [node._slot for node in self._elements.flat]
        if self._tape is None:  # unused: a row all the same, so that its gradient reads zero
            self._register(self._recording)
        return [self._slot] * self._v.size


def _elementwise(key: Any) -> bool:
    """Whether an index is integers and slices only (scalar code's)."""
    if isinstance(key, tuple):
        return all(_basic(k) for k in key)
    return _basic(key)


def _basic(k: Any) -> bool:
    return k.__class__ is slice or (isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)))


def traced(tape: Tape, signature: tuple[tuple[int, ...], ...], flat: np.ndarray) -> list[Any]:
    """The arguments of a recording: input entries 0 .. len(flat) - 1 of `tape` (their values
    copied: the tape keeps them, and `flat` may be a view of the caller's array)."""
    flat = np.array(flat, dtype=np.float64)
    tape.input_width = len(flat)
    args: list[Any] = []
    offset = 0
    for shape in signature:
        size = math.prod(shape)
        if shape == ():
            args.append(tape.add_traced_input(Tensor, float(flat[offset]), offset))
        else:
            args.append(TracedArray.argument(tape, flat[offset : offset + size].reshape(shape), offset))
        offset += size
    return args


def input_rows(args: list[Any]) -> list[int]:
    """The row reading each input entry of the arguments, in order."""
    rows: list[int] = []
    for arg in args:
        rows += arg.rows() if isinstance(arg, TracedArray) else [arg._slot]
    return rows


__all__ = ["TracedArray", "input_rows", "traced"]
