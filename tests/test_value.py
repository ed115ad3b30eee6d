"""tg.Value against micrograd's semantics (and micrograd itself, where installed)."""

import math
import random

import pytest

import tapegrad as tg

try:
    from micrograd.engine import Value as MicroValue
except ImportError:
    MicroValue = None


def test_data_and_grad_are_floats():
    x = tg.Value(2)
    y = (x * 3 + 1).relu()
    y.backward()
    assert type(x.data) is float and type(x.grad) is float and type(y.grad) is float
    assert (x.grad, y.grad) == (3.0, 1.0)


def test_intermediate_grads_like_micrograd():
    a = tg.Value(-4.0)
    b = tg.Value(2.0)
    c = a + b
    d = a * b + b**3
    e = c * d
    e.backward()
    assert c.grad == d.data and d.grad == c.data and e.grad == 1.0


def test_numbers_on_either_side():
    x = tg.Value(3.0)
    y = 1 + x - 2 * x / 4 + 2 / x - (5 - x) + x**2
    y.backward()
    assert y.data == pytest.approx(1 + 3 - 1.5 + 2 / 3 - 2 + 9)
    assert x.grad == pytest.approx(1 - 0.5 - 2 / 9 + 1 + 6)


def test_unary_methods():
    for name, f, df in [
        ("relu", lambda v: max(v, 0.0), lambda v: float(v > 0)),
        ("tanh", math.tanh, lambda v: 1 - math.tanh(v) ** 2),
        ("exp", math.exp, math.exp),
        ("log", math.log, lambda v: 1 / v),
        ("sigmoid", lambda v: 1 / (1 + math.exp(-v)), lambda v: math.exp(-v) / (1 + math.exp(-v)) ** 2),
    ]:
        x = tg.Value(0.7)
        y = getattr(x, name)()
        y.backward()
        assert y.data == pytest.approx(f(0.7)) and x.grad == pytest.approx(df(0.7)), name


def test_grads_accumulate_until_zeroed_and_data_is_assignable():
    w = tg.Value(1.0)
    for _ in range(2):
        (w * 3.0).backward()
    assert w.grad == 6.0
    w.grad = 0.0
    w.data -= 0.5
    (w * w).backward()
    assert w.grad == 1.0


def test_chain_a_million_ops_deep():
    x = tg.Value(1.0)
    y = x
    for _ in range(1_000_000):
        y = y * 1.0000001 + 0.0
    y.backward()
    assert x.grad == pytest.approx(1.0000001**1_000_000, rel=1e-9)


def test_label_and_repr():
    a = tg.Value(2.0, label="a")
    assert a.label == "a" and repr(a) == "Value(data=2.0, grad=0.0)"
    assert "input a" in (a * a).tape.listing()


@pytest.mark.skipif(MicroValue is None, reason="micrograd is not installed")
def test_random_expressions_match_micrograd():
    rnd = random.Random(7)
    for _ in range(50):
        vals = [rnd.uniform(0.5, 2.0) for _ in range(3)]
        ours = [tg.Value(v) for v in vals]
        theirs = [MicroValue(v) for v in vals]
        leaves = list(zip(ours, theirs))
        for _ in range(15):
            i, j = rnd.randrange(3), rnd.randrange(3)
            op = rnd.choice(["add", "mul", "pow", "relu", "div"])  # micrograd 0.1 has no tanh
            for xs in (ours, theirs):
                if op == "add":
                    xs[i] = xs[i] + xs[j]
                elif op == "mul":
                    xs[i] = xs[i] * xs[j] * 0.5
                elif op == "pow":
                    xs[i] = xs[i] ** 2 * 0.25
                elif op == "div":
                    xs[i] = xs[i] / (xs[j] ** 2 + 1.0)
                else:
                    xs[i] = getattr(xs[i], op)()
        out_ours, out_theirs = ours[0] + ours[1] + ours[2], theirs[0] + theirs[1] + theirs[2]
        out_ours.backward()
        out_theirs.backward()
        assert out_ours.data == pytest.approx(out_theirs.data, rel=1e-12)
        for mine, theirs_leaf in leaves:
            assert mine.grad == pytest.approx(theirs_leaf.grad, rel=1e-9, abs=1e-300)
