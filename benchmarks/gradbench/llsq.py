"""GradBench's ``llsq``: a linear least-squares objective (cmpad's ``llsq_obj``).

y(x) = 1/2 sum_i (s_i - sum_j x_j t_i^j)^2 with t_i = -1 + 2i/(n-1), s_i = sign(t_i), for m = 128
coefficients x and n points. Written with whole-array ops, as torch and JAX write it: the powers
t_i^j are a constant n x m matrix V, made once per size, and y = |s - V x|^2 / 2, three array rows
on a tape. Inputs: ``rand(128)`` for each n in turn from seed 31337.
"""

from __future__ import annotations

import functools

import numpy as np

from . import inputs, programs

FUNCTIONS = ("primal", "gradient")
SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8196, 16392)  # n (GradBench's, 8196 included)
M = 128


@functools.cache
def _data(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """s and the Vandermonde matrix V of the points (constants: made once per size)."""
    t = -1.0 + np.arange(n) * 2.0 / (n - 1)
    return np.sign(t), t[:, None] ** np.arange(m)


def llsq_vec(x, xp, n):
    s, V = _data(n, x.shape[0])
    r = xp.asarray(s) - xp.asarray(V) @ x
    return (r * r).sum() / 2.0


def make_input(n: int) -> np.ndarray:
    return inputs.seeded_rand(SIZES, lambda _: M, n)


def message(n: int) -> dict:
    return {"x": make_input(n).tolist(), "n": n}


def reference(x: np.ndarray, n: int) -> tuple[float, np.ndarray]:
    """y and its gradient -V^T r."""
    s, V = _data(n, len(x))
    r = s - V @ x
    return float(r @ r / 2.0), -V.T @ r


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad."""
    value, grad = reference(inputs.vector(message, "x"), int(message["n"]))
    return value if function == "primal" else grad.tolist()


def prepare(function: str, message: dict, replay: bool):
    f = functools.partial(llsq_vec, n=int(message["n"]))
    return programs.value_then_gradient("llsq", function, FUNCTIONS, f, inputs.vector(message, "x"),
                                        arrays=True, replay=replay)
