"""An MLP 64-128-10 learns scikit-learn's handwritten digits (8x8 images, 1797 of them, shipped
inside scikit-learn): minibatch Adam on the softmax cross entropy, >= 95% test accuracy.

Needs scikit-learn for the data. Run: ``python -m tapegrad.examples.digits``.
"""

from __future__ import annotations

import numpy as np

import tapegrad as tg
import tapegrad.nn.functional as F


def load(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized train/test split (80/20) of the digits data."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = digits.data.astype(np.float64), digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    X, y = X[order], y[order]
    split = int(0.8 * len(X))
    mean, std = X[:split].mean(0), X[:split].std(0) + 1e-8
    X = (X - mean) / std
    return X[:split], y[:split], X[split:], y[split:]


def accuracy(model: tg.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    with tg.no_grad():
        return float(np.mean(np.argmax(model(tg.tensor(X)).numpy(), axis=1) == y))


def main(epochs: int = 20, batch: int = 64, seed: int = 0) -> float:
    """Train, printing the loss and test accuracy per epoch; returns the final test accuracy."""
    X_train, y_train, X_test, y_test = load(seed)
    rng = np.random.default_rng(seed)
    model = tg.nn.MLP(64, [128, 10], rng=rng)
    optimizer = tg.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        order = rng.permutation(len(X_train))
        total = 0.0
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            loss = F.cross_entropy(model(tg.tensor(X_train[rows])), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        print(f"epoch {epoch:2d} loss {total / len(order):.4f}, test accuracy "
              f"{accuracy(model, X_test, y_test) * 100:.1f}%")
    return accuracy(model, X_test, y_test)


if __name__ == "__main__":
    main()
