"""The runnable examples give the right answers."""

import numpy as np
import pytest

from tapegrad.examples import njit_descent

from .test_compile import rosen_grad


def test_njit_descent_equals_numpy_descent(capsys):
    n, steps, rate = 8, 3000, 1e-3
    x = njit_descent.main(n=n, steps=steps, rate=rate)
    expected = np.full(n, -0.5)
    for _ in range(steps):
        expected -= rate * rosen_grad(expected)
    np.testing.assert_allclose(x, expected, rtol=1e-9)
    assert "guard failure at step -1" in capsys.readouterr().out


def test_scipy_optimize_with_tapegrad_derivatives(capsys):
    from tapegrad.examples import scipy_optimize

    results = scipy_optimize.rosenbrock(n=50)
    for name in ("tapegrad trust-ncg", "tapegrad L-BFGS-B"):
        assert results[name].success and results[name].fun < 1e-8
        np.testing.assert_allclose(results[name].x, np.ones(50), atol=1e-4)
    assert results["tapegrad L-BFGS-B"].nfev < results["finite L-BFGS-B"].nfev / 10
    assert "evaluations" in capsys.readouterr().out


def test_scipy_optimize_logistic_regression():
    pytest.importorskip("sklearn")
    from tapegrad.examples import scipy_optimize

    results = scipy_optimize.breast_cancer()
    ours, finite = results["tapegrad L-BFGS-B"], results["finite L-BFGS-B"]
    assert ours.success and abs(ours.fun - finite.fun) < 1e-6 and ours.nfev < finite.nfev / 10


def test_minimize_plugs_in_and_refuses_args_with_hessp():
    import tapegrad as tg

    cf = tg.compile(lambda x, a: ((x - a) ** 2).sum())
    result = tg.optimize.minimize(cf, np.zeros(3), args=(np.array([1.0, 2.0, 3.0]),))
    np.testing.assert_allclose(result.x, [1.0, 2.0, 3.0], atol=1e-6)
    with pytest.raises(ValueError, match="minimize: Hessian-vector products"):
        tg.optimize.minimize(cf, np.zeros(3), args=(np.ones(3),), method="trust-ncg")


def test_a_compiled_function_plugs_into_scipy_directly():
    from scipy.optimize import minimize

    import tapegrad as tg
    from tapegrad.examples.njit_descent import rosenbrock

    cf = tg.compile(rosenbrock)
    result = minimize(cf, np.full(20, -0.5), jac=cf.grad, hessp=cf.hvp, method="trust-ncg")
    assert result.success and result.fun < 1e-8  # scipy's gtol: 1e-5 on the gradient
    np.testing.assert_allclose(result.x, np.ones(20), atol=1e-4)
