"""The op table's forward formulas as Python functions, for eager recording.

``fast`` uses :mod:`math` (quick, but raises where IEEE arithmetic gives inf or NaN: ``log(0)``,
``exp(1000)``, ``1/0``); ``ieee`` evaluates the same formula with NumPy float64 and is used only
when ``fast`` raises, so eager values match the Numba sweeps and torch.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .codegen import MATH_NAMES, helper_source
from .table import OpSpec

MATH_ERRORS = (ArithmeticError, ValueError)

_NUMPY_NAMES = {
    "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "atan2": np.arctan2,
    "pow": np.power, "erf": math.erf,
}


def _namespace(use_numpy: bool) -> dict:
    ns: dict = {}
    for name in MATH_NAMES.split():
        ns[name] = _NUMPY_NAMES.get(name, getattr(np, name, None)) if use_numpy else getattr(math, name)
    exec(helper_source(), ns)
    return ns


_FAST = _namespace(False)
_IEEE = _namespace(True)


def arguments(spec: OpSpec) -> str:
    """The formula's argument list: ``x``, ``x, y`` or ``x, p0, p1``."""
    return ", ".join(["x", "y"][: spec.arity] + [f"p{k}" for k in range(spec.params)])


def forward_functions(spec: OpSpec) -> tuple[Callable, Callable]:
    """(fast, ieee) Python functions computing the op's value from its operands' values."""
    args = arguments(spec)
    fast = eval(f"lambda {args}: {spec.fwd}", _FAST)
    numpy_formula = eval(f"lambda {args}: {spec.fwd}", _IEEE)

    def ieee(*values: float) -> float:
        with np.errstate(all="ignore"):
            return float(numpy_formula(*map(np.float64, values)))

    return fast, ieee
