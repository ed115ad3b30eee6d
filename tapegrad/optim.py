"""``tg.optim``: optimizers that update parameters in place from their ``.grad`` (not recorded)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from . import kernels
from .tape import address
from .tensor import Tensor

_FLOAT64 = np.dtype(np.float64)

__all__ = ["SGD", "Adam", "Optimizer"]


class Optimizer:
    """Holds the parameters to update; ``step()`` applies their ``.grad``."""

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if lr < 0.0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate {lr}")
        self.lr = lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's .grad (to None, or to zeros)."""
        for p in self.params:
            p.grad = None if set_to_none or p.grad is None else p.grad * 0.0

    def _grads(self) -> Iterable[tuple[int, Tensor, np.ndarray | float]]:
        for k, p in enumerate(self.params):
            if p.grad is not None:
                yield k, p, p.grad._v

    @staticmethod
    def _update(scale: float, steps: list[tuple[Any, np.ndarray | float]]) -> None:
        """p -= scale * g for each (p, g), in place for arrays (their version counts it: a graph
        recorded before the step refuses a backward, as torch does). C-ordered float64 arrays of
        the same shape are updated by one kernel call for all (NumPy updates the others)."""
        table: list[int] = []
        for p, g in steps:
            v = p._v
            if v.__class__ is not np.ndarray:
                p._v = float(v - scale * g)
                continue
            if (g.__class__ is np.ndarray and v.dtype == _FLOAT64 == g.dtype and v.shape == g.shape
                    and v.flags.c_contiguous and g.flags.c_contiguous):
                table += (address(v), address(g), v.size)  # (`steps` keeps both alive)
            else:
                v -= scale * g
            p._version = getattr(p, "_version", 0) + 1
        if table:
            kernels.sweeps().subtract_scaled(np.array(table, dtype=np.int64), float(scale))


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (torch's form) and weight decay."""

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr)
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.velocity: dict[int, np.ndarray | float] = {}

    def step(self) -> None:
        """Update every parameter that has a .grad, in place."""
        steps = []
        for k, p, g in self._grads():
            if self.weight_decay:
                g = g + self.weight_decay * p._v
            if self.momentum:
                v = self.velocity.get(k)
                v = np.copy(g) if v is None else self.momentum * v + g  # not p.grad's own array
                self.velocity[k] = v
                g = g + self.momentum * v if self.nesterov else v
            steps.append((p, g))
        self._update(self.lr, steps)


class Adam(Optimizer):
    """Adam (Kingma and Ba), with torch's defaults and L2 weight decay."""

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        for k, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Adam: invalid beta parameter at index {k}: {beta}")
        if eps < 0.0:
            raise ValueError(f"Adam: invalid epsilon value {eps}")
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.state: dict[int, list] = {}
        self.steps = 0

    def step(self) -> None:
        """Update every parameter that has a .grad, in place."""
        self.steps += 1
        b1, b2 = self.betas
        steps = []
        for k, p, g in self._grads():
            if self.weight_decay:
                g = g + self.weight_decay * p._v
            m, v = self.state.setdefault(k, [0.0 * g, 0.0 * g])
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * g * g
            self.state[k] = [m, v]
            m_hat = m / (1.0 - b1**self.steps)
            v_hat = v / (1.0 - b2**self.steps)
            steps.append((p, m_hat / (np.sqrt(v_hat) + self.eps)))
        self._update(self.lr, steps)
