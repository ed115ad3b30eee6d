"""``tg.nn``: modules holding parameters (``Module``, ``Linear``, ``MLP``, activations)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..tensor import Tensor, tensor
from . import functional

__all__ = ["MLP", "Linear", "Module", "ReLU", "Sequential", "Sigmoid", "Tanh", "functional"]


class Module:
    """A callable holding parameters (tensors that require grad) and submodules as attributes."""

    def forward(self, *args: Any) -> Any:
        """The module's output for its inputs (subclasses define it; calling the module runs it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any) -> Any:
        return self.forward(*args)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(name, parameter) for every parameter here and in submodules, each once."""
        seen: set[int] = set()
        for name, value in _members(self, prefix):
            if id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def parameters(self) -> list[Tensor]:
        """The tensors to train: this module's and its submodules', in order."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's .grad (to None, or to zeros)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = p.grad * 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _members(obj: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    items = vars(obj).items() if isinstance(obj, Module) else enumerate(obj)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, Tensor) and value.requires_grad:
            yield name, value
        elif isinstance(value, (Module, list, tuple)):
            yield from _members(value, name + ".")


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features), initialized like
    torch's (uniform in +-1/sqrt(in_features))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng: np.random.Generator | None = None) -> None:
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = tensor(rng.uniform(-bound, bound, (out_features, in_features)), requires_grad=True)
        self.bias = tensor(rng.uniform(-bound, bound, out_features), requires_grad=True) if bias else None
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: Any) -> Any:
        """x @ weight.T + bias."""
        return functional.linear(x, self.weight, self.bias)

    def __repr__(self) -> str:
        bias = self.bias is not None
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, bias={bias})"


class ReLU(Module):
    """max(x, 0) elementwise, as a layer."""

    def forward(self, x: Any) -> Any:
        """max(x, 0) elementwise."""
        return functional.relu(x)


class Tanh(Module):
    """tanh elementwise, as a layer."""

    def forward(self, x: Any) -> Any:
        """tanh elementwise."""
        return functional.tanh(x)


class Sigmoid(Module):
    """The logistic function elementwise, as a layer."""

    def forward(self, x: Any) -> Any:
        """The logistic function elementwise."""
        return functional.sigmoid(x)


class Sequential(Module):
    """Modules applied in order."""

    def __init__(self, *layers: Module) -> None:
        self.layers = list(layers)

    def forward(self, x: Any) -> Any:
        """Each layer in turn."""
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, k: int) -> Module:
        return self.layers[k]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(map(repr, self.layers)) + ")"


class MLP(Sequential):
    """Linear layers of the given sizes (``MLP(2, [16, 16, 1])``), an activation between them
    and none after the last."""

    def __init__(self, in_features: int, sizes: Sequence[int], activation: type[Module] = ReLU,
                 rng: np.random.Generator | None = None) -> None:
        dims = [in_features, *sizes]
        layers: list[Module] = []
        for k, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(Linear(n_in, n_out, rng=rng))
            if k < len(sizes) - 1:
                layers.append(activation())
        super().__init__(*layers)
