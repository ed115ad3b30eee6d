"""GradBench's ``lse``: y(x) = log(sum_i exp(x_i - A)) + A with A = max(x); the gradient is softmax(x).

Inputs: ``rand(n)`` for each n = 2500, 5000, ..., 1280000 in turn from seed 31337. Each library
runs its own logsumexp (tapegrad's is one row, its kernel shifting by the maximum, as torch's).
"""

from __future__ import annotations

import numpy as np

from . import inputs, programs

FUNCTIONS = ("primal", "gradient")
SIZES = (2500, 5000, 10000, 20000, 40000, 80000, 160000, 320000, 640000, 1280000)


def logsumexp(a, xp, axis: int = 0):
    """logsumexp over `axis` in NumPy, tapegrad.numpy or torch (their own), or jax.numpy."""
    if xp is np:
        top = a.max(axis, keepdims=True)
        return np.log(np.exp(a - top).sum(axis)) + top.squeeze(axis)
    if hasattr(xp, "logsumexp"):
        return xp.logsumexp(a, axis)
    import jax

    return jax.scipy.special.logsumexp(a, axis)


lse = logsumexp  # lse(x, xp): GradBench's lse of a vector


def make_input(n: int) -> np.ndarray:
    return inputs.seeded_rand(SIZES, lambda size: size, n)


def message(n: int) -> dict:
    return {"x": make_input(n).tolist()}


def reference(x: np.ndarray) -> tuple[float, np.ndarray]:
    e = np.exp(x - x.max())
    return float(np.log(e.sum()) + x.max()), e / e.sum()


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad."""
    value, grad = reference(inputs.vector(message, "x"))
    return value if function == "primal" else grad.tolist()


def prepare(function: str, message: dict, replay: bool):
    x = inputs.vector(message, "x")
    return programs.value_then_gradient("lse", function, FUNCTIONS, lse, x, arrays=True, replay=replay)
