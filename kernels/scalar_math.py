"""Scalar helpers that the op table's formulas call.

Each function is written once and compiled three ways: by Numba inside the generated sweeps,
and in plain Python twice for eager recording (fast, with :mod:`math`; and an IEEE fallback
with NumPy for the rare inputs where :mod:`math` raises instead of returning inf or NaN). So the
free names (``exp``, ``log``, ``pow``, ``isnan``) are bound by whoever compiles this source, and
the module is not meant to be imported for its functions.
"""

# ruff: noqa: F821  (exp, log, pow are bound by the compiling namespace)


def power(x, y):
    # torch's shortcuts for common exponents (and its values: x*x*x is not pow(x, 3.0) to the bit)
    if y == 2.0:
        return x * x
    if y == 1.0:
        return x
    if y == 3.0:
        return x * x * x
    if y == -1.0:
        return 1.0 / x
    if y == -2.0:
        return 1.0 / (x * x)
    if y == -0.5:
        return 1.0 / sqrt(x)
    return pow(x, y)


def pow_dx(x, y):
    # d(x**y)/dx = y * x**(y-1), and 0 when y == 0 even at x == 0 (torch)
    return 0.0 if y == 0.0 else y * power(x, y - 1.0)


def pow_dy(x, y, z):
    # d(x**y)/dy = x**y * log(x), and 0 at x == 0 for y >= 0 (torch)
    return 0.0 if (x == 0.0 and y >= 0.0) else z * log(x)


def pow_dxx(x, y):
    return 0.0 if (y == 0.0 or y == 1.0) else y * (y - 1.0) * power(x, y - 2.0)


def pow_dxy(x, y):
    # d/dy of y * x**(y-1)
    return power(x, y - 1.0) * (1.0 + y * log(x)) if x != 0.0 else 0.0


def pow_dyy(x, y, z):
    return 0.0 if (x == 0.0 and y >= 0.0) else z * log(x) * log(x)


def sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


def relu(x):
    return 0.0 if x < 0.0 else x  # NaN and -0.0 pass through, as in torch


def step(x):
    return 0.0 if x <= 0.0 else 1.0  # relu'(0) = 0; 1 at NaN, as torch


def sign(x):
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0  # abs'(0) = 0, and 0 at NaN, as torch


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def inside(x, lo, hi):
    return 1.0 if (x >= lo and x <= hi) else 0.0


def maximum(x, y):
    if isnan(x) or isnan(y):
        return x + y
    return x if x >= y else y


def minimum(x, y):
    if isnan(x) or isnan(y):
        return x + y
    return x if x <= y else y


def tie_split(x, y):
    # share of the gradient that the first argument of maximum(x, y) receives: all, half at a
    # tie, none when smaller (and all when either is NaN, as torch)
    if x < y:
        return 0.0
    if x == y:
        return 0.5
    return 1.0


def atan2_dx(x, y):
    # d atan2(x, y) / dx = y / (x**2 + y**2), and 0 where the denominator is 0 (torch)
    d = x * x + y * y
    return 0.0 if d == 0.0 else y / d


def atan2_dxx(x, y):
    # d2 atan2(x, y) / dx2 = -2xy / (x^2 + y^2)^2 (= -d2/dy2), 0 where x^2 + y^2 is 0
    d = x * x + y * y
    return 0.0 if d == 0.0 else -2.0 * x * y / (d * d)


def atan2_dxy(x, y):
    d = x * x + y * y
    return 0.0 if d == 0.0 else (x * x - y * y) / (d * d)


def truth(c):
    return 1.0 if c else 0.0
