"""GradBench's ``ba``: bundle adjustment's reprojection errors and their sparse Jacobian (ADBench).

Observation i sees point X = points[i mod m] with camera cams[i mod n] ([r (3), C (3), f, u0, v0,
k1, k2]): Xc = rodrigues(r, X - C), p = Xc[:2] / Xc[2] (1 + k1 |.|^2 + k2 |.|^4), and its errors are
w_i (f p + (u0, v0) - feat_i) and 1 - w_i^2. GradBench sends one camera, point, weight and feature,
which the tool repeats n, m and p times (it must not exploit the repetition).

The errors are computed with whole-array ops over the observations, from each observation's own
copy of its 15 parameters (camera, point, weight), parameter by parameter: a (15, p) array, whose rows
are the ops' operands (a column of a (p, 15) one is a strided gather, forward and back, which cost
a quarter of the Jacobian's time). An error depends on its own
observation's copy alone, so the gradient of the sum of one kind of error with respect to the copies
holds every observation's partials of that error: the Jacobian's 3p rows come from three reverse
sweeps. They fill ADBench's CSR layout (per observation two rows of 15
entries: camera, point and weight columns; then one row per weight error), of which GradBench
compares the first 30 entries and the last of each list.
"""

from __future__ import annotations

import functools

import numpy as np

import tapegrad as tg

from . import differences, inputs, programs

FUNCTIONS = ("objective", "jacobian")


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def errors(v, xp, feat: np.ndarray):
    """The errors (3, p) of every observation, two reprojection errors and the weight error, from
    its parameters v (15, p: rotation, camera centre, f, u0, v0, k1, k2, point, weight) and its
    feature feat (p, 2). (Stacked along axis 0: each kind of error contiguous, as the rows of v;
    stacked along axis 1, interleaving them cost tapegrad 0.2 ms forward and back.)"""
    col = [v[j] for j in range(15)]
    r, X = col[0:3], [col[11 + j] - col[3 + j] for j in range(3)]
    f, u0, v0, k1, k2, w = col[6], col[7], col[8], col[9], col[10], col[14]
    theta2 = r[0] * r[0] + r[1] * r[1] + r[2] * r[2]
    turned = theta2 != 0.0
    theta = xp.sqrt(xp.where(turned, theta2, 1.0))  # Rodrigues' formula where theta > 0,
    cos, sin = xp.cos(theta), xp.sin(theta)
    axis = [rj / theta for rj in r]
    along = (axis[0] * X[0] + axis[1] * X[1] + axis[2] * X[2]) * (1.0 - cos)
    axis_x, r_x = _cross(axis, X), _cross(r, X)  # else its first order: X + r x X
    Xc = [xp.where(turned, X[j] * cos + axis_x[j] * sin + axis[j] * along, X[j] + r_x[j]) for j in range(3)]
    px, py = Xc[0] / Xc[2], Xc[1] / Xc[2]
    rsq = px * px + py * py
    scale = f * (1.0 + k1 * rsq + k2 * rsq * rsq)
    fx, fy = xp.asarray(feat[:, 0]), xp.asarray(feat[:, 1])
    return xp.stack([w * (px * scale + u0 - fx), w * (py * scale + v0 - fy), 1.0 - w * w])


class Problem:
    """One ba problem: each observation's copy of its parameters, and the Jacobian's CSR pattern."""

    def __init__(self, n: int, m: int, p: int, cam: np.ndarray, x: np.ndarray, w: float, feat: np.ndarray):
        self.n, self.m, self.p = n, m, p
        obs = np.arange(p)
        cam_of, point_of = obs % n, obs % m
        cams, points = np.tile(cam, (n, 1)), np.tile(x, (m, 1))
        self.v = np.concatenate([cams[cam_of], points[point_of], np.full((p, 1), float(w))], axis=1).T.copy()
        self.feat = np.tile(feat, (p, 1))
        weight_col = 11 * n + 3 * m + obs
        columns = np.concatenate([11 * cam_of[:, None] + np.arange(11),
                                  11 * n + 3 * point_of[:, None] + np.arange(3), weight_col[:, None]], axis=1)
        self.cols = np.concatenate([np.repeat(columns, 2, axis=0).ravel(), weight_col])
        self.rows = np.concatenate([np.arange(0, 30 * p + 1, 15), 30 * p + 1 + obs])

    def objective(self, v, xp):
        return errors(v.reshape(15, self.p), xp, self.feat)

    def jacobian_values(self, blocks: list[np.ndarray]) -> np.ndarray:
        """The CSR values from the three vjps' (15, p) blocks (the weight error's: row 14),
        written once into the list (interleaving the first two blocks by observation)."""
        values = np.empty(31 * self.p)
        pairs = values[: 30 * self.p].reshape(self.p, 2, 15)
        pairs[:, 0], pairs[:, 1] = blocks[0].T, blocks[1].T
        values[30 * self.p :] = blocks[2][14]
        return values


SIZES = ((49, 7776, 31843), (21, 11315, 36455))  # (n, m, p) of GradBench's ba1 and ba2


def message(size: tuple[int, int, int]) -> dict:
    """An evaluate input for (n, m, p): a camera looking down its z axis at a point 8 units away
    (GradBench reads its camera, point and feature from ADBench's data files)."""
    n, m, p = size
    cam = [0.02, -0.03, 0.01, 0.1, -0.2, -8.0, 400.0, 1.5, -2.5, 1e-3, -2e-6]
    return {"n": n, "m": m, "p": p, "cam": cam, "x": [0.3, -0.4, 0.5], "w": 0.85, "feat": [12.0, -20.0]}


def from_message(message: dict) -> Problem:
    return Problem(int(message["n"]), int(message["m"]), int(message["p"]), inputs.vector(message, "cam"),
                   inputs.vector(message, "x"), float(message["w"]), inputs.vector(message, "feat"))


def _objective_output(e: np.ndarray, p: int) -> dict:
    return {"reproj_error": {"elements": e[:2, 0].tolist(), "repeated": p},
            "w_err": {"element": float(e[2, 0]), "repeated": p}}


def compressed(values: np.ndarray, pb: Problem) -> dict:
    """GradBench's compressed Jacobian: the first 30 entries of each CSR list and its last one."""
    return {name: [*full[:30].tolist(), full[-1].item()] for name, full in
            (("rows", pb.rows), ("cols", pb.cols), ("vals", values))}


def jacobian(pb: Problem, replay: bool):
    """The timed call: the CSR values of the Jacobian, from the pullbacks of the three error
    rows' unit cotangents: one recording (or one forward replay) and three reverse sweeps."""
    v = pb.v.ravel()
    seeds = np.zeros((3, 3, pb.p))
    for j in range(3):
        seeds[j, j] = 1.0
    if replay:
        cf = programs.compiled(pb.objective, v, arrays=True)
        return lambda: pb.jacobian_values([g.reshape(15, pb.p) for g in cf.vjp((v,), seeds)[1][0]])

    def eager():
        _, pull = tg.vjp(lambda t: pb.objective(t, programs.tnp), v)
        return pb.jacobian_values([pull(s)[0].reshape(15, pb.p) for s in seeds])

    return eager


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad: NumPy errors, ADBench's CSR layout
    transcribed from its C++, and observation 0's partials by central differences."""
    pb = from_message(message)
    n, m, p = pb.n, pb.m, pb.p
    if function == "objective":
        return _objective_output(errors(pb.v[:, :1], np, pb.feat[:1]), p)
    J = [differences.central(lambda v, r=r: errors(v.reshape(15, 1), np, pb.feat[:1])[r, 0], pb.v[:, 0])
         for r in range(2)]
    rows, cols, vals = [0], [], []
    for i in range(p):
        cam, point = 11 * (i % n), 11 * n + 3 * (i % m)
        block = [*range(cam, cam + 11), *range(point, point + 3), 11 * n + 3 * m + i]
        for r in range(2):
            rows.append(rows[-1] + 15)
            cols += block
            vals += J[r].tolist()  # every observation repeats observation 0's data
    for i in range(p):
        rows.append(rows[-1] + 1)
        cols.append(11 * n + 3 * m + i)
        vals.append(-2.0 * float(message["w"]))
    return {"rows": rows[:30] + rows[-1:], "cols": cols[:30] + cols[-1:], "vals": vals[:30] + vals[-1:]}


def prepare(function: str, message: dict, replay: bool):
    pb = from_message(message)
    if function == "objective":
        call = programs.value(pb.objective, pb.v.ravel(), arrays=True, replay=replay)
        return call, functools.partial(_objective_output, p=pb.p)
    if function == "jacobian":
        return jacobian(pb, replay), functools.partial(compressed, pb=pb)
    raise inputs.unknown("ba", function, FUNCTIONS)
