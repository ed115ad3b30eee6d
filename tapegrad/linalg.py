"""Products of array tensors: matmul (NumPy's rules, batched), linear (weight read transposed),
dot and outer."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from . import kernels
from .array import _FLOAT64, _OPS, Tensor, _apply, _leaf, _record, _row, _traced, _value, apply, as_array
from .kernels import ARRAY_CODE
from .node import current_tape
from .shapes import broadcast_to, reshape
from .tensor import kernel_data


def matmul(x: Any, y: Any) -> Tensor:
    """Matrix product with NumPy's rules: 1-D operands are vectors, leading dimensions batch."""
    x, y = as_array(x), as_array(y)
    xv, yv = _value(x), _value(y)
    if np.ndim(xv) == 0 or np.ndim(yv) == 0:
        raise ValueError(
            "matmul: both arguments need at least one dimension, got shapes "
            f"{np.shape(xv)} and {np.shape(yv)}"
        )
    x2 = xv.reshape(1, -1) if xv.ndim == 1 else xv
    y2 = yv.reshape(-1, 1) if yv.ndim == 1 else yv
    if x2.shape[-1] != y2.shape[-2]:
        raise ValueError(
            f"matmul: shapes {xv.shape} and {yv.shape} are not aligned "
            f"({x2.shape[-1]} != {y2.shape[-2]})"
        )
    try:
        batch = np.broadcast_shapes(x2.shape[:-2], y2.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {xv.shape} and {yv.shape} do not broadcast") from None
    rows, inner, cols = x2.shape[-2], x2.shape[-1], y2.shape[-1]
    # an operand with batch dimensions steps through them (its own ones repeated are materialized)
    meta = np.array([math.prod(batch), rows, inner, cols, rows * inner if x2.shape[:-2] and batch else 0,
                     inner * cols if y2.shape[:-2] and batch else 0, 0], dtype=np.int64)
    repeated = x2.shape[:-2] not in (batch, ()) or y2.shape[:-2] not in (batch, ())
    shape = batch + xv.shape[-2:-1] + yv.shape[-1:] * (yv.ndim > 1)
    value = np.matmul(xv, yv) if repeated else _product(xv, yv, meta, shape)
    if not (_traced(x) or _traced(y)):
        return _leaf(value)
    tape = current_tape(x, y)
    if tape is None:
        return _leaf(value)
    x, y = (t if t2.shape[:-2] in (batch, ()) else broadcast_to(t, batch + t2.shape[-2:])
            for t, t2 in ((x, x2), (y, y2)))
    rg = (_traced(x) and x._rg) or (_traced(y) and y._rg)
    return _record(ARRAY_CODE["matmul"], _row(tape, x), _row(tape, y), meta, value, tape, rg)


_MATMUL, _ADD = ARRAY_CODE["matmul"], _OPS["add"]


def _product(xv: np.ndarray, yv: np.ndarray, meta: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The product `meta` describes, of shape `shape`, by the replay's kernel (the same BLAS call:
    the same bits, and MKL's dgemm where kernels.blas chose it); NumPy's for data not float64."""
    if xv.dtype != _FLOAT64 or yv.dtype != _FLOAT64:
        return np.matmul(xv, yv.T if meta[6] else yv)
    out = np.empty(shape)
    if out.size:
        xr, yr = kernel_data(xv.ravel()), kernel_data(yv.ravel())
        kernels.sweeps().matmul_forward(xr, yr, out.ravel(), meta, 0)
    return out


@lru_cache(maxsize=256)
def _linear_entry(batch: tuple[int, ...], weight: tuple[int, ...]) -> np.ndarray:
    """The matmul entry of x @ weight.T for x of shape batch + (in,), weight (out, in): one
    product, reading the weight's block transposed (shared by the rows of a layer)."""
    entry = np.array([1, math.prod(batch), weight[1], weight[0], 0, 0, 1], dtype=np.int64)
    entry.flags.writeable = False
    return entry


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """x @ weight.T + bias, with weight of shape (out, in) as torch lays it out (recorded as one
    matmul row that reads weight transposed: no copy of it)."""
    x, weight = as_array(x), as_array(weight)
    xv, wv = _value(x), _value(weight)
    xs, ws = np.shape(xv), np.shape(wv)
    if len(ws) != 2 or not xs or xs[-1] != ws[1]:
        raise ValueError(f"linear: input of shape {xs} and weight of shape {ws} "
                         "do not match (weight is (out_features, in_features))")
    entry = _linear_entry(xs[:-1], ws)
    value = _product(xv, wv, entry, xs[:-1] + ws[:1])
    tape = current_tape(x, weight) if (_traced(x) or _traced(weight)) else None
    if tape is None:
        out = _leaf(value)
    else:
        rg = (_traced(x) and x._rg) or (_traced(weight) and weight._rg)
        out = _record(_MATMUL, _row(tape, x), _row(tape, weight), entry, value, tape, rg)
    return out if bias is None else _apply(_ADD, out, bias, ())


def dot(x: Any, y: Any) -> Tensor:
    """Inner product of two 1-D tensors (matmul otherwise)."""
    return matmul(x, y)


def outer(x: Any, y: Any) -> Tensor:
    """x[i] * y[j] for 1-D x and y."""
    return apply("mul", reshape(x, (-1, 1)), reshape(y, (1, -1)))
