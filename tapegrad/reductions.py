"""Reductions of array tensors (sum, max, min, prod, logsumexp over axes: one segment-reduction
row each), log_softmax (one row) and softmax on it."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from . import kernels
from .array import Axis, Tensor, _leaf, _record, _row, _traced, _value, apply, as_array
from .kernels import ARRAY_CODE
from .node import current_tape
from .shapes import _axes, _c_strides, _strided
from .tensor import kernel_data

# (the ufuncs' reduce: NumPy's values, without np.sum's Python wrapper) and the ops' public names
_NUMPY_REDUCE: dict[str, Callable[..., Any]] = {
    "sum_into": np.add.reduce, "amax_into": np.maximum.reduce, "amin_into": np.minimum.reduce,
    "prod_into": np.multiply.reduce,
}
_NAMES = {"sum_into": "sum", "amax_into": "max", "amin_into": "min", "prod_into": "prod"}


def _reduce(op: str, x: Any, axis: Axis, keepdims: bool) -> Tensor:
    """Sum, max, min or product over `axis` (all axes by default) as one segment-reduction row."""
    x = as_array(x)
    xv = _value(x)
    name = _NAMES[op]
    axes = _axes(axis, np.ndim(xv), name)
    try:
        value = _NUMPY_REDUCE[op](xv, axis=axes, keepdims=keepdims)
    except ValueError:  # the max or min of nothing
        raise ValueError(
            f"{name}: reducing over an empty dimension of shape {xv.shape} (axis {axis})"
        ) from None
    if not _traced(x):
        return _leaf(value)
    tape = current_tape(x)
    if tape is None:
        return _leaf(value)
    return _record(ARRAY_CODE[op], _row(tape, x), 0, _segments(np.shape(xv), axes), value, tape, x._rg)


@lru_cache(maxsize=1024)
def _segments(shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """The index map sending each element to its segment: its position with `axes` reduced away."""
    kept = _c_strides([1 if d in axes else n for d, n in enumerate(shape)])
    entry = _strided(0, shape, [0 if d in axes else kept[d] for d in range(len(shape))])
    entry.flags.writeable = False  # shared by every row reducing the same way
    return entry


def logsumexp(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x))) over `axis` (all axes by default), shifted by each segment's maximum: one
    row, whose kernel gives the values eager and replayed (one pass for the maximum, one for the
    exps and their sum; its gradient is softmax)."""
    x = as_array(x)
    xv = _value(x)
    shape = np.shape(xv)
    axes = _axes(axis, len(shape), "logsumexp")
    kept = [1 if d in axes else n for d, n in enumerate(shape)]
    value = np.empty(tuple(kept) if keepdims else tuple(n for d, n in enumerate(shape) if d not in axes))
    return _kernel_row("logsumexp_into", x, _segments(shape, axes), value)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along `axis`: one row (its reverse rule: g - softmax * sum(g))."""
    x = as_array(x)
    xv = _value(x)
    if np.ndim(xv) == 0:
        return apply("sub", x, x)
    axes = _axes(axis, xv.ndim, "log_softmax")
    return _kernel_row("log_softmax", x, _segments(xv.shape, axes), np.empty(xv.shape))


def _kernel_row(op: str, x: Any, entry: np.ndarray, value: np.ndarray) -> Tensor:
    """Array op `op` of x with side-table entry `entry`: `value` filled by the replay's kernel (the
    same bits eager and replayed; NumPy took 3x as long for log_softmax on a (100, 2) batch), and
    its row recorded if x is traced."""
    flat = kernel_data(np.ascontiguousarray(_value(x), dtype=np.float64).reshape(-1))
    getattr(kernels.sweeps(), op + "_forward")(flat, value.reshape(-1), entry.copy(), 0)
    if not _traced(x):
        return _leaf(value)
    tape = current_tape(x)
    if tape is None:
        return _leaf(value)
    return _record(ARRAY_CODE[op], _row(tape, x), 0, entry, value, tape, x._rg)


def softmax(x: Any, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `axis`."""
    return apply("exp", log_softmax(x, axis))
