"""``tg.Value``: a micrograd-compatible scalar recorded on the same tape as tensors.

``.data`` and ``.grad`` are Python floats; every Value takes part in differentiation.
"""

from __future__ import annotations

import numpy as np

from . import engine
from .node import Node
from .recorder import install_ops


class Value(Node):
    """A scalar with a gradient, as in micrograd: ``y = x**2 + 2*x + 1; y.backward(); x.grad``."""

    def __init__(self, data: float, _children: tuple = (), _op: str = "", label: str = "") -> None:
        if not isinstance(data, (int, float, np.number)) or isinstance(data, complex):
            raise TypeError(f"Value: expected a number, got {type(data).__name__}")
        self._v = float(data)
        self._tape = None
        self._slot = -1
        self._reg = None
        self._rg = True
        self._grad = 0.0
        if label:
            self.label = label

    @property
    def data(self) -> float:
        return self._v

    @data.setter
    def data(self, value: float) -> None:
        self._v = float(value)

    @property
    def grad(self) -> float:
        """d(output)/d(self) summed over the backward passes so far (0.0 before any)."""
        if self._tape is None or self._grad is not None:
            return self._grad or 0.0
        adj = self._tape.adj
        return 0.0 if adj is None else float(adj[self._slot])

    @grad.setter
    def grad(self, value: float) -> None:
        self._grad = float(value)

    def _accumulate_grad(self, g: float) -> None:
        self._grad = (self._grad or 0.0) + g

    def backward(self) -> None:
        """Accumulate d(self)/d(v) into ``v.grad`` for every Value this one was computed from."""
        if self._tape is None:
            self._accumulate_grad(1.0)
            return
        engine.propagate([(self, 1.0)], retain_graph=True)

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"


install_ops(Value)
install_ops(Value)
