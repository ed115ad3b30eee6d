"""Every example of the seed documents (../shared/seeds), with the seeds' numbers."""

import math

import numpy as np
import pytest

import tapegrad as tg


def test_multiply_backward_rule():
    # seeds 000/001: y = x * a; dy/dx = a, dy/da = x
    x = tg.tensor(3.0, requires_grad=True)
    a = tg.tensor(5.0, requires_grad=True)
    y = x * a
    y.backward()
    assert x.grad.item() == 5.0 and a.grad.item() == 3.0


def test_gradient_accumulates_over_uses():
    # seeds 000/001: y = x * a; z = W*x + b -> x.grad gets both contributions
    x, a, W, b = (tg.tensor(v, requires_grad=True) for v in (3.0, 5.0, 2.0, 1.0))
    y = x * a
    z = W * x + b
    (y + z).backward()
    assert x.grad.item() == 5.0 + 2.0


def test_lecture2_graph():
    # seed 002: a=2, b=4, c=a+b, d=log(a)*log(b), e=c*d
    a = tg.tensor(2.0, requires_grad=True)
    b = tg.tensor(4.0, requires_grad=True)
    c = a + b
    d = tg.log(a) * tg.log(b)
    e = c * d
    e.backward()
    assert a.grad.item() == pytest.approx(d.item() + c.item() * math.log(4.0) / 2.0)
    assert b.grad.item() == pytest.approx(d.item() + c.item() * math.log(2.0) / 4.0)
    assert repr(a.grad) == "tensor(5.1198)" and repr(b.grad) == "tensor(2.0006)"


def test_linear_squared_loss():
    # seed 003: x=1, y=2, w=1; loss = (w*x - y)**2; dloss/dw = -2
    x = tg.tensor(1.0)
    y = tg.tensor(2.0)
    w = tg.tensor(1.0, requires_grad=True)
    y_hat = w * x
    loss = (y_hat - y) ** 2
    assert repr(loss) == "tensor(1., grad_fn=<PowBackward>)"
    loss.backward()
    assert repr(w.grad) == "tensor(-2.)"


def test_example1_square_and_sqrt():
    # seed 004, example 1: c = a**2 + b**0.5
    a = tg.tensor(1.0, requires_grad=True)
    b = tg.tensor(2.0, requires_grad=True)
    c = a**2 + b**0.5
    assert f"{a.grad=}, {b.grad=}" == "a.grad=None, b.grad=None"
    c.backward()
    assert f"{a.grad=}, {b.grad=}" == "a.grad=tensor(2.), b.grad=tensor(0.3536)"
    assert b.grad.item() == pytest.approx(1 / (2 * math.sqrt(2)))


def test_example2_chain_rule_and_retain_grad():
    # seed 004, example 2: z = x*y (retain_grad), w = z**2
    x = tg.tensor(2.0, requires_grad=True)
    y = tg.tensor(3.0, requires_grad=True)
    z = x * y
    z.retain_grad()
    w = z**2
    assert (x.grad, y.grad) == (None, None)
    w.backward()
    assert f"{x.grad=}, {y.grad=}" == "x.grad=tensor(36.), y.grad=tensor(24.)"
    assert repr(z.grad) == "tensor(12.)"


def test_example3_matmul_mean_as_scalars():
    # seed 004, example 3: X (3x2, torch.manual_seed(42) randn), W (2x1); m = mean(X @ W).
    # The values are torch's; the product is written with scalar tensors.
    X = [[0.33669036626815796, 0.12880940735340118], [0.23446236550807953, 0.23033303022384644],
         [-1.1228563785552979, -0.18632829189300537]]
    W = [tg.tensor(2.2082014083862305, requires_grad=True), tg.tensor(-0.637997031211853, requires_grad=True)]
    mm = [row[0] * W[0] + row[1] * W[1] for row in X]
    m = (mm[0] + mm[1] + mm[2]) / 3
    m.backward()
    assert [round(w.grad.item(), 4) for w in W] == [-0.1839, 0.0576]


def test_example3_matmul_mean_as_arrays():
    # seed 004, example 3 as written there: X @ W, .mean(), W.grad printed like torch
    X = tg.tensor([[0.33669036626815796, 0.12880940735340118], [0.23446236550807953, 0.23033303022384644],
                   [-1.1228563785552979, -0.18632829189300537]])
    W = tg.tensor([[2.2082014083862305], [-0.637997031211853]], requires_grad=True)
    mm = X @ W
    m = mm.mean()
    m.backward()
    assert W.grad.shape == (2, 1)
    assert np.round(W.grad.numpy(), 4).tolist() == [[-0.1839], [0.0576]]
    assert repr(W.grad) == "tensor([[-0.1839],\n        [ 0.0576]])"


def test_x_squared_plus_three():
    # seed 004: y = x**2; z = y + 3 -> x.grad = 4
    x = tg.tensor(2.0, requires_grad=True)
    z = x**2 + 3
    z.backward()
    assert x.grad.item() == 4.0


def test_multiple_operations_is_26_not_14():
    # seed 004: y = x**3; z = y + x; w = 2*z -> dw/dx = 2 * (3x**2 + 1) = 26 (a comment says 14)
    x = tg.tensor(2.0, requires_grad=True)
    y = x**3
    z = y + x
    w = 2 * z
    w.backward()
    assert x.grad.item() == 26.0


def test_autograd_grad_returns_tuple():
    # seed 004: grad = torch.autograd.grad(w, x) -> (tensor(26.),)
    x = tg.tensor(2.0, requires_grad=True)
    w = 2 * (x**3 + x)
    grad = tg.autograd.grad(w, x)
    assert repr(grad) == "(tensor(26.),)"
    assert x.grad is None


def test_retain_graph_allows_second_backward():
    # seed 004: w.backward(retain_graph=True)
    x = tg.tensor(2.0, requires_grad=True)
    w = 2 * (x**3 + x)
    w.backward(retain_graph=True)
    w.backward()
    assert x.grad.item() == 52.0


def test_no_grad_and_requires_grad_false():
    # seed 004: with torch.no_grad(): y = x ** 2 ; x.requires_grad_(False)
    x = tg.tensor(2.0, requires_grad=True)
    with tg.no_grad():
        y = x**2
    assert not y.requires_grad and y.grad_fn is None
    x.requires_grad_(False)
    assert not (x**2).requires_grad


def test_micrograd_value_polynomial():
    # seed 004: x = Value(3.0); y = x**2 + 2*x + 1 -> x: 3.0, y: 16.0, dy/dx: 8.0
    x = tg.Value(3.0)
    y = x**2 + 2 * x + 1
    y.backward()
    assert f"x: {x.data}, y: {y.data}, dy/dx: {x.grad}" == "x: 3.0, y: 16.0, dy/dx: 8.0"
    assert repr(x) == "Value(data=3.0, grad=8.0)"
