"""Shapes and indices of array tensors: index maps (strided, or explicit positions), gathers
(indexing, permutes, broadcasts) and joins (concatenate, stack)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from .array import ArrayTensor, Axis, Tensor, _leaf, _record, _row, _traced, _value, as_array, pack
from .kernels import ARRAY_CODE
from .node import Node, current_tape
from .tape import address


# ---------------------------------------------------------------------------- structural ops
def _c_strides(shape: Sequence[int]) -> list[int]:
    """Element strides of a C-ordered array of `shape`."""
    strides, step = [0] * len(shape), 1
    for d in reversed(range(len(shape))):
        strides[d] = step
        step *= shape[d]
    return strides


def _strided(offset: int, shape: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """A strided index map: the positions, in C order over `shape`, offset + sum(i_d * strides_d).
    Dimensions that walk on from each other are merged (and size-1 ones dropped), so that the
    kernels' innermost runs are as long as they can be: a full sum is one run of stride 0."""
    dims: list[list[int]] = []
    for n, s in zip(shape, strides):
        if n == 1:
            continue
        if dims and dims[-1][1] == s * n:
            dims[-1] = [dims[-1][0] * n, s]
        else:
            dims.append([n, s])
    if 0 in shape:
        dims = [[0, 1]]
    return np.array([len(dims), offset, *(n for n, _ in dims), *(s for _, s in dims)], dtype=np.int64)


def _is_basic(key: Any) -> bool:
    """Basic indexing (ints, slices, None, Ellipsis): a strided view, no index array."""
    keys = key if isinstance(key, tuple) else (key,)
    return all(
        k is None
        or k is Ellipsis
        or isinstance(k, slice)
        or (isinstance(k, (int, np.integer)) and not isinstance(k, bool))
        for k in keys
    )


def _index_entry(shape: tuple[int, ...], key: Any) -> np.ndarray:
    """The index map of ``x[key]`` for x of `shape`: strided for basic indexing, else the explicit
    positions."""
    if key.__class__ is slice:  # the commonest key, x[1:]: straight to the cache
        return _basic_entry(shape, (_hashable(key),))
    if not _is_basic(key):
        return np.concatenate([[-1], np.arange(math.prod(shape)).reshape(shape)[key].reshape(-1)])
    keys = key if isinstance(key, tuple) else (key,)
    return _basic_entry(shape, tuple(_hashable(k) for k in keys))


def _hashable(k: Any) -> Any:
    """An index key as the cache takes it: slices (not hashable before Python 3.12) as tuples of
    their bounds, numbers as ints (NumPy reads them through __index__ alike)."""
    if k is None or k is Ellipsis:
        return k
    if isinstance(k, slice):
        start, stop, step = k.start, k.stop, k.step
        return (
            None if start is None else operator.index(start),
            None if stop is None else operator.index(stop),
            None if step is None else operator.index(step),
        )
    return operator.index(k)


@lru_cache(maxsize=1024)
def _basic_entry(shape: tuple[int, ...], keys: tuple[Any, ...]) -> np.ndarray:
    """The strided index map of basic indexing (see _index_entry): its offset and strides, read off
    a view of a fake array (a loop indexing the same way records each time: computed once)."""
    keys = tuple(slice(*k) if isinstance(k, tuple) else k for k in keys)
    fake = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), shape, _c_strides(shape))
    view = fake[keys if any(k is Ellipsis for k in keys) else (*keys, Ellipsis)]  # a 0-d view, not a scalar
    offset = address(view) - address(fake)
    return _strided(offset, view.shape, view.strides)


def _gather(x: Any, value: np.ndarray, entry: np.ndarray) -> Tensor:
    """out[k] = x.flat[idx[k]] for the index map `entry` (over the output): indexing, permutes,
    broadcasts; `value` is the result NumPy computed."""
    if not _traced(x):
        return _leaf(value)
    tape = current_tape(x)
    if tape is None:
        return _leaf(value)
    return _record(ARRAY_CODE["gather"], _row(tape, x), 0, entry, value, tape, x._rg)


def _axis(axis: int, ndim: int, op: str) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise IndexError(
            f"{op}: dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {axis})"
        )
    return axis % max(ndim, 1)


def _axes(axis: Axis, ndim: int, op: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    normalized = [_axis(int(a), ndim, op) for a in axes]
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{op}: dimension repeated in axis {axis}")
    return tuple(sorted(normalized))


def broadcast_to(x: Any, shape: Sequence[int]) -> Tensor:
    """`x` repeated along new or size-1 dimensions to `shape` (gradients sum back)."""
    x = as_array(x)
    shape, xv = tuple(shape), _value(x)
    try:
        value = np.broadcast_to(xv, shape)
    except ValueError:
        raise ValueError(f"broadcast_to: cannot broadcast shape {np.shape(xv)} to {shape}") from None
    lead = len(shape) - np.ndim(xv)
    own = _c_strides(np.shape(xv))
    strides = [0 if d < lead or np.shape(xv)[d - lead] == 1 else own[d - lead] for d in range(len(shape))]
    return _gather(x, value, _strided(0, shape, strides))


def reshape(x: Any, shape: int | Sequence[int]) -> Any:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return x.reshape(shape) if isinstance(x, ArrayTensor) else np.reshape(_value(x), shape)


def concatenate(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis: a balanced tree of ``join`` rows, each placing its two
    operands' elements in their result (k tensors: k - 1 rows; an element is copied about log2 k
    times, forward and back)."""
    tensors = [as_array(t) for t in tensors]
    values = [np.atleast_1d(_value(t)) for t in tensors]
    if not values:
        raise ValueError("concatenate: expected a non-empty sequence of tensors")
    try:
        value = np.concatenate(values, axis=axis)
    except (ValueError, np.exceptions.AxisError) as err:
        shapes = ", ".join(str(v.shape) for v in values)
        raise ValueError(f"concatenate: shapes {shapes} along axis {axis}: {err}") from None
    traced = [t for t in tensors if _traced(t)]
    tape = current_tape(*traced) if traced else None
    if tape is None:
        return _leaf(value)
    axis = axis % value.ndim
    if len(tensors) == 1:  # a copy, as NumPy's
        return _gather(tensors[0], value, _strided(0, value.shape, _c_strides(value.shape)))
    parts = list(zip(tensors, values))
    while len(parts) > 1:
        root = value if len(parts) == 2 else None  # (the last join's value: the result's)
        parts = [_join(tape, *parts[k], *parts[k + 1], axis, root) if k + 1 < len(parts) else parts[k]
                 for k in range(0, len(parts), 2)]
    return parts[0][0]


def _join(tape: Any, x: Any, xv: np.ndarray, y: Any, yv: np.ndarray, axis: int,
          value: np.ndarray | None = None) -> tuple[Any, np.ndarray]:
    """x and y joined along `axis` (a join row, unless neither is traced), and its value (`value`
    if given)."""
    value = np.concatenate([xv, yv], axis=axis) if value is None else value
    if not (_traced(x) or _traced(y)):
        return value, value
    strides = _c_strides(value.shape)
    places = (_strided(0, xv.shape, strides), _strided(xv.shape[axis] * strides[axis], yv.shape, strides))
    rg = (_traced(x) and x._rg) or (_traced(y) and y._rg)
    out = _record(ARRAY_CODE["join"], _row(tape, x), _row(tape, y), np.concatenate(places), value, tape, rg)
    return out, value


def stack(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Join tensors along a new axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    shape = np.shape(_value(tensors[0]))
    axis = _axis(axis, len(shape) + 1, "stack")
    for t in tensors:
        if np.shape(_value(t)) != shape:
            shapes = ", ".join(str(np.shape(_value(u))) for u in tensors)
            raise ValueError(f"stack: expects each tensor to be equal size, got shapes {shapes}")
    if shape == ():  # scalars: one pack row
        items = np.empty(len(tensors), dtype=object)
        items[:] = tensors
        return pack(items)
    expanded = [
        t.reshape(shape[:axis] + (1,) + shape[axis:]) if isinstance(t, ArrayTensor) and _traced(t)
        else np.reshape(_value(t), shape[:axis] + (1,) + shape[axis:])
        for t in tensors
    ]
    return concatenate(expanded, axis)


def _index_key(key: Any) -> Any:
    """An indexing key with tensors replaced by their (integer or boolean) data."""
    if isinstance(key, tuple):
        return tuple(_index_key(k) for k in key)
    if isinstance(key, Node):
        return key._untraced("indexing with", "Index with integer data.")
    if isinstance(key, list):
        return np.asarray(key)
    return key
