"""tg.nn and tg.optim against torch.nn and torch.optim; the training examples; flat memory."""

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.nn.functional as F

from .conftest import needs_torch, torch
from .test_arrays import check
from .test_memory import _growth


def test_module_finds_parameters_in_attributes_lists_and_submodules():
    class Net(tg.nn.Module):
        def __init__(self):
            self.body = tg.nn.MLP(3, [4, 2])
            self.heads = [tg.nn.Linear(2, 1), tg.nn.Linear(2, 1, bias=False)]
            self.scale = tg.tensor(1.0, requires_grad=True)
            self.frozen = tg.tensor(np.ones(3))

        def forward(self, x):
            h = self.body(x)
            return self.heads[0](h) + self.heads[1](h) * self.scale

    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "body.layers.0.weight",
        "body.layers.0.bias",
        "body.layers.2.weight",
        "body.layers.2.bias",
        "heads.0.weight",
        "heads.0.bias",
        "heads.1.weight",
        "scale",
    ]
    net(tg.tensor(np.ones((5, 3)))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


@needs_torch
def test_linear_and_mlp_match_torch(rng):
    x = rng.normal(size=(6, 3))
    mlp = tg.nn.MLP(3, [5, 2], activation=tg.nn.Tanh, rng=rng)
    layers = [torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)]
    for ours, theirs in zip(mlp.layers[::2], layers[::2]):
        theirs.weight.data = torch.tensor(ours.weight._v.copy())
        theirs.bias.data = torch.tensor(ours.bias._v.copy())
    out = mlp(tg.tensor(x))
    t_out = torch.nn.Sequential(*layers)(torch.tensor(x))
    np.testing.assert_allclose(out.detach().numpy(), t_out.detach().numpy(), rtol=1e-12)
    (out * out).sum().backward()
    (t_out * t_out).sum().backward()
    for ours, theirs in zip(mlp.layers[::2], layers[::2]):
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), rtol=1e-10)


def test_linear_gradient_on_1d_and_batched_inputs(rng):
    w, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    for shape in [(3,), (4, 3), (2, 4, 3)]:
        check(lambda x, w, b: F.linear(x, w, b), [rng.normal(size=shape), w, b],
              lambda x, w, b: torch.nn.functional.linear(x, w, b) if torch else None)


def test_losses(rng):
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    check(F.mse_loss, [a, b], lambda x, y: torch.nn.functional.mse_loss(x, y) if torch else None)
    labels = np.array([2, 0, 1, 2])
    check(lambda x: F.cross_entropy(x, labels), [a],
          lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(labels)) if torch else None)
    for reduction in ("sum", "none"):  # unsigned labels too
        check(lambda x, r=reduction: F.cross_entropy(x, labels.astype(np.uint8), r), [a],
              lambda x, r=reduction: torch.nn.functional.cross_entropy(x, torch.tensor(labels), reduction=r)
              if torch else None)
    targets = rng.uniform(size=(4, 3))
    check(lambda x: F.binary_cross_entropy_with_logits(x, targets), [a * 3.0],
          lambda x: torch.nn.functional.binary_cross_entropy_with_logits(x, torch.tensor(targets))
          if torch else None)
    x = tg.tensor([0.0], requires_grad=True)  # at 0: sigmoid(0) - t
    F.binary_cross_entropy_with_logits(x, np.array([1.0])).backward()
    assert x.grad.numpy().tolist() == [-0.5]


def test_loss_errors_name_the_op():
    logits = tg.tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(IndexError, match="cross_entropy: target 3"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="cross_entropy: target must hold integer"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"mse_loss: .*\(2, 3\).*\(3,\)"):
        F.mse_loss(logits, np.zeros(3))


@needs_torch
@pytest.mark.parametrize("make", [
    lambda p: (tg.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
               lambda q: torch.optim.SGD(q, lr=0.1, momentum=0.9, weight_decay=0.01)),
    lambda p: (tg.optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True),
               lambda q: torch.optim.SGD(q, lr=0.1, momentum=0.5, nesterov=True)),
    lambda p: (tg.optim.Adam(p, lr=0.05, weight_decay=0.01),
               lambda q: torch.optim.Adam(q, lr=0.05, weight_decay=0.01)),
], ids=["sgd-momentum", "sgd-nesterov", "adam"])
def test_optimizers_match_torch(make, rng):
    w0, s0 = rng.normal(size=(3, 2)), 0.7
    w, s = tg.tensor(w0, requires_grad=True), tg.tensor(s0, requires_grad=True)
    tw, ts = torch.tensor(w0, requires_grad=True), torch.tensor(s0, requires_grad=True)
    ours, theirs = make([w, s])
    theirs = theirs([tw, ts])
    for _ in range(5):
        ours.zero_grad()
        theirs.zero_grad()
        (tg.sin(w * s).sum() + s * s).backward()
        (torch.sin(tw * ts).sum() + ts * ts).backward()
        ours.step()
        theirs.step()
    np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), rtol=1e-10)
    assert s.item() == pytest.approx(ts.item(), rel=1e-10)


def test_moons_example_reaches_full_training_accuracy(capsys):
    from tapegrad.examples import moons

    assert moons.main() == 1.0
    assert "step  99 loss" in capsys.readouterr().out


def test_digits_example_reaches_95_percent():
    pytest.importorskip("sklearn")
    from tapegrad.examples import digits

    assert digits.main(epochs=10) >= 0.95


def _array_training(steps: int) -> None:
    rng = np.random.default_rng(0)
    X, y = tg.tensor(rng.normal(size=(16, 4))), tg.tensor(rng.normal(size=(16, 1)))
    model = tg.nn.MLP(4, [8, 1], rng=rng)
    optimizer = tg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        loss = F.mse_loss(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_array_training_loop_memory_is_flat():
    assert _growth(_array_training, 300, 3_000) < 64 * 1024


@pytest.mark.slow
def test_array_training_100k_steps_in_flat_memory():
    assert _growth(_array_training, 1_000, 100_000) < 64 * 1024


@pytest.mark.parametrize("n", [3, 5000])
def test_backward_after_an_optimizer_step_raises_like_torch(n):
    W = tg.tensor(np.ones(n), requires_grad=True)
    loss = (W * W).sum()
    loss.backward(retain_graph=True)
    tg.optim.SGD([W], lr=0.5).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    W.grad = None
    (W * W + W).sum().backward()  # a new graph reads the new data, W = 1 - 0.5 * 2 = 0
    np.testing.assert_allclose(W.detach().numpy(), 0.0)
    np.testing.assert_allclose(W.grad.numpy(), 1.0)


@needs_torch
def test_sgd_momentum_with_accumulated_gradients_matches_torch():
    W = tg.tensor([1.0, 2.0], requires_grad=True)
    tw = torch.tensor([1.0, 2.0], requires_grad=True)
    opt, topt = tg.optim.SGD([W], lr=0.1, momentum=0.9), torch.optim.SGD([tw], lr=0.1, momentum=0.9)
    for _ in range(3):  # no zero_grad: gradients accumulate
        (W * W).sum().backward()
        (tw * tw).sum().backward()
        opt.step()
        topt.step()
    np.testing.assert_allclose(W.detach().numpy(), tw.detach().numpy(), rtol=1e-12)


def test_sgd_steps_match_numpy_for_set_and_broadcast_gradients(rng):
    """A step is p -= lr * g: one kernel call for all the float64 gradients of their parameters'
    shapes (here u, v and the scalar-shaped t), NumPy's in-place update for others (integers,
    transposed, or broadcasting: w and s), a float update for scalar tensors (q)."""
    w0, s0, u0, v0, t0 = (rng.normal(size=n) for n in [(3, 4), (2, 3), (5,), (2, 2, 2), (1,)])
    w, s, u, v, t = (tg.tensor(x, requires_grad=True) for x in (w0, s0, u0, v0, t0))
    q = tg.tensor(1.5, requires_grad=True)
    gw, gs, gu, gv, gt = np.arange(12).reshape(4, 3).T, np.array([1.0, 2.0, 3.0]), *(
        rng.normal(size=n) for n in [(5,), (2, 2, 2), (1,)])
    for p, g in zip((w, s, u, v, t, q), (gw, gs, gu, gv, gt, 2.0)):
        p.grad = tg.tensor(g)
    tg.optim.SGD([w, u, s, v, q, t], lr=0.25).step()
    for p, p0, g in zip((w, s, u, v, t), (w0, s0, u0, v0, t0), (gw, gs, gu, gv, gt)):
        np.testing.assert_array_equal(p.detach().numpy(), p0 - 0.25 * g)
    assert q.item() == 1.0


def test_linear_with_no_input_features():
    assert F.linear(tg.tensor(np.zeros((2, 0))), tg.tensor(np.zeros((5, 0)))).shape == (2, 5)
