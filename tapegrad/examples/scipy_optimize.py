"""scipy.optimize with tapegrad's derivatives against scipy's finite differences.

1. The extended Rosenbrock function at n = 1000: trust-ncg with tapegrad's gradient and
   Hessian-vector products, L-BFGS-B with its gradient, L-BFGS-B with finite differences.
2. L2-regularized logistic regression on scikit-learn's breast cancer data (569 x 30, shipped in
   scikit-learn): L-BFGS-B with tapegrad's gradient against finite differences.

Prints function evaluations, time and the final value of each. Run:
``python -m tapegrad.examples.scipy_optimize`` (part 2 needs scikit-learn).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import minimize as scipy_minimize

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad.examples.njit_descent import rosenbrock as rosen  # scalar ops: one tape row each


def rosen_numpy(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def logistic_loss(X: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> Callable[[Any], Any]:
    """Mean log-loss of labels y in {0, 1} with weights w[:-1] and bias w[-1], plus l2 |w|^2 / 2;
    on tapegrad.numpy inside tg.compile, on NumPy otherwise."""
    def loss(w):
        w = tnp.asarray(w)
        z = X @ w[:-1] + w[-1]
        softplus = tnp.log1p(tnp.exp(-tnp.abs(z))) + tnp.maximum(z, 0.0)  # log(1 + e^z), stable
        return (softplus - y * z).mean() + 0.5 * l2 * (w[:-1] * w[:-1]).sum()

    return loss


def _run(label: str, solve: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = solve()
    seconds = time.perf_counter() - start
    print(f"  {label:<44} f = {result.fun:<12.6g} evaluations {result.nfev:>6}  {seconds:7.3f} s")
    return result


def rosenbrock(n: int = 1000) -> dict[str, Any]:
    x0 = np.full(n, -0.5)
    print(f"extended Rosenbrock, n = {n}")
    return {
        "tapegrad trust-ncg": _run("trust-ncg, tapegrad gradient + Hessian-vector",
                                   lambda: tg.optimize.minimize(rosen, x0, method="trust-ncg")),
        "tapegrad L-BFGS-B": _run("L-BFGS-B, tapegrad gradient", lambda: tg.optimize.minimize(rosen, x0)),
        "finite L-BFGS-B": _run("L-BFGS-B, finite differences", lambda: scipy_minimize(rosen_numpy, x0,
                                                                                       method="L-BFGS-B")),
    }


def breast_cancer() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = (data.data - data.data.mean(0)) / data.data.std(0)
    y = data.target.astype(np.float64)
    loss = logistic_loss(X, y)
    w0 = np.zeros(X.shape[1] + 1)
    print(f"logistic regression, breast cancer data {X.shape}")
    results = {
        "tapegrad L-BFGS-B": _run("L-BFGS-B, tapegrad gradient", lambda: tg.optimize.minimize(loss, w0)),
        "finite L-BFGS-B": _run("L-BFGS-B, finite differences",
                                lambda: scipy_minimize(lambda w: float(loss(w)), w0, method="L-BFGS-B")),
    }
    w = results["tapegrad L-BFGS-B"].x
    accuracy = np.mean(((X @ w[:-1] + w[-1]) > 0) == (y > 0.5))
    print(f"  training accuracy {accuracy * 100:.1f}%")
    return results


def main(n: int = 1000) -> dict[str, Any]:
    results = {f"rosenbrock {k}": v for k, v in rosenbrock(n).items()}
    try:
        results.update({f"logistic {k}": v for k, v in breast_cancer().items()})
    except ImportError:
        print("logistic regression: needs scikit-learn (pip install scikit-learn)")
    return results


if __name__ == "__main__":
    main()
