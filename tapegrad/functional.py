"""The functional API, JAX/autograd-like: transform a function of numbers and arrays.

``grad``, ``value_and_grad``, ``vjp`` and ``jacobian`` record `f` eagerly on a fresh tape (array
arguments become array tensors, so ``tapegrad.numpy`` and tg ops record one row per array op) and
return NumPy arrays and floats. ``jvp`` and ``hessian`` need forward-mode and second-order sweeps:
they record `f` with :func:`tg.compile` (scalar rows) and replay it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import autograd
from .node import Node, recording
from .state import enable_grad
from .tensor import Tensor, float_array, tensor

Argnums = int | Sequence[int]


def _numbers(value: Any) -> Any:
    """A tensor's value as a float or a NumPy array."""
    v = value._v if isinstance(value, Node) else value
    return v.copy() if isinstance(v, np.ndarray) else float(v)


def _fresh(g: Any) -> Any:
    """A gradient tensor of autograd.grad as a float or its own array."""
    return g._v if isinstance(g._v, np.ndarray) else float(g._v)


def _record(f: Callable[..., Any], args: Sequence[Any], argnums: tuple[int, ...]):
    """Call f with the chosen arguments as tensors that require grad; (output, those tensors)."""
    args = list(args)
    for k in argnums:
        if not -len(args) <= k < len(args):
            raise ValueError(f"argnums {k} is out of range for {len(args)} arguments")
        try:
            value = args[k]._v if isinstance(args[k], Node) else args[k]
            args[k] = tensor(float_array(value), requires_grad=True)  # (tensor() copies an array)
        except (TypeError, ValueError) as err:
            raise TypeError(f"argument {k} must be a number or an array of numbers ({err})") from None
    with recording(), enable_grad():
        out = f(*args)
    return out, [args[k] for k in argnums]


def _pull_back(out: Any, inputs: list[Tensor], cotangent: Any, retain: bool) -> list[Any]:
    if not (isinstance(out, Node) and out._rg):  # f does not depend on its arguments
        return [np.zeros(np.shape(t._v)) if np.ndim(t._v) else 0.0 for t in inputs]
    grads = autograd.grad(out, inputs, cotangent, retain_graph=retain, allow_unused=True)
    return [
        # autograd.grad's results are fresh arrays no one else holds: returned without a copy
        (np.zeros(np.shape(t._v)) if np.ndim(t._v) else 0.0) if g is None else _fresh(g)
        for g, t in zip(grads, inputs)
    ]


def _argnums(argnums: Argnums) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, int):
        return (argnums,), True
    return tuple(argnums), False


def value_and_grad(f: Callable[..., Any], argnums: Argnums = 0) -> Callable[..., tuple[float, Any]]:
    """A function returning (f(*args), df/d args[argnums]) for a scalar-valued f."""
    nums, single = _argnums(argnums)

    def value_and_grad_f(*args: Any) -> tuple[float, Any]:
        out, inputs = _record(f, args, nums)
        if not isinstance(out, (Node, int, float, np.number, np.ndarray)):
            raise TypeError(f"grad: f must return a scalar tensor or number, got {type(out).__name__}")
        if np.ndim(_numbers(out)) != 0:
            raise TypeError(f"grad: f must return a scalar, got shape {np.shape(_numbers(out))}")
        grads = _pull_back(out, inputs, None, retain=False)
        return float(_numbers(out)), grads[0] if single else tuple(grads)

    return value_and_grad_f


def grad(f: Callable[..., Any], argnums: Argnums = 0) -> Callable[..., Any]:
    """A function returning df/d args[argnums] for a scalar-valued f."""
    vg = value_and_grad(f, argnums)
    return lambda *args: vg(*args)[1]


def vjp(f: Callable[..., Any], *primals: Any) -> tuple[Any, Callable[[Any], tuple[Any, ...]]]:
    """(f(*primals), vjp_fn): vjp_fn(cotangent) pulls a cotangent of f's output back to every
    primal (callable any number of times)."""
    out, inputs = _record(f, primals, tuple(range(len(primals))))
    value = _numbers(out)

    def vjp_fn(cotangent: Any) -> tuple[Any, ...]:
        cot = np.asarray(cotangent, dtype=np.float64)
        if cot.shape != np.shape(value):
            raise ValueError(f"vjp: cotangent has shape {cot.shape}, f's output has shape {np.shape(value)}")
        return tuple(_pull_back(out, inputs, cot if cot.ndim else float(cot), retain=True))

    return value, vjp_fn


def jacobian(f: Callable[..., Any], argnums: int = 0) -> Callable[..., np.ndarray]:
    """A function returning d f / d args[argnums], of shape (output shape + argument shape):
    one reverse sweep per output element."""

    def jacobian_f(*args: Any) -> Any:
        out, (x,) = _record(f, args, (argnums,))
        value = _numbers(out)
        rows = []
        for k in range(int(np.size(value))):
            cot = np.zeros(np.size(value))
            cot[k] = 1.0
            cot = cot.reshape(np.shape(value))
            rows.append(_pull_back(out, [x], cot if cot.ndim else 1.0, retain=True)[0])
        jac = np.array(rows, dtype=np.float64).reshape(np.shape(value) + np.shape(x._v))
        return float(jac) if jac.ndim == 0 else jac

    return jacobian_f


def hessian(f: Callable[..., Any]) -> Callable[[Any], Any]:
    """A function returning the Hessian of a scalar f of one argument (recorded with tg.compile,
    one forward-over-reverse replay per coordinate)."""
    from .compiled import compile

    return compile(f).hessian


def jvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """(f(*primals), the derivative of f along `tangents`), by a tangent sweep of f's tape."""
    from .compiled import compile

    return compile(f).jvp(tuple(primals), tuple(tangents))


__all__ = ["grad", "value_and_grad", "vjp", "jacobian", "hessian", "jvp"]
