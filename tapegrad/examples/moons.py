"""micrograd's demo with array tensors: an MLP 2-16-16-1 learns the two-moons data.

As in micrograd's ``demo.ipynb``: 100 points, a max-margin (hinge) loss with L2 regularization,
SGD with a learning rate decaying from 1.0 to 0.1 over 100 steps. The data are generated with
NumPy (scikit-learn's make_moons recipe). Run: ``python -m tapegrad.examples.moons``.
"""

from __future__ import annotations

import numpy as np

import tapegrad as tg


def make_moons(n: int = 100, noise: float = 0.1, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles with Gaussian noise; labels -1 and 1."""
    rng = np.random.default_rng(seed)
    outer, inner = n // 2, n - n // 2
    t_out, t_in = np.linspace(0, np.pi, outer), np.linspace(0, np.pi, inner)
    X = np.concatenate([
        np.stack([np.cos(t_out), np.sin(t_out)], 1),
        np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], 1),
    ])
    X += rng.normal(scale=noise, size=X.shape)
    y = np.concatenate([-np.ones(outer), np.ones(inner)])
    return X, y


def main(steps: int = 100, seed: int = 1) -> float:
    """Train and print the loss and accuracy as it goes; returns the final training accuracy."""
    X, y = make_moons(seed=seed)
    rng = np.random.default_rng(seed)
    model = tg.nn.MLP(2, [16, 16, 1])
    linear = [layer for layer in model.layers if isinstance(layer, tg.nn.Linear)]
    for layer in linear:  # micrograd's initialization: weights uniform in [-1, 1], biases 0
        layer.weight = tg.tensor(rng.uniform(-1.0, 1.0, layer.weight.shape), requires_grad=True)
        layer.bias = tg.tensor(np.zeros(layer.out_features), requires_grad=True)
    optimizer = tg.optim.SGD(model.parameters(), lr=1.0)
    inputs, labels = tg.tensor(X), tg.tensor(y)
    accuracy = 0.0
    for k in range(steps):
        scores = model(inputs).reshape(-1)
        data_loss = tg.relu(1.0 - labels * scores).mean()
        reg_loss = 1e-4 * sum((p * p).sum() for p in model.parameters())
        loss = data_loss + reg_loss
        accuracy = float(np.mean((scores.detach().numpy() > 0) == (y > 0)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.lr = 1.0 - 0.9 * k / steps
        optimizer.step()
        if k % 10 == 0 or k == steps - 1:
            print(f"step {k:3d} loss {loss.item():.4f}, accuracy {accuracy * 100:.0f}%")
    return accuracy


if __name__ == "__main__":
    main()
