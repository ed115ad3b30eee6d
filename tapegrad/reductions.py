"""Reductions of array tensors (sum, max, min, prod over axes: one segment-reduction row each)
and the compositions on them: logsumexp, softmax, log_softmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from .array import Axis, Tensor, _leaf, _record, _row, _tracing, _traced, _value, apply, as_array
from .kernels import ARRAY_CODE
from .node import current_tape
from .shapes import _axes, _c_strides, _strided, reshape

_NUMPY_REDUCE = {"sum_into": np.sum, "amax_into": np.max, "amin_into": np.min, "prod_into": np.prod}


def _reduce(op: str, x: Any, axis: Axis, keepdims: bool) -> Tensor:
    """Sum, max, min or product over `axis` (all axes by default) as one segment-reduction row."""
    x = as_array(x)
    xv = _value(x)
    name = {"sum_into": "sum", "amax_into": "max", "amin_into": "min", "prod_into": "prod"}[op]
    axes = _axes(axis, xv.ndim, name)
    try:
        value = _NUMPY_REDUCE[op](xv, axis=axes, keepdims=keepdims)
    except ValueError:  # the max or min of nothing
        raise ValueError(f"{name}: reducing over an empty dimension of shape {xv.shape} (axis {axis})") from None
    if not _traced(x):
        return _leaf(value)
    tape = current_tape()
    if tape is None:
        return _leaf(value)
    kept = _c_strides([1 if d in axes else n for d, n in enumerate(xv.shape)])
    segment = _strided(0, xv.shape, [0 if d in axes else kept[d] for d in range(xv.ndim)])
    return _record(ARRAY_CODE[op], _row(tape, x), 0, segment, value, tape, x._rg)


def logsumexp(x: Any, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x))) over `axis`, shifted by the maximum (a constant for the gradient)."""
    x = as_array(x)
    xv = _value(x)
    axes = _axes(axis, np.ndim(xv), "logsumexp")
    if _tracing(x):  # the shift must follow the inputs of a replay: a recorded max, no gradient
        shift = _reduce("amax_into", x, axes, True).detach()
    else:
        shift = np.max(xv, axis=axes, keepdims=True) if np.size(xv) else np.zeros((1,) * np.ndim(xv))
        shift = np.where(np.isfinite(shift), shift, 0.0)
    total = _reduce("sum_into", apply("exp", apply("sub", x, shift)), axes, keepdims)
    kept = shift if keepdims else reshape(shift, np.shape(total._v))
    return apply("add", apply("log", total), kept)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along `axis`."""
    return apply("sub", x, logsumexp(x, axis, keepdims=True))


def softmax(x: Any, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `axis`."""
    return apply("exp", log_softmax(x, axis))
