"""Numerical hygiene: a zero adjoint never meets an infinite partial (0 * inf), and the stable
formulations (logsumexp, softmax, sigmoid, log1p, cross entropy) stay finite and right at |x| = 1000."""

import math

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad.nn import functional as F

KINKS = [  # (op, a point where its derivative is infinite)
    (tg.sqrt, 0.0), (tg.log, 0.0), (lambda v: v ** 0.5, 0.0), (lambda v: 1.0 / v, 0.0), (tg.asin, 1.0),
    (tg.acos, -1.0), (lambda v: v ** -1.0, 0.0),
]


@pytest.mark.parametrize("op, at", KINKS)
def test_a_zero_adjoint_stays_zero(op, at):
    """The adjoint of op(x) is exactly 0 (multiplied by 0, or an unused element): x's gradient is
    the other term's, never 0 * inf = NaN (scalars and arrays)."""
    s = tg.tensor(at, requires_grad=True)
    (op(s) * 0.0 + 3.0 * s).backward()
    assert s.grad.item() == 3.0
    x = tg.tensor(np.array([at, 0.5]), requires_grad=True)
    (op(x) * np.array([0.0, 0.0]) + 3.0 * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


@pytest.mark.parametrize("big", [1000.0, -1000.0])
def test_stable_at_a_thousand(big):
    v = np.array([big, 0.0, -big, big - 1.0])
    x = tg.tensor(v, requires_grad=True)
    y = tnp.logsumexp(x)
    y.backward()
    top = v.max()
    assert y.item() == pytest.approx(top + math.log(np.exp(v - top).sum()), rel=1e-15)
    # the gradient is exp(x - y), as torch computes it: y's rounding (half an ulp of |y|, 5.7e-14
    # at 1000) is the exponent's error, within 2 ulps of |y| here
    np.testing.assert_allclose(x.grad.numpy(), _softmax(v), rtol=2 * np.spacing(abs(y.item())), atol=1e-300)
    x = tg.tensor(v, requires_grad=True)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    (F.softmax(x, dim=0) * w).sum().backward()
    p = _softmax(v)
    np.testing.assert_allclose(x.grad.numpy(), p * (w - p @ w), rtol=1e-12, atol=1e-300)
    x = tg.tensor(v, requires_grad=True)
    tg.sigmoid(x).sum().backward()
    sig = np.where(v >= 0, 1.0 / (1.0 + np.exp(-np.abs(v))), np.exp(-np.abs(v)) / (1.0 + np.exp(-np.abs(v))))
    np.testing.assert_allclose(x.grad.numpy(), sig * (1.0 - sig), rtol=1e-12, atol=1e-300)
    logits = tg.tensor(v.reshape(1, 4), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([2]))
    loss.backward()
    assert loss.item() == pytest.approx(-(v[2] - top - math.log(np.exp(v - top).sum())), rel=1e-14)
    np.testing.assert_allclose(logits.grad.numpy()[0], p - np.eye(4)[2], rtol=1e-12, atol=1e-300)
    x = tg.tensor(np.array([big, -big]), requires_grad=True)
    bce = F.binary_cross_entropy_with_logits(x, np.array([0.0, 1.0]))
    bce.backward()
    assert math.isfinite(bce.item()) and np.all(np.isfinite(x.grad.numpy()))
    for op in (tg.sigmoid, tg.tanh):
        s = tg.tensor(-big, requires_grad=True)
        op(s).backward()
        assert math.isfinite(s.grad.item())


def test_log1p_near_zero_and_minus_one():
    v = np.array([1e-300, 1e-17, -0.5, -1.0 + 1e-16])
    x = tg.tensor(v, requires_grad=True)
    y = tnp.log1p(x)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), np.log1p(v), rtol=1e-15)
    np.testing.assert_allclose(x.grad.numpy(), 1.0 / (1.0 + v), rtol=1e-15)
    assert y.detach().numpy()[0] == 1e-300  # log(1 + x) would round to 0


def _libm_exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def test_replayed_array_exp_within_one_ulp_of_libm(rng):
    """Array rows replay exp with the kernels' own vectorizing exp: within 1 ulp of libm's over the
    whole range, subnormal results included, and exact at the edges (0, inf, NaN)."""
    x = np.concatenate([
        rng.uniform(-746.0, 710.0, 6000), rng.uniform(-1.0, 1.0, 2000), rng.uniform(-745.2, -708.0, 1000),
        [0.0, -0.0, 1e-300, -1e-300, 709.78, 709.79, 709.8, -745.13, -745.14, -745.2, -1000.0, 1000.0,
         np.inf, -np.inf, np.nan],
    ])
    with np.errstate(over="ignore"):
        got = tg.compile(lambda v: tnp.exp(tnp.asarray(v)))(x)
    expected = np.array([_libm_exp(v) for v in x])
    normal = np.isfinite(expected) & (expected >= np.finfo(float).tiny)
    ulps = np.abs(got[normal] - expected[normal]) / np.spacing(expected[normal])
    assert ulps.max() <= 1.0
    subnormal = ~normal & np.isfinite(expected)  # 0 or subnormal: within one subnormal step
    assert np.abs(got[subnormal] - expected[subnormal]).max() <= 5e-324
    assert np.isnan(got[-1]) and got[-3] == np.inf and got[-2] == 0.0
