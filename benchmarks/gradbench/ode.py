"""GradBench's ``ode``: s RK4 steps on [0, 2] for y_0' = x_0, y_i' = x_i y_{i-1}, y(0) = 0.

The primal is y(2); the gradient is that of its last element y[n-1]. Each RK4 step carries y four
indices further, so at GradBench's sizes (n > 4s) y[n-1] and its gradient are exactly 0 (GradBench's
own reference is the exact solution's 2^n prod(x) / n!, also 0 to its tolerance): a check there only
says "zero", so :func:`reference` (RK4 and its adjoint by hand) is also checked where y[n-1] is not
0. Inputs: ``rand(n)`` for each (n, s), n in 1e3, 1e4, 1e5 and s in 1, 10, 100 sorted by n s, from
seed 31337.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba.extending import register_jitable

from . import inputs, programs

FUNCTIONS = ("primal", "gradient")
SIZES = sorted(((n, s) for n in (1000, 10_000, 100_000) for s in (1, 10, 100)), key=lambda w: w[0] * w[1])


@register_jitable
def ode_fun(x, y, z):
    z[0] = x[0]
    for i in range(1, len(x)):
        z[i] = x[i] * y[i - 1]


def ode_primal(x, s):
    """GradBench's ode.hpp primal: y after s RK4 steps from t = 0 to 2."""
    n, h = len(x), 2.0 / s
    y, tmp = np.zeros_like(x), np.zeros_like(x)
    k1, k2, k3, k4 = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for _ in range(s):
        ode_fun(x, y, k1)
        for i in range(n):
            tmp[i] = y[i] + h * k1[i] / 2.0
        ode_fun(x, tmp, k2)
        for i in range(n):
            tmp[i] = y[i] + h * k2[i] / 2.0
        ode_fun(x, tmp, k3)
        for i in range(n):
            tmp[i] = y[i] + h * k3[i]
        ode_fun(x, tmp, k4)
        for i in range(n):
            y[i] += h * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]) / 6.0
    return y


def ode_last(x, s):
    """The objective of the gradient: y[n-1]."""
    return ode_primal(x, s)[-1]


ode_njit = numba.njit(ode_primal)


def ode_vec(x, xp, s):
    f = lambda y: xp.concatenate([x[:1], x[1:] * y[:-1]])
    h = 2.0 / s

    def step(y):
        k1 = f(y)
        k2 = f(y + h * k1 / 2.0)
        k3 = f(y + h * k2 / 2.0)
        k4 = f(y + h * k3)
        return y + h * (k1 + 2.0 * k2 + 2.0 * k3 + k4) / 6.0

    y = xp.zeros_like(x)
    if xp.__name__ == "jax.numpy":  # one traced step: XLA takes minutes on 100 unrolled ones
        import jax

        return jax.lax.fori_loop(0, s, lambda _, y: step(y), y)
    for _ in range(s):
        y = step(y)
    return y


def make_input(size: tuple[int, int]) -> np.ndarray:
    return inputs.seeded_rand(SIZES, lambda w: w[0], size)


def message(size: tuple[int, int]) -> dict:
    return {"x": make_input(size).tolist(), "s": size[1]}


def reference(x: np.ndarray, s: int) -> tuple[float, np.ndarray]:
    """y[-1] and its gradient: RK4 in NumPy, then the adjoint by hand, stage by stage (a stage
    k = f(p) sends back x0 += k0bar, x[1:] += kbar[1:] p[:-1], p[:-1] += kbar[1:] x[1:])."""
    h = 2.0 / s
    shift = (h / 2.0, h / 2.0, h)  # stage i > 0 evaluates f at y + shift[i-1] k_(i-1)
    f = lambda p: np.concatenate([x[:1], x[1:] * p[:-1]])
    y, points = np.zeros_like(x), []
    for _ in range(s):
        p, k = [y], []
        for i in range(4):
            k.append(f(p[i]))
            if i < 3:
                p.append(y + shift[i] * k[i])
        points.append(p)
        y = y + h * (k[0] + 2.0 * k[1] + 2.0 * k[2] + k[3]) / 6.0
    xbar, ybar = np.zeros_like(x), np.zeros_like(x)
    ybar[-1] = 1.0
    for p in reversed(points):
        kbar = [w * h * ybar for w in (1 / 6, 1 / 3, 1 / 3, 1 / 6)]
        for i in (3, 2, 1, 0):
            xbar[0] += kbar[i][0]
            xbar[1:] += kbar[i][1:] * p[i][:-1]
            pbar = np.append(kbar[i][1:] * x[1:], 0.0)
            ybar = ybar + pbar
            if i:
                kbar[i - 1] = kbar[i - 1] + shift[i - 1] * pbar
    return float(y[-1]), xbar


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad (the njit primal; the adjoint by hand)."""
    x, s = inputs.vector(message, "x"), int(message["s"])
    return ode_njit(x, s).tolist() if function == "primal" else reference(x, s)[1].tolist()


def prepare(function: str, message: dict, replay: bool):
    x, s = inputs.vector(message, "x"), int(message["s"])
    if function == "primal":
        call = programs.value(functools.partial(ode_primal, s=s), x, arrays=False, replay=replay)
        return call, lambda y: y.tolist()
    if function == "gradient":
        call = programs.value_and_grad(functools.partial(ode_last, s=s), x, arrays=False, replay=replay)
        return call, lambda r: r[1].tolist()
    raise inputs.unknown("ode", function, FUNCTIONS)
