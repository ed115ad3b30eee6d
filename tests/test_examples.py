"""The runnable examples give the right answers."""

import numpy as np

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
