"""GradBench's ``kmeans``: the cost sum_i min_j |C_j - P_i|^2 and a Newton direction for the centroids.

``dir`` is J / H for the gradient J of the cost with respect to the centroids C and its Hessian H,
which is diagonal (2 |S_j| on centroid j's coordinates, S_j the points nearest to it), so its
diagonal is the Hessian-vector product with a vector of ones: tapegrad computes J and H 1 in
one forward-over-reverse replay (``grad_and_hvp``). The distances come from |P|^2 - 2 P C^T + |C|^2,
with |P_i|^2 taken out of the minimum over j (it does not depend on j) and the rest one matmul of
homogeneous coordinates: [-2 P, 1] [C, |C|^2]^T (the (n, k, d) differences would take n k d floats;
an elementwise pass over the (n, k) distances per term costs as much as the matmul). Every system
runs this same function. Inputs: ``rand(n, d)`` points and their last k rows as centroids, for each
(k, n, d) in GradBench's order from seed 31337.
"""

from __future__ import annotations

import functools

import numpy as np

from . import inputs, programs

FUNCTIONS = ("cost", "dir")
SIZES = sorted(((k, n, d) for k in (10, 100, 1000) for n in (1000, 10_000) for d in (8, 16)),
               key=lambda w: w[0] * w[1] * w[2])


def cost(c, xp, points: np.ndarray):
    """The cost of the flat centroids `c` (k * d) for the points (n, d)."""
    C = c.reshape(-1, points.shape[1])
    lifted = xp.asarray(np.concatenate([-2.0 * points, np.ones((len(points), 1))], axis=1))
    D = lifted @ xp.concatenate([C, (C * C).sum(1).reshape(-1, 1)], axis=1).T  # |C_j|^2 - 2 P_i . C_j
    return xp.amin(D, 1).sum() + float((points * points).sum())


def make_input(size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(points, centroids) for (k, n, d)."""
    rng = np.random.RandomState(31337)
    for k, n, d in SIZES:
        points = rng.rand(n, d)
        if (k, n, d) == size:
            return points, points[-k:].copy()
    raise ValueError(f"{size} is not one of GradBench's kmeans workloads")


def message(size: tuple[int, int, int]) -> dict:
    points, centroids = make_input(size)
    return {"points": points.tolist(), "centroids": centroids.tolist()}


def reference(points: np.ndarray, centroids: np.ndarray) -> tuple[float, np.ndarray]:
    """The cost, and dir = C_j - mean(S_j) by hand (nearest centroid: the lowest j on ties)."""
    D = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(2)
    nearest = D.argmin(1)
    k = len(centroids)
    counts = np.bincount(nearest, minlength=k)
    sums = np.zeros_like(centroids)
    np.add.at(sums, nearest, points)
    return float(D.min(1).sum()), centroids - sums / counts[:, None]


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad."""
    value, direction = reference(inputs.vector(message, "points"), inputs.vector(message, "centroids"))
    return value if function == "cost" else direction.tolist()


def prepare(function: str, message: dict, replay: bool):
    points, centroids = inputs.vector(message, "points"), inputs.vector(message, "centroids")
    f, c = functools.partial(cost, points=points), centroids.ravel()
    if function == "cost":
        return programs.value(f, c, arrays=True, replay=replay), float
    if function == "dir":
        call = programs.gradient_and_hvp(f, c, np.ones_like(c), arrays=True, replay=replay)
        return call, lambda r: (r[0] / r[1]).reshape(centroids.shape).tolist()
    raise inputs.unknown("kmeans", function, FUNCTIONS)
