"""``tg.Tensor``: the torch-like eager tensor (scalars; float64 by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from . import engine
from .node import KEEP_TRACED, Node, grad_fn_name
from .recorder import APPLY, install_ops

if TYPE_CHECKING:
    from .array import ArrayTensor

_DTYPES = {bool: "bool", int: "int64", float: "float64"}


class GradFn:
    """The op that produced a tensor, as torch shows it (``<MulBackward>``)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<{self._name}>"


class Tensor(Node):
    """A value that records the ops applied to it when it requires grad.

    Create one with :func:`tensor`. ``.grad`` accumulates on leaves after ``backward()``.
    """

    __slots__ = ()

    # ------------------------------------------------------------------ properties
    @property
    def requires_grad(self) -> bool:
        return self._rg

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set whether this leaf records gradients (in place); returns self."""
        if not self.is_leaf:
            if requires_grad:
                return self
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach()."
            )
        if requires_grad and not (
            self._v.__class__ is float or getattr(self._v, "dtype", None) == np.float64
        ):
            raise RuntimeError(
                f"Only Tensors of floating point dtype can require gradients (got {self.dtype})"
            )
        self._rg = bool(requires_grad)
        return self

    @property
    def grad(self) -> Tensor | None:
        """Accumulated gradient of a leaf (or of a node that called ``retain_grad``), else None."""
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        self._grad = value if value is None or isinstance(value, Tensor) else tensor(value)

    @property
    def grad_fn(self) -> GradFn | None:
        name = grad_fn_name(self)
        return None if name is None else GradFn(name)

    @property
    def dtype(self) -> str:
        return _DTYPES[type(self._v)]

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def ndim(self) -> int:
        return 0

    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None) -> Tensor:
        """A scalar's sum: its value, as a new tensor (torch's sum of a 0-d tensor)."""
        return self._reduce_scalar("sum", axis if dim is None else dim)

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None) -> Tensor:
        """A scalar's mean: its value, as a new tensor."""
        return self._reduce_scalar("mean", axis if dim is None else dim)

    def _reduce_scalar(self, name: str, axis: Any) -> Tensor:
        if axis not in (None, 0, -1, ()):
            raise IndexError(f"{name}: dimension out of range (a scalar has none, but got {axis})")
        return self * 1.0

    def numel(self) -> int:
        """The number of elements (1 for a scalar tensor)."""
        return 1

    @property
    def data(self) -> Tensor:
        """This tensor's value as a new leaf that does not require grad."""
        return self.detach()

    # ------------------------------------------------------------------ conversions
    def item(self) -> float | int | bool:
        """The value as a Python number."""
        return self._untraced(".item()", KEEP_TRACED)

    def numpy(self) -> np.ndarray:
        """The value as a NumPy array, sharing an array tensor's data as torch's does (refused for
        a tensor that requires grad: detach it first)."""
        self._untraced(".numpy()", KEEP_TRACED)
        if self._rg:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
            )
        return np.asarray(self._v)

    def detach(self) -> Tensor:
        """A new leaf with this value that does not require grad (recorded as ``stop_gradient``
        while tracing for tg.compile, so replays follow the value)."""
        if self._tape is not None and self._tape.tracing:
            return APPLY["stop_gradient"](self)
        return Tensor._leaf(self._v)

    def __pos__(self) -> Tensor:
        return self

    # ------------------------------------------------------------------ gradients
    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` after backward."""
        if not self._rg:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._tape is not None and not any(t is self for t in self._tape.retained):
            self._tape.retained.append(self)

    def _accumulate_grad(self, g: float) -> None:
        if self._grad is None:
            self._grad = Tensor._leaf(g)
        else:
            self._grad._v += g

    def backward(self, gradient: Any = None, retain_graph: bool | None = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (scaled by `gradient`)."""
        backward([self], None if gradient is None else [gradient], retain_graph)

    # ------------------------------------------------------------------ printing
    def __repr__(self) -> str:
        extra = ""
        name = grad_fn_name(self)
        if name is not None:
            extra = f", grad_fn=<{name}>"
        elif self._rg:
            extra = ", requires_grad=True"
        return f"tensor({format_scalar(self._v)}{extra})"

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec) if spec else repr(self)


install_ops(Tensor)


def format_scalar(v: float | int | bool) -> str:
    """A scalar as torch prints it: ``2.``, ``0.3536``, ``1.0000e-05``, ``True``, ``3``."""
    if isinstance(v, (bool, int)):
        return str(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == int(v) and abs(v) < 1e8:
        return f"{v:.0f}."
    if abs(v) >= 1e8 or abs(v) < 1e-4:
        return f"{v:.4e}"
    return f"{v:.4f}"


@overload
def tensor(data: float | np.number, requires_grad: bool = False, dtype: str | None = None) -> Tensor: ...


@overload
def tensor(data: Any, requires_grad: bool = False, dtype: str | None = None) -> ArrayTensor: ...


def tensor(data: Any, requires_grad: bool = False, dtype: str | None = None) -> Tensor:
    """A new leaf tensor (float64 for floats; int64 and bool data cannot require grad)."""
    if data.__class__ is float and dtype is None:
        return Tensor._leaf(data, bool(requires_grad))
    if isinstance(data, Node):
        data = data._untraced("tg.tensor()", "Use the traced value itself, or .detach().")
    if isinstance(data, np.ndarray) and data.ndim == 0 or isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, bool):
        value: Any = data
    elif isinstance(data, int):
        value = data
    elif isinstance(data, float):
        value = data
    elif isinstance(data, complex):
        raise TypeError("tapegrad.tensor: complex data is not supported (float64 only)")
    elif isinstance(data, (list, tuple, np.ndarray)):
        return _array_tensor(data, requires_grad, dtype)
    else:
        raise TypeError(f"tapegrad.tensor: expected a number or array data, got {type(data).__name__}")
    if dtype is not None:
        casts = {"float64": float, "int64": int, "bool": bool}
        if dtype not in casts:
            raise TypeError(f"tapegrad.tensor: unknown dtype {dtype!r} (float64, int64 or bool)")
        value = casts[dtype](value)
    t = Tensor._leaf(value)
    if requires_grad:
        t.requires_grad_(True)
    return t


def float_array(value: Any) -> np.ndarray:
    """`value` (a number or array data) as a float64 array; a TypeError for data that is not
    real numbers (complex, strings, objects: NumPy would drop an imaginary part with a warning)."""
    data = np.asarray(value)
    if data.dtype.kind not in "fiub":
        raise TypeError(f"dtype {data.dtype} is not a real number type")
    return data.astype(np.float64, copy=False)


def kernel_data(array: np.ndarray) -> np.ndarray:
    """`array` (float64), or a copy where a Numba kernel would take it as another type and compile
    itself anew, for seconds to a minute: read-only data (np.broadcast_to's, a JAX array's NumPy
    view, a read-only memory map) or unaligned."""
    return array if array.flags.writeable and array.flags.aligned else array.copy()


def as_tensor(value: Any) -> Tensor:
    """A leaf holding `value` (a float, or an array: an array tensor) that needs no grad."""
    if value.__class__ is np.ndarray:
        from .array import ArrayTensor

        return ArrayTensor._leaf(value)
    return Tensor._leaf(value)


_DTYPE_OF_KIND = {"f": np.float64, "i": np.int64, "u": np.int64, "b": np.bool_}


def _array_tensor(data: Any, requires_grad: bool, dtype: str | None) -> Tensor:
    from .array import ArrayTensor

    try:
        array = np.array(data, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"tapegrad.tensor: cannot make a tensor of {type(data).__name__} ({err})") from None
    if array.dtype.kind not in _DTYPE_OF_KIND:
        raise TypeError(f"tapegrad.tensor: unsupported dtype {array.dtype} (float64, int64 or bool)")
    array = np.ascontiguousarray(array, dtype=_DTYPE_OF_KIND[array.dtype.kind])
    if array.ndim == 0:
        return tensor(array.item(), requires_grad)
    t = ArrayTensor._leaf(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _seed(output: Any, gradient: Any) -> Any:
    """The seed adjoint of `output` (a tensor): 1 for a scalar, else `gradient` of its shape."""
    if gradient is None:
        if output.numel() != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return 1.0
    g = gradient._v if isinstance(gradient, Node) else gradient
    if np.shape(g) != output.shape:
        raise RuntimeError(
            f"Mismatch in shape: grad_output has a shape of {np.shape(g)} and output has a shape of "
            f"{output.shape}"
        )
    return float(g) if np.ndim(g) == 0 else np.array(g, dtype=np.float64)


def backward(
    tensors: Sequence[Tensor], grad_tensors: Sequence[Any] | None = None,
    retain_graph: bool | None = None,
) -> None:
    """Accumulate gradients of `tensors` (weighted by `grad_tensors`) into the leaves' ``.grad``."""
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    seeds = []
    for t, g in zip(tensors, grad_tensors):
        if not isinstance(t, Node) or not t._rg:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        seeds.append((t, _seed(t, g)))
    engine.propagate(seeds, retain_graph=bool(retain_graph))


__all__ = ["Tensor", "tensor", "backward", "format_scalar", "as_tensor", "float_array"]
