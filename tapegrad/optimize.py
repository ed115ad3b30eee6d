"""scipy.optimize with tapegrad's derivatives: ``tg.optimize.minimize(f, x0, method="trust-ncg")``.

A compiled function plugs into scipy directly (``minimize(cf, x0, jac=cf.grad, hessp=cf.hvp)``);
this helper compiles ``f`` if needed and passes the value and gradient from one replay
(``jac=True``), and Hessian-vector products for the methods that take them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .compiled import CompiledFunction, compile

# the methods of scipy.optimize.minimize that take a Hessian-vector product
HESSP_METHODS = ("newton-cg", "trust-ncg", "trust-krylov", "trust-constr")


def minimize(f: Callable[..., Any] | CompiledFunction, x0: Any, args: tuple = (), method: str = "L-BFGS-B",
             **options: Any) -> Any:
    """scipy.optimize.minimize of a scalar f(x, *args) with tapegrad's gradient (and its Hessian-
    vector products for Newton-CG and the trust-region methods); the rest of `options` go to scipy."""
    from scipy.optimize import minimize as scipy_minimize

    cf = f if isinstance(f, CompiledFunction) else compile(f)
    x0 = np.asarray(x0, dtype=np.float64)
    if method.lower() in HESSP_METHODS and "hess" not in options and "hessp" not in options:
        if args:
            raise ValueError(
                f"minimize: Hessian-vector products ({method}) need f of x alone, got args={args!r}"
            )
        options["hessp"] = lambda x, p: np.ravel(cf.hvp(x.reshape(x0.shape), p.reshape(x0.shape)))

    def fun(x: np.ndarray, *rest: Any) -> tuple[float, np.ndarray]:
        value, grad = cf.value_and_grad(x.reshape(x0.shape), *rest)
        return value, np.ravel(grad)

    return scipy_minimize(fun, x0.ravel(), args=args, jac=True, method=method, **options)
