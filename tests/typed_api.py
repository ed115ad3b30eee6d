"""Code a user writes against tapegrad's public API, for mypy (``.ci/run``): it type-checks with the
stubs of the op functions and methods (tapegrad.stubs). Not a test module; test_readme runs it."""

from __future__ import annotations

import numpy as np

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad.nn import functional as F


def eager() -> float:
    a = tg.tensor(2.0, requires_grad=True)
    b = tg.tensor(3.0, requires_grad=True)
    c = a * b + tg.sin(a) / 2.0 - b**2
    c.backward()
    assert a.grad is not None
    return a.grad.item() + c.exp().item() + float(abs(-c).item() > 0)


def micrograd() -> float:
    x = tg.Value(-4.0)
    y = (x * 2 + 2 + x).relu() + x.tanh() * 3
    y.backward()
    return x.grad


def arrays() -> np.ndarray:
    w = tg.tensor(np.ones((3, 2)), requires_grad=True)
    x = tg.tensor(np.arange(6.0).reshape(2, 3))
    loss = F.cross_entropy(tg.tanh(x @ w), np.array([0, 1])) + tnp.sum(w * w) * 1e-3
    loss.backward()
    assert w.grad is not None
    return w.grad.numpy()


def functional() -> tuple[float, np.ndarray]:
    def f(x: np.ndarray) -> tg.Tensor:
        return tnp.sum(tg.sigmoid(tnp.asarray(x)) * 2.0)

    value, grad = tg.value_and_grad(f)(np.zeros(3))
    cf = tg.compile(f)
    return value + cf(np.zeros(3)), grad + cf.grad(np.zeros(3))


def training() -> float:
    model = tg.nn.MLP(2, [8, 1])
    opt = tg.optim.Adam(model.parameters(), lr=1e-2)
    X = tg.tensor(np.random.default_rng(0).normal(size=(16, 2)))
    for _ in range(3):
        loss = F.mse_loss(model(X).reshape(-1), tg.tensor(np.zeros(16)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item() + sum((p * p).sum().item() for p in model.parameters())


def pictures_and_scipy() -> str:
    y = tg.Value(2.0) * tg.Value(3.0)
    result = tg.optimize.minimize(lambda v: ((v - 1.0) ** 2).sum(), np.zeros(2))
    return tg.viz.to_dot(y) + str(result.fun)


def checkpointed() -> float:
    @tg.checkpoint(every=4)
    def step(u: np.ndarray, rate: float) -> tg.Tensor:
        return tnp.asarray(u) * rate

    u_bar, rate_bar = step.vjp(np.ones(3), 0.5, steps=10)[1](np.ones(3))
    return float(np.sum(u_bar)) + rate_bar + step.stats()["recomputed"]


def main() -> None:
    print(eager(), micrograd(), arrays(), functional(), training(), pictures_and_scipy()[:20], checkpointed())


if __name__ == "__main__":
    main()
