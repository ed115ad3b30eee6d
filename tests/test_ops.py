"""Walk the whole op table: every op and operand kind against central differences, torch, and the
Numba sweeps (forward replay and tangent sweep must agree with eager recording)."""

import math

import numpy as np
import pytest
from tapegrad.kernels.pyeval import forward_functions
from tapegrad.kernels.table import OPS

import tapegrad as tg
from tapegrad import kernels
from tapegrad.recorder import APPLY

from .conftest import needs_torch, torch

DIFFERENTIABLE = [s for s in OPS if s.differentiable]
PARAMS = {"clamp": (-0.5, 0.5)}


def kinds(spec):
    return ("vv", "vc", "cv") if spec.arity == 2 else ("v",)


def cases():
    for spec in OPS:
        for kind in kinds(spec):
            yield pytest.param(spec, kind, id=f"{spec.name}-{kind}")


def points(spec, rng, n=4):
    lo, hi = spec.domain
    return rng.uniform(lo, hi, size=(n, spec.arity))


def record(spec, kind, point):
    """Record the op on `point`; returns (output, [inputs that require grad])."""
    params = PARAMS.get(spec.name, ())
    args = [tg.tensor(float(v), requires_grad=True) for v in point]
    if kind == "vc":
        args[1] = float(point[1])
    if kind == "cv":
        args[0] = float(point[0])
    out = APPLY[spec.name](*args, *params)
    return out, [a for a in args if isinstance(a, tg.Tensor)]


def eager_grads(spec, kind, point):
    out, leaves = record(spec, kind, point)
    if not spec.differentiable:
        assert not out.requires_grad
        return out.item(), [0.0 for _ in leaves]
    out.backward()
    return out.item(), [leaf.grad.item() for leaf in leaves]


def central_differences(spec, kind, point, eps=1e-6):
    fast, ieee = forward_functions(spec)
    params = PARAMS.get(spec.name, ())
    f = lambda *v: ieee(*v, *params)  # noqa: E731
    wrt = {"v": [0], "vv": [0, 1], "vc": [0], "cv": [1]}[kind]
    grads = []
    for i in wrt:
        hi, lo = list(point), list(point)
        hi[i] += eps
        lo[i] -= eps
        grads.append((f(*hi) - f(*lo)) / (2 * eps))
    return grads


def torch_grads(spec, kind, point):
    params = PARAMS.get(spec.name, ())
    xs = [torch.tensor(float(v), requires_grad=k == "v") for v, k in zip(point, kind)]
    env = {
        "torch": torch,
        "x": xs[0],
        "p0": params[0] if params else None,
        "p1": params[1] if params else None,
    }
    if spec.arity == 2:
        env["y"] = xs[1]
    out = eval(spec.torch, env)
    if not out.requires_grad:
        return out.item(), [0.0 for x in xs if x.requires_grad]
    out.backward()
    return out.item(), [0.0 if x.grad is None else x.grad.item() for x in xs if x.requires_grad]


@pytest.mark.parametrize("spec,kind", [c for c in cases() if c.values[0].differentiable])
def test_gradient_matches_central_differences(spec, kind, rng):
    for point in points(spec, rng):
        _, grads = eager_grads(spec, kind, point)
        np.testing.assert_allclose(grads, central_differences(spec, kind, point), rtol=1e-6, atol=1e-7)


@needs_torch
@pytest.mark.parametrize("spec,kind", list(cases()))
def test_value_and_gradient_match_torch(spec, kind, rng):
    for point in points(spec, rng):
        value, grads = eager_grads(spec, kind, point)
        t_value, t_grads = torch_grads(spec, kind, point)
        assert value == pytest.approx(t_value, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(grads, t_grads, rtol=1e-12, atol=1e-15)


KINKS = [
    pytest.param(spec, kind, point, id=f"{spec.name}-{kind}-{point}")
    for spec in DIFFERENTIABLE for point in spec.kinks for kind in kinds(spec)
]


@needs_torch
@pytest.mark.parametrize("spec,kind,point", KINKS)
def test_kink_conventions_match_torch(spec, kind, point):
    value, grads = eager_grads(spec, kind, point)
    t_value, t_grads = torch_grads(spec, kind, point)
    np.testing.assert_allclose(value, t_value, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(grads, t_grads, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize(
    "expr,point,expected",
    [
        ("tg.relu(x)", 0.0, 0.0),
        ("abs(x)", 0.0, 0.0),
        ("x ** 0", 0.0, 0.0),
        ("2.0 ** x", 0.0, math.log(2.0)),
        ("0.0 ** x", 2.0, 0.0),
        ("0.0 ** x", 0.0, 0.0),
        ("tg.clamp(x, -1.0, 1.0)", 1.0, 1.0),
        ("tg.clamp(x, -1.0, 1.0)", -1.0, 1.0),
        ("tg.clamp(x, min=0.0)", 0.0, 1.0),
        ("tg.maximum(x, 1.0)", 1.0, 0.5),
        ("tg.minimum(x, x)", 1.0, 1.0),
        ("tg.sqrt(x)", 0.0, math.inf),
    ],
)
def test_design_conventions(expr, point, expected):
    """DESIGN.md section 2's conventions at non-differentiable points (torch's)."""
    x = tg.tensor(point, requires_grad=True)
    eval(expr, {"tg": tg, "x": x}).backward()
    assert x.grad.item() == expected


def test_zero_adjoint_does_not_poison_through_infinite_partial():
    # sqrt'(0) = inf; multiplying its output by 0 must give 0, not NaN, for x (and 1 for y)
    x = tg.tensor(0.0, requires_grad=True)
    y = tg.tensor(3.0, requires_grad=True)
    (tg.sqrt(x) * 0.0 + y).backward()
    assert x.grad.item() == 0.0 and y.grad.item() == 1.0


@pytest.mark.parametrize("spec,kind", list(cases()))
def test_numba_forward_replay_equals_eager(spec, kind, rng):
    """The generated Numba forward reproduces every value the Python recorder computed."""
    sweeps = kernels.sweeps()
    for point in points(spec, rng):
        out, _ = record(spec, kind, point)
        arrays = out.tape.arrays()
        inputs = np.array([float(x._v) for x in out.tape.inputs])
        vals = np.zeros_like(arrays.vals)
        failed = sweeps.forward(arrays.op, arrays.a, arrays.b, vals, arrays.consts, inputs, 0, len(vals))
        assert failed == -1
        np.testing.assert_array_equal(vals, arrays.vals)


@pytest.mark.parametrize("spec,kind", [c for c in cases() if c.values[0].differentiable])
def test_tangent_sweep_equals_reverse_sweep(spec, kind, rng):
    sweeps = kernels.sweeps()
    for point in points(spec, rng):
        out, leaves = record(spec, kind, point)
        arrays = out.tape.arrays()
        for k in range(len(leaves)):
            seeds = np.zeros(len(out.tape.inputs))
            seeds[[i for i, node in enumerate(out.tape.inputs) if node is leaves[k]]] = 1.0
            dot = np.zeros_like(arrays.vals)
            sweeps.tangent(arrays.op, arrays.a, arrays.b, arrays.vals, arrays.consts, seeds, dot, 0, len(dot))
            out.backward(retain_graph=True)
            assert dot[out._slot] == pytest.approx(leaves[k].grad.item(), rel=1e-12)
            for leaf in leaves:
                leaf.grad = None


def test_ieee_values_where_math_raises():
    assert tg.exp(tg.tensor(1000.0)).item() == math.inf
    assert tg.log(tg.tensor(0.0)).item() == -math.inf
    assert math.isnan(tg.log(tg.tensor(-1.0)).item())
    assert (tg.tensor(1.0) / 0.0).item() == math.inf
    assert math.isnan(tg.sqrt(tg.tensor(-1.0)).item())
    assert (tg.tensor(0.0) ** -1.0).item() == math.inf
    assert math.isnan((tg.tensor(-8.0) ** (1 / 3)).item())
    assert tg.sigmoid(tg.tensor(-1000.0)).item() == 0.0
    assert tg.sigmoid(tg.tensor(1000.0)).item() == 1.0


def test_every_op_is_a_function_and_a_method():
    for spec in OPS:
        assert callable(getattr(tg, spec.name)) and callable(getattr(tg.Tensor, spec.name))


def _compiled_op(spec, kind, point):
    """tg.compile of the op with its variable operands as one array argument."""
    params = PARAMS.get(spec.name, ())
    variable = [k for k, c in enumerate("xy"[: spec.arity]) if kind in ("v", "vv") or kind[k] == "v"]
    fixed = list(point)

    def f(v):
        args = list(fixed)
        for j, k in enumerate(variable):
            args[k] = v[j]
        return APPLY[spec.name](*args, *params)

    return tg.compile(f), np.array([point[k] for k in variable])


@pytest.mark.parametrize("spec,kind", [c for c in cases() if c.values[0].differentiable])
def test_hessian_matches_differences_of_the_gradient(spec, kind, rng):
    for point in points(spec, rng, n=2):
        cf, v = _compiled_op(spec, kind, point)
        eps = 1e-6
        rows = [(cf.grad(v + eps * e) - cf.grad(v - eps * e)) / (2 * eps) for e in np.eye(len(v))]
        np.testing.assert_allclose(cf.hessian(v), np.array(rows), rtol=1e-5, atol=1e-6)


@needs_torch
@pytest.mark.parametrize("spec,kind", [c for c in cases() if c.values[0].differentiable])
def test_hessian_matches_torch(spec, kind, rng):
    params = PARAMS.get(spec.name, ())
    for point in points(spec, rng, n=2):
        cf, v = _compiled_op(spec, kind, point)

        def g(t, point=point):
            args = [torch.tensor(float(p)) for p in point]
            j = 0
            for k in range(spec.arity):
                if kind in ("v", "vv") or kind[k] == "v":
                    args[k] = t[j]
                    j += 1
            env = {"torch": torch, "x": args[0], "y": args[-1],
                   "p0": params[0] if params else None, "p1": params[1] if params else None}
            return eval(spec.torch, env)

        expected = torch.autograd.functional.hessian(g, torch.tensor(v)).numpy()
        np.testing.assert_allclose(cf.hessian(v), expected, rtol=1e-10, atol=1e-12)
