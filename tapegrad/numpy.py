"""``import tapegrad.numpy as tnp``: NumPy-named functions that record when given tensors.

Given no tensor, each falls back to NumPy itself, so one function body serves plain arrays and
traced ones (``tg.grad`` of a function written with ``tnp``). Reductions follow NumPy's defaults
(``var`` and ``std`` with ``ddof=0``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as _np

from . import array as _array
from . import linalg as _linalg
from . import reductions as _reductions
from . import shapes as _shapes
from .arguments import TracedArray as _TracedArray
from .node import Node as _Node

Axis = int | Sequence[int] | None


def _has_tensor(*args: Any) -> bool:
    return any(isinstance(a, _Node) or (isinstance(a, (list, tuple)) and _has_tensor(*a)) for a in args)



def _elementwise(name: str, numpy_name: str) -> Callable[..., Any]:
    numpy_fn = getattr(_np, numpy_name)

    def fn(*args: Any) -> Any:
        if _has_tensor(*args):
            return _array.apply(name, *args)
        return numpy_fn(*args)

    fn.__name__ = fn.__qualname__ = numpy_name
    fn.__doc__ = f"numpy.{numpy_name}, recorded on tensors (the op {name!r})."
    return fn


for _numpy_name, _name in _array._UFUNCS.items():
    globals()[_numpy_name] = _elementwise(_name, _numpy_name)
abs = absolute  # type: ignore[name-defined]  # noqa: F821


def _method(method: str, numpy_name: str, **defaults: Any) -> Callable[..., Any]:
    numpy_fn = getattr(_np, numpy_name)

    def fn(a: Any, axis: Axis = None, keepdims: bool = False, **kwargs: Any) -> Any:
        if not isinstance(a, _Node):
            return numpy_fn(a, axis=axis, keepdims=keepdims, **kwargs)
        if not isinstance(a, _array.ArrayTensor):  # a scalar tensor
            return a * 0.0 if method in ("var", "std") else a
        return getattr(a, method)(axis, keepdims, **{**defaults, **kwargs})

    fn.__name__ = fn.__qualname__ = numpy_name
    fn.__doc__ = f"numpy.{numpy_name}, recorded on tensors."
    return fn


sum = _method("sum", "sum")
mean = _method("mean", "mean")
max = _method("max", "max")
min = _method("min", "min")
amax, amin = max, min
prod = _method("prod", "prod")
var = _method("var", "var", ddof=0)
std = _method("std", "std", ddof=0)


def _dispatch(name: str, tensor_fn: Callable[..., Any]) -> Callable[..., Any]:
    numpy_fn = getattr(_np, name)

    def fn(*args: Any, **kwargs: Any) -> Any:
        if _has_tensor(*args, *kwargs.values()):
            return tensor_fn(*args, **kwargs)
        return numpy_fn(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"numpy.{name}, recorded on tensors."
    return fn


dot = _dispatch("dot", _linalg.dot)
matmul = _dispatch("matmul", _linalg.matmul)
outer = _dispatch("outer", _linalg.outer)
concatenate = _dispatch("concatenate", _shapes.concatenate)
stack = _dispatch("stack", _shapes.stack)
where = _dispatch("where", _array.where)
broadcast_to = _dispatch("broadcast_to", _shapes.broadcast_to)
reshape = _dispatch("reshape", lambda a, shape: _shapes.reshape(a, shape))
transpose = _dispatch("transpose", lambda a, axes=None: a.permute(*(axes or reversed(range(a.ndim)))))
clip = _dispatch("clip", lambda a, lo, hi: a.clamp(lo, hi))
square = _dispatch("square", lambda a: a * a)


def logsumexp(a: Any, axis: Axis = None, keepdims: bool = False) -> Any:
    """log(sum(exp(a))) over `axis`, computed stably (shifted by the maximum)."""
    return _reductions.logsumexp(a, axis, keepdims)


def asarray(a: Any) -> Any:
    """Tensors pass through; an array argument inside tg.compile, or an array of traced scalars,
    becomes one array tensor; anything else becomes a NumPy array."""
    if isinstance(a, _TracedArray):  # an argument inside tg.compile: taken whole
        return a.array()
    if isinstance(a, _Node):
        return a
    packed = _array.as_array(a)
    return packed if isinstance(packed, _Node) else _np.asarray(a)


array = asarray


def __getattr__(name: str) -> Any:
    """Constants and functions this module does not record (``tnp.pi``, ``tnp.zeros``) are NumPy's."""
    return getattr(_np, name)
