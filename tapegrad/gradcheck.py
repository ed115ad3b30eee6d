"""``tg.gradcheck``: compare the tape's gradients with central finite differences (float64)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .autograd import grad
from .node import Node
from .state import no_grad
from .tensor import Tensor, tensor


class GradcheckError(RuntimeError):
    """Raised by :func:`gradcheck` when analytical and numerical gradients disagree."""


def _inputs(inputs: Any) -> list[Tensor]:
    items = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    return [tensor(x._v if isinstance(x, Node) else x, requires_grad=True) for x in items]


def _call(f: Callable[..., Any], args: Sequence[Tensor]) -> Any:
    out = f(*args)
    if not isinstance(out, Node):
        raise TypeError(f"gradcheck: f must return a tapegrad tensor, got {type(out).__name__}")
    return out


def gradcheck(
    f: Callable[..., Any],
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """True if d f / d inputs from the tape matches central differences at `inputs`.

    `inputs` is a number or a tuple of numbers/tensors; `f` takes that many tensors and returns one.
    """
    args = _inputs(inputs)
    out = _call(f, args)
    analytical = grad(out, args, allow_unused=True)
    base = [float(a._v) for a in args]
    for i, a_grad in enumerate(analytical):
        shifted = list(base)
        values = []
        for step in (eps, -eps):
            shifted[i] = base[i] + step
            with no_grad():
                values.append(float(_call(f, [tensor(v) for v in shifted])._v))
        numerical = (values[0] - values[1]) / (2 * eps)
        got = 0.0 if a_grad is None else float(a_grad._v)
        if not np.isclose(got, numerical, rtol=rtol, atol=atol, equal_nan=True):
            if raise_exception:
                raise GradcheckError(
                    f"gradcheck: d output / d input {i} at {base}: tape gives {got!r}, "
                    f"central differences give {numerical!r} (eps={eps}, atol={atol}, rtol={rtol})"
                )
            return False
    return True
