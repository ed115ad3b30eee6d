"""A custom op with an implicit derivative: Kepler's equation, ``python -m tapegrad.examples.kepler``.

Kepler's equation E - e sin E = M gives a planet's eccentric anomaly E at mean anomaly M on an
orbit of eccentricity e; it has no closed form, so E comes from Newton's method. Recording the
Newton iterations would put every iteration on the tape and differentiate through them; the
implicit function theorem gives the derivative of the solution directly:
dE/dM = 1 / (1 - e cos E), dE/de = sin E / (1 - e cos E).

``tg.custom_op`` registers the solve and its rules (``@njit`` functions); they then run inside
tapegrad's Numba sweeps, so a compiled fit of an orbit to observed positions replays, Newton
solves included, without returning to Python.
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

import tapegrad as tg
import tapegrad.numpy as tnp


@numba.njit
def solve_kepler(M, e):
    """E with E - e sin E = M, elementwise (Newton's method from E = M + e sin M)."""
    E = M + e * np.sin(M)
    for _ in range(50):
        step = (E - e * np.sin(E) - M) / (1.0 - e * np.cos(E))
        E = E - step
        if np.max(np.abs(step)) < 1e-12:  # quadratic convergence: E is now exact to rounding
            break
    return E


@numba.njit
def kepler_vjp(M, e, E, Ebar):
    """Cotangents of M and e, by the implicit function theorem."""
    scale = Ebar / (1.0 - e * np.cos(E))
    return scale, np.sum(scale * np.sin(E))


@numba.njit
def kepler_jvp(M, e, E, Mdot, edot):
    """The tangent of E along (Mdot, edot)."""
    return (Mdot + edot * np.sin(E)) / (1.0 - e * np.cos(E))


kepler = tg.custom_op("kepler", solve_kepler, kepler_vjp, kepler_jvp)


def positions(params: Any, t: np.ndarray) -> tuple[Any, Any]:
    """(x, y) on an orbit with params = (semi-major axis a, eccentricity e, period P, phase) at t."""
    a, e, period, phase = params[0], params[1], params[2], params[3]
    E = kepler(tg.tensor(2.0 * np.pi * t) / period + phase, e)
    return a * (tg.cos(E) - e), a * tg.sqrt(1.0 - e * e) * tg.sin(E)


def misfit(params: Any, t: np.ndarray, observed: np.ndarray) -> Any:
    """Sum of squared distances between the orbit's positions at t and the observations."""
    x, y = positions(params, t)
    return tnp.sum((x - observed[0]) ** 2 + (y - observed[1]) ** 2)


def fit(seed: int = 0, report: bool = True) -> dict[str, Any]:
    """Fit an orbit to 200 noisy positions with scipy's L-BFGS-B, gradients replayed."""
    from scipy.optimize import minimize

    say = print if report else (lambda *args: None)
    rng = np.random.default_rng(seed)
    truth = np.array([1.5, 0.6, 3.0, 0.4])
    t = np.sort(rng.uniform(0.0, 6.0, 200))
    x, y = positions(truth, t)
    observed = np.stack([x.numpy(), y.numpy()]) + rng.normal(0.0, 0.01, (2, len(t)))
    loss = tg.compile(lambda p: misfit(p, t, observed))
    start = np.array([1.0, 0.3, 2.9, 0.0])
    for _ in range(2):  # records the tape and compiles the op's kernels; loads the replay
        loss.value_and_grad(start)
    seconds = 0.0

    def timed(p: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal seconds
        began = time.perf_counter()
        out = loss.value_and_grad(p)
        seconds += time.perf_counter() - began
        return out

    result = minimize(timed, start, jac=True, method="L-BFGS-B",
                      bounds=[(0.1, 10.0), (0.0, 0.95), (0.5, 10.0), (-np.pi, np.pi)])
    say(f"fitted (a, e, P, phase) = {np.round(result.x, 4)}, truth {truth}")
    say(f"{result.nfev} replayed values and gradients (200 Kepler solves each), "
        f"{seconds / result.nfev * 1e6:.0f} µs each; a tape of {len(loss.tape)} rows")
    return {"params": result.x, "truth": truth, "evaluations": result.nfev, "seconds": seconds}


if __name__ == "__main__":
    fit()
