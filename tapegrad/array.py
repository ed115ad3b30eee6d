"""Array tensors: n-d data on the same tape as scalars, one tape row per array op.

An array op computes its value with NumPy (the tensor's own data, held once) and records one row:
its code, operand rows and an entry of the tape's int side table (broadcast strides, matmul
sizes, index maps). Every op here is a row of the op table (elementwise ops) or of its array ops
(:data:`kernels.table.ARRAY_OPS`: matmul, gather, sum/max/min/prod/logsumexp into segments,
log_softmax); the rest are compositions of those (mean, var, softmax, concatenate, the losses).
Reshapes are free: the result shares the row and the data, under another shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from .kernels import ARRAY_CODE, CODE
from .kernels.pyeval import array_function
from .kernels.table import BY_NAME, CV, OPS, VC, VV
from .node import KEEP_TRACED, Node, current_tape, slot_on
from .recorder import APPLY, register_arrays
from .state import get_tape, tape_ref
from .tensor import Tensor

Axis = int | Sequence[int] | None


class ArrayTensor(Tensor):
    """A tensor of one or more dimensions (``tg.tensor`` makes one from array data)."""

    __slots__ = ("_version",)  # counts in-place updates of the data (optimizer steps); unset: 0

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> str:
        return str(self._v.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._v.shape

    @property
    def ndim(self) -> int:
        return self._v.ndim

    @property
    def size(self) -> int:
        return self._v.size

    def numel(self) -> int:
        return self._v.size

    def dim(self) -> int:
        return self._v.ndim

    def __len__(self) -> int:
        return len(self._v)

    def __iter__(self):
        return (self[i] for i in range(len(self._v)))

    def __bool__(self) -> bool:
        if self._v.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self._v.size} values is ambiguous")
        return bool(self.reshape(()))

    # ------------------------------------------------------------------ conversions
    def item(self) -> float | int | bool:
        if self._v.size != 1:
            raise ValueError(
                f"a Tensor with {self._v.size} elements cannot be converted to Scalar"
            )
        return self._untraced(".item()", KEEP_TRACED).item()

    def __float__(self) -> float:
        return float(self.item())

    def tolist(self) -> list:
        return self._untraced(".tolist()", KEEP_TRACED).tolist()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        self._untraced("converting to a NumPy array", KEEP_TRACED)
        if self._rg or self._tape is not None:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
            )
        return self._v if dtype is None else self._v.astype(dtype)

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, that does not require grad (recorded as
        ``stop_gradient`` while tracing for tg.compile, so replays follow the value)."""
        if _tracing(self):
            return apply("stop_gradient", self)
        return ArrayTensor._leaf(self._v)

    def _accumulate_grad(self, g: Any) -> None:
        if self._grad is None:
            self._grad = ArrayTensor._leaf(g)
        else:
            self._grad._v += g

    def __repr__(self) -> str:
        body = np.array2string(
            self._v, separator=", ", prefix="tensor(",
            formatter={"float_kind": _float_format(self._v)} if self._v.dtype == np.float64 else None,  # type: ignore[arg-type]
        )
        name = self.grad_fn
        extra = f", grad_fn={name!r}" if name is not None else (", requires_grad=True" if self._rg else "")
        if self._v.dtype not in (np.float64, np.int64, np.bool_):
            extra = f", dtype={self._v.dtype}" + extra
        return f"tensor({body}{extra})"

    # ------------------------------------------------------------------ numpy protocol
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = _UFUNCS.get(ufunc.__name__)
        if method != "__call__" or kwargs:
            return NotImplemented
        if ufunc is np.matmul:
            return matmul(*inputs)
        if ufunc is np.square:
            return apply("mul", inputs[0], inputs[0])
        if name is None:
            raise TypeError(
                f"numpy.{ufunc.__name__} is not an op of tapegrad: it cannot record it on a tensor "
                "(compose it "
                "from tapegrad.numpy's functions, or apply it to tensor.detach().numpy())"
            )
        return apply(name, *inputs)

    def __array_function__(self, func: Callable, types: Any, args: Any, kwargs: Any) -> Any:
        from . import numpy as tnp

        mine = getattr(tnp, func.__name__, None)
        if mine is None or mine is func:  # not recorded: NumPy on the data (refused if traced)
            return func._implementation(*args, **kwargs)  # type: ignore[attr-defined]  # NumPy's own
        return mine(*args, **kwargs)

    # ------------------------------------------------------------------ shape
    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    def reshape(self, *dims: Any) -> Tensor:
        """The same data under another shape (no copy, no tape row)."""
        shape = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        try:
            value = self._v.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: shape {tuple(shape)} is invalid for input of size {self._v.size}"
            ) from None
        return _alias(self, value)

    view = reshape

    def flatten(self) -> Tensor:
        return self.reshape(-1)

    def squeeze(self, dim: int | None = None) -> Tensor:
        if dim is None:
            return self.reshape(tuple(d for d in self.shape if d != 1))
        dim = _axis(dim, self.ndim, "squeeze")
        if self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1 :])

    def unsqueeze(self, dim: int) -> Tensor:
        dim = _axis(dim, self.ndim + 1, "unsqueeze")
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def permute(self, *axes: Any) -> Tensor:
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        if sorted(_axis(a, self.ndim, "permute") for a in axes) != list(range(self.ndim)):
            raise ValueError(f"permute: axes {axes} do not match a tensor of shape {self.shape}")
        strides = _c_strides(self.shape)
        entry = _strided(0, [self.shape[a] for a in axes], [strides[a] for a in axes])
        return _gather(self, self._v.transpose(axes), entry)

    def transpose(self, dim0: int = 0, dim1: int = 1) -> Tensor:
        axes = list(range(self.ndim))
        d0, d1 = _axis(dim0, self.ndim, "transpose"), _axis(dim1, self.ndim, "transpose")
        axes[d0], axes[d1] = axes[d1], axes[d0]
        return self.permute(*axes)

    def expand(self, *shape: Any) -> Tensor:
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = tuple(s if s != -1 else self.shape[k - len(shape) + self.ndim]
                      for k, s in enumerate(shape))
        return broadcast_to(self, shape)

    def __getitem__(self, key: Any) -> Tensor:
        key = _index_key(key)
        try:
            value = self._v[key]
        except IndexError as err:
            raise IndexError(f"getitem: {err} (tensor of shape {self.shape})") from None
        if not _traced(self):
            return _leaf(value)
        return _gather(self, value, _index_entry(self.shape, key))

    # ------------------------------------------------------------------ reductions
    def sum(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None) -> Tensor:
        return _reduce("sum_into", self, dim if dim is not None else axis, keepdims)

    def mean(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None) -> Tensor:
        axis = dim if dim is not None else axis
        total = self.sum(axis, keepdims)
        count = self._v.size // max(1, np.size(total._v))
        return total * (1.0 / count if count else np.nan)  # an empty mean is NaN, as in NumPy

    def max(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None) -> Tensor:
        return _reduce("amax_into", self, dim if dim is not None else axis, keepdims)

    def min(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None) -> Tensor:
        return _reduce("amin_into", self, dim if dim is not None else axis, keepdims)

    def prod(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None) -> Tensor:
        return _reduce("prod_into", self, dim if dim is not None else axis, keepdims)

    def var(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None,
            ddof: int = 1, correction: int | None = None) -> Tensor:
        """Variance; like torch, the unbiased estimate by default (``correction=1``)."""
        axis = dim if dim is not None else axis
        ddof = ddof if correction is None else correction
        centered = self - self.mean(axis, keepdims=True)
        squares = (centered * centered).sum(axis, keepdims)
        count = self._v.size // max(1, np.size(squares._v))
        return squares * (1.0 / (count - ddof) if count > ddof else np.nan)

    def std(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None,
            ddof: int = 1, correction: int | None = None) -> Tensor:
        return self.var(axis, keepdims, dim=dim, ddof=ddof, correction=correction).sqrt()

    def logsumexp(self, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None) -> Tensor:
        return logsumexp(self, dim if dim is not None else axis, keepdims)

    def softmax(self, dim: int = -1) -> Tensor:
        return softmax(self, dim)

    def log_softmax(self, dim: int = -1) -> Tensor:
        return log_softmax(self, dim)

    # ------------------------------------------------------------------ linear algebra
    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(other, self)

    matmul = __matmul__

    def dot(self, other: Any) -> Tensor:
        return dot(self, other)


def _float_format(values: np.ndarray) -> Callable[[float], str]:
    """torch's way of printing floats: one style for the whole tensor, right-aligned."""
    finite = values[np.isfinite(values)]
    if finite.size and np.all(finite == np.round(finite)) and np.abs(finite).max() < 1e8:
        style = "{:.0f}."
    elif finite.size and (np.abs(finite).max() >= 1e8 or np.abs(finite[finite != 0]).min(initial=1) < 1e-4):
        style = "{:.4e}"
    else:
        style = "{:.4f}"
    text = lambda v: style.format(v) if np.isfinite(v) else str(v)  # noqa: E731
    width = max((len(text(v)) for v in values.flat), default=0)
    return lambda v: text(v).rjust(width)


# ---------------------------------------------------------------------------- recording core
def _value(x: Any) -> Any:
    """The data of an operand: a tensor's value, a Python number, or a float64 array."""
    if isinstance(x, Node):
        return x._v
    if isinstance(x, (int, float, bool)):
        return x
    return np.asarray(x)


def _tracing(x: Any) -> bool:
    """Whether `x` is a tensor that a tape recording for tg.compile reads (a traced value, or a
    tensor captured from outside: read afresh at every replay, so ops on it are rows too)."""
    return _traced(x) and getattr(get_tape(), "tracing", False)


def as_array(x: Any) -> Any:
    """`x` as an operand of array ops: an array (or list) holding tensors becomes one array
    tensor (a ``pack`` row: how tg.compile's traced array arguments enter array ops)."""
    if isinstance(x, (np.ndarray, list, tuple)) and not isinstance(x, Node):
        items = np.asarray(x, dtype=object) if not isinstance(x, np.ndarray) else x
        if items.dtype == object and items.size and any(isinstance(v, Node) for v in items.flat):
            return pack(items)
    return x


def pack(items: np.ndarray) -> Tensor:
    """One array tensor of an object array of scalars (tensors or numbers), recorded as one row."""
    scalars = [v if isinstance(v, Node) else float(v) for v in items.flat]
    value = np.array([float(v._v) if isinstance(v, Node) else v for v in scalars], dtype=np.float64)
    value = value.reshape(items.shape)
    traced = [v for v in scalars if isinstance(v, Node) and _traced(v)]
    tape = current_tape(*traced) if traced else None
    if tape is None:
        return _leaf(value)
    rows = [slot_on(tape, v) if isinstance(v, Node) and _traced(v) else tape.add_const(float(_value(v)))
            for v in scalars]
    out = _record(ARRAY_CODE["pack"], 0, 0, np.array(rows, dtype=np.int64), value, tape,
                  any(v._rg for v in traced))
    return out


def _traced(x: Any) -> bool:
    return isinstance(x, Node) and (x._rg or x._tape is not None)


def _row(tape: Any, x: Any) -> int:
    """The row of operand `x` on `tape`: its own, an input row, or a row of constant data."""
    if isinstance(x, Node) and (x._rg or x._tape is not None):
        if x._tape is tape:
            if tape is not None and x._v.__class__ is np.ndarray:  # for the row recorded next
                tape.operand_values[x._slot] = x._v
            return x._slot
        return slot_on(tape, x)
    value = _value(x)
    if np.ndim(value) == 0:
        return tape.add_const(float(value))
    value = np.ascontiguousarray(value, dtype=np.float64)  # (a copy of data not float64 in C order,
    row = tape.add_array_const(value)  # which only the row about to be recorded holds, if it reads it)
    tape.operand_values[row] = value
    return row


def _leaf(value: Any) -> Tensor:
    if _ndim(value) == 0:
        v = value.item() if hasattr(value, "item") else value
        return Tensor._leaf(v)
    value = np.ascontiguousarray(value)  # views (T, [::-1], expand) become blocks
    # (an expand adding only size-1 dimensions is NumPy's read-only view: the tensor's own data)
    return ArrayTensor._leaf(value if value.flags.writeable else value.copy())


def _record(code: int, x: int, y: int, meta: np.ndarray | None, value: Any, tape: Any, rg: bool) -> Tensor:
    """Record an array op's row on `tape` and return its result tensor."""
    if _ndim(value) == 0:
        value = float(value)
        out = Tensor._leaf(value, rg)
    else:
        if value.dtype != _FLOAT64 or not value.flags.c_contiguous:
            value = np.ascontiguousarray(value, dtype=np.float64)
        out = _new(ArrayTensor)
        out._v, out._reg, out._rg, out._grad = value, None, rg, None
    out._tape, out._slot = tape, tape.add_array(code, x, y, meta, value)
    return out


def _alias(x: ArrayTensor, value: np.ndarray) -> Tensor:
    """`x`'s data under another shape: the same row of the tape, no copy."""
    if not _traced(x):
        return _leaf(value)
    tape = current_tape(x)
    if tape is None:
        return _leaf(value)
    if value.ndim == 0:  # a 0-d result is a scalar slot
        return _gather(x, value, _strided(0, (), ()))
    out = ArrayTensor._leaf(value, x._rg)
    out._tape, out._slot = tape, slot_on(tape, x)
    return out


# ---------------------------------------------------------------------------- elementwise
@lru_cache(maxsize=1024)
def _broadcast_meta(xshape: tuple[int, ...], yshape: tuple[int, ...], zshape: tuple[int, ...]) -> np.ndarray:
    """Side-table entry of a broadcasting elementwise row: nd, shape, x strides, y strides, with
    size-1 dimensions dropped and contiguous ones merged."""
    nd = len(zshape)

    def strides(shape: tuple[int, ...]) -> list[int]:
        shape = (1,) * (nd - len(shape)) + shape
        out, step = [0] * nd, 1
        for d in reversed(range(nd)):
            out[d] = 0 if shape[d] == 1 else step
            step *= shape[d]
        return out

    merged: list[list[int]] = []
    for extent, sx, sy in zip(zshape, strides(xshape), strides(yshape)):
        if extent == 1:
            continue
        if merged and merged[-1][1] == sx * extent and merged[-1][2] == sy * extent:
            merged[-1] = [merged[-1][0] * extent, sx, sy]
        else:
            merged.append([extent, sx, sy])
    merged = merged or [[1, 0, 0]]
    columns = list(zip(*merged))
    meta = np.array([len(merged), *columns[0], *columns[1], *columns[2]], dtype=np.int64)
    meta.flags.writeable = False
    return meta


class _Op(NamedTuple):
    """What recording an elementwise op needs, looked up once."""

    name: str
    arity: int
    forward: Callable[..., Any]
    codes: dict[str, int]  # by operand kind
    differentiable: bool
    comparison: bool
    integer: bool


_OPS: dict[str, _Op] = {
    s.name: _Op(
        s.name,
        s.arity,
        array_function(s),
        {k: CODE[(s.name, k)] for k in ((VV, VC, CV) if s.arity == 2 else ("v",))},
        s.differentiable,
        s.boolean,
        s.integer,
    )
    for s in OPS
}


def _shape(v: Any) -> tuple[int, ...]:
    return v.shape if v.__class__ is np.ndarray else np.shape(v)


def _ndim(v: Any) -> int:
    cls = v.__class__
    if cls is np.ndarray:
        return v.ndim
    return 0 if cls is float or cls is int or cls is bool else np.ndim(v)


def apply(name: str, *args: Any) -> Tensor:
    """The elementwise op `name` of the table on tensors or array data, with NumPy broadcasting:
    ``apply(name, x[, y], *params)``."""
    op = _OPS[name]
    return _apply(op, args[0], args[1] if op.arity == 2 else None, args[op.arity :])


def _apply(op: _Op, x: Any, y: Any, params: tuple) -> Tensor:
    binary = op.arity == 2
    if x.__class__ is np.ndarray and x.dtype == object:
        x = as_array(x)
    if y.__class__ is np.ndarray and y.dtype == object:
        y = as_array(y)
    xv = x._v if isinstance(x, Node) else _value(x)
    yv: Any = (y._v if isinstance(y, Node) else _value(y)) if binary else None
    xd, yd = _ndim(xv), _ndim(yv) if binary else 0
    if xd == 0 and yd == 0:  # scalars: the scalar recorder
        scalar = [
            v if isinstance(v, (Node, int, float)) else np.asarray(v).item() for v in (x, y)[: op.arity]
        ]
        return APPLY[op.name](*scalar, *params)
    try:  # values follow NumPy, RuntimeWarnings (log(0), 0/0) included
        z = op.forward(xv, yv, *params) if binary else op.forward(xv, *params)
    except ValueError:
        shapes = f"{np.shape(xv)} and {np.shape(yv)}" if binary else f"{np.shape(xv)}"
        raise ValueError(f"{op.name}: operands of shapes {shapes} cannot be broadcast together") from None
    except TypeError:  # NumPy has no loop for the data: strings, objects, None
        kinds = " and ".join(str(np.asarray(v).dtype) for v in ((xv, yv) if binary else (xv,)))
        raise TypeError(
            f"{op.name}: operands of dtypes {kinds}: tensors hold numbers (float64, int64, bool)"
        ) from None
    xt = isinstance(x, Node) and (x._rg or x._tape is not None)
    yt = binary and isinstance(y, Node) and (y._rg or y._tape is not None)
    if op.comparison and not (_tracing(x) or _tracing(y)):  # data: a bool array, no row
        return ArrayTensor._leaf(np.asarray(z != 0.0))
    tape = None
    if (xt or yt) and (op.differentiable or _tracing(x) or _tracing(y)):  # a replay needs them all
        tape = tape_ref()()
        if tape is None or tape.closed:
            tape = current_tape(x, y)
    if tape is None:
        if op.integer and all(np.asarray(v).dtype.kind in "iub" for v in (xv, yv)[: op.arity]):
            z = np.asarray(z).astype(np.result_type(*(xv, yv)[: op.arity]))
        return _leaf(z)
    meta = None
    if not binary:
        code, a, b = op.codes["v"], _row(tape, x), len(tape.consts)
        if params:
            tape.consts += params
    elif not yt and yd == 0:
        code, a, b = op.codes[VC], _row(tape, x), len(tape.consts)
        tape.consts.append(float(yv))
    elif not xt and xd == 0:
        code, a, b = op.codes[CV], len(tape.consts), _row(tape, y)
        tape.consts.append(float(xv))
    elif x is y and op.name == "mul":  # x * x as x ** 2 (the same values): its reverse adds 2 x g
        # once, where mul's would add x g twice to one block, a loop that does not vectorize
        code, a, b = _OPS["pow"].codes[VC], _row(tape, x), len(tape.consts)
        tape.consts.append(2.0)
    else:
        code, a, b = op.codes[VV], _row(tape, x), _row(tape, y)
        meta = _broadcast_meta(_shape(xv), _shape(yv), z.shape)
    if z.dtype is not _FLOAT64:  # a float64 operand with integer data
        z = z.astype(np.float64)
    out = _new(ArrayTensor)  # NumPy's result of C-ordered operands: C-ordered, the block itself
    out._v, out._tape, out._reg, out._grad = z, tape, None, None
    out._slot = tape.add_array(code, a, b, meta, z)
    out._rg = bool((xt and x._rg) or (yt and y._rg))
    return out


_FLOAT64 = np.dtype(np.float64)
_new = object.__new__


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """`x` where `condition` holds, else `y` (elementwise, broadcasting; no gradient leaks from
    the branch not taken)."""
    c = condition if _tracing(condition) else np.asarray(_value(condition), dtype=np.float64)
    return apply("add", apply("where_then", c, x), apply("where_else", c, y))


# numpy ufunc names -> ops of the table
_UFUNCS = {
    "add": "add", "subtract": "sub", "multiply": "mul", "divide": "div", "true_divide": "div",
    "power": "pow", "negative": "neg", "exp": "exp", "log": "log", "log1p": "log1p", "expm1": "expm1",
    "sqrt": "sqrt", "sin": "sin", "cos": "cos", "tan": "tan", "arcsin": "asin", "arccos": "acos",
    "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "absolute": "abs", "fabs": "abs",
    "maximum": "maximum", "minimum": "minimum", "arctan2": "atan2", "less": "lt", "less_equal": "le",
    "greater": "gt", "greater_equal": "ge", "equal": "eq", "not_equal": "ne",
}


def _binary_method(name: str, reflected: bool) -> Callable[[Any, Any], Tensor]:
    op = _OPS[name]
    if reflected:
        return lambda self, other: _apply(op, other, self, ())
    return lambda self, other: _apply(op, self, other, ())


_OPERATORS = {"add": "add", "sub": "sub", "mul": "mul", "div": "truediv", "pow": "pow",
              "lt": "lt", "le": "le", "gt": "gt", "ge": "ge", "eq": "eq", "ne": "ne"}

for _spec in OPS:
    if _spec.arity == 2:
        setattr(ArrayTensor, _spec.name, _binary_method(_spec.name, False))
for _op, _dunder in _OPERATORS.items():
    setattr(ArrayTensor, f"__{_dunder}__", _binary_method(_op, False))
    if not BY_NAME[_op].boolean:
        setattr(ArrayTensor, f"__r{_dunder}__", _binary_method(_op, True))
ArrayTensor.__hash__ = object.__hash__  # type: ignore[method-assign, assignment]
register_arrays(ArrayTensor, apply)


# the methods' implementations (modules that build on this one)
from .linalg import dot, matmul  # noqa: E402
from .reductions import _reduce, log_softmax, logsumexp, softmax  # noqa: E402
from .shapes import _axis, _c_strides, _gather, _index_entry, _index_key, _strided, broadcast_to  # noqa: E402
