"""The op table's forward formulas as Python functions, for eager recording.

``fast`` uses :mod:`math` (quick, but raises where IEEE arithmetic gives inf or NaN: ``log(0)``,
``exp(1000)``, ``1/0``); ``ieee`` evaluates the same formula with NumPy float64 and is used only
when ``fast`` raises, so eager values match the Numba sweeps and torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

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


# NumPy versions of the helpers, for evaluating formulas on whole arrays
_ARRAY_HELPERS = {
    "power": np.power,
    "sigmoid": lambda x: 0.5 + 0.5 * np.tanh(0.5 * x),
    "relu": lambda x: np.maximum(x, 0.0),  # +0.0 at -0.0 (torch: -0.0); np.where would cost 3x
    "clamp": np.clip,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "truth": lambda c: np.asarray(c, dtype=np.float64),
}
_ARRAY = {**{k: v for k, v in _IEEE.items() if isinstance(v, np.ufunc)}, **_ARRAY_HELPERS, "np": np}


def array_function(spec: OpSpec) -> Callable:
    """The op's forward on NumPy arrays, broadcasting: the table's ``array`` expression, else its
    formula evaluated with NumPy's functions, else (a formula NumPy cannot run on arrays) the
    Python formula element by element."""
    args = arguments(spec)
    formula = spec.array or spec.fwd
    names = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", formula)) - set(args.split(", "))
    if spec.array or (names <= set(_ARRAY) and " if " not in formula):
        return eval(f"lambda {args}: {formula}", _ARRAY)
    fast, ieee = forward_functions(spec)

    def scalar(*values: float) -> float:
        try:
            return fast(*values)
        except MATH_ERRORS:
            return ieee(*values)

    return np.vectorize(scalar, otypes=[np.float64])


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
