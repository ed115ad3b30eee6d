"""Activations and losses on tensors (``tg.nn.functional``, torch-like names), each a
composition of the op table's rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..array import _value, apply
from ..linalg import linear
from ..node import Node
from ..reductions import _kernel_row
from ..reductions import log_softmax as _log_softmax
from ..reductions import softmax as _softmax

__all__ = [
    "binary_cross_entropy_with_logits", "cross_entropy", "linear", "log_softmax", "mse_loss", "relu",
    "sigmoid", "softmax", "tanh",
]


def softmax(input: Any, dim: int = -1) -> Any:
    """exp(input) / sum(exp(input)) along `dim` (torch's name for the axis)."""
    return _softmax(input, dim)


def log_softmax(input: Any, dim: int = -1) -> Any:
    """input - logsumexp(input) along `dim`, as one row."""
    return _log_softmax(input, dim)


def relu(x: Any) -> Any:
    """max(x, 0) elementwise (relu'(0) = 0)."""
    return apply("relu", x)


def tanh(x: Any) -> Any:
    """tanh elementwise."""
    return apply("tanh", x)


def sigmoid(x: Any) -> Any:
    """The logistic function 1 / (1 + exp(-x)) elementwise."""
    return apply("sigmoid", x)


def _reduce(loss: Any, reduction: str, op: str) -> Any:
    if reduction == "mean":
        return loss.mean() if np.ndim(_value(loss)) else loss
    if reduction == "sum":
        return loss.sum() if np.ndim(_value(loss)) else loss
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_shape(a: Any, b: Any, op: str) -> None:
    if np.shape(_value(a)) != np.shape(_value(b)):
        raise ValueError(f"{op}: input of shape {np.shape(_value(a))} and target of shape "
                         f"{np.shape(_value(b))} differ")


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Any:
    """Mean (or sum) of the squared differences."""
    _same_shape(input, target, "mse_loss")
    diff = apply("sub", input, target)
    return _reduce(apply("mul", diff, diff), reduction, "mse_loss")


_REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}  # as the cross_entropy row's entry holds them


def cross_entropy(input: Any, target: Any, reduction: str = "mean") -> Any:
    """Softmax cross entropy of logits `input` (batch, classes) against integer class indices
    `target` (batch,): one row, whose kernel computes each sample's logsumexp and its gradient
    softmax - onehot(target)."""
    labels = np.asarray(target._untraced("cross_entropy", "") if isinstance(target, Node) else target)
    shape = np.shape(_value(input))
    if len(shape) != 2 or labels.shape != shape[:1]:
        raise ValueError(f"cross_entropy: expected input (batch, classes) and target (batch,), got "
                         f"shapes {shape} and {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got {labels.dtype}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    n, classes = shape
    entry = np.empty(3 + n, dtype=np.int64)
    entry[:3] = n, classes, _REDUCTIONS[reduction]
    entry[3:] = labels
    if n and entry[3:].view(np.uint64).max() >= classes:  # (a negative index: a large unsigned one)
        bad = labels[(labels < 0) | (labels >= classes)]
        raise IndexError(f"cross_entropy: target {int(bad[0])} is out of bounds for {classes} classes")
    return _kernel_row("cross_entropy", input, entry, np.empty(n if reduction == "none" else ()))


def binary_cross_entropy_with_logits(input: Any, target: Any, reduction: str = "mean") -> Any:
    """Binary cross entropy of sigmoid(input) against targets in [0, 1], computed stably:
    max(x, 0) - x * t + log(1 + exp(-|x|))."""
    _same_shape(input, target, "binary_cross_entropy_with_logits")
    softplus = apply("log1p", apply("exp", apply("neg", apply("abs", input))))
    loss = apply("add", apply("sub", apply("maximum", input, 0.0), apply("mul", input, target)), softplus)
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")
