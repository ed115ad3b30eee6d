"""The op table as functions: ``tg.exp(x)``, ``tg.maximum(x, y)``, ``tg.clamp(x, min, max)``, ...

Each takes tensors, Values or plain numbers (a plain number gives a tensor) and records on the
tape when an operand requires grad. Generated from :mod:`kernels.table`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .array import ArrayTensor, apply
from .kernels.table import OPS
from .recorder import APPLY, clamp, where


def _binary(name: str) -> Callable[[Any, Any], Any]:
    """A binary op that records array operands as one array row (operators dispatch by class)."""
    scalar = APPLY[name]

    def fn(x: Any, y: Any) -> Any:
        if isinstance(x, (ArrayTensor, np.ndarray)) or isinstance(y, (ArrayTensor, np.ndarray)):
            return apply(name, x, y)
        return scalar(x, y)

    fn.__name__ = fn.__qualname__ = name
    return fn

_DOC = "{name}({args}): {fwd} (recorded; derivative {partials}){kink}"

__all__ = ["clamp", "where"]
for _spec in OPS:
    if _spec.name == "clamp":
        continue
    _fn = _binary(_spec.name) if _spec.arity == 2 else APPLY[_spec.name]
    _partials = f"d/dx = {_spec.dx}" + (f", d/dy = {_spec.dy}" if _spec.arity == 2 else "")
    _fn.__doc__ = _DOC.format(
        name=_spec.name, args="x, y" if _spec.arity == 2 else "x", fwd=_spec.fwd,
        partials=_partials if _spec.differentiable else "none",
        kink=f"; {_spec.kink}" if _spec.kink else "",
    )
    globals()[_spec.name] = _fn
    __all__.append(_spec.name)
