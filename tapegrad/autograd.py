"""``tg.autograd``: gradients of outputs with respect to chosen inputs, leaving ``.grad`` alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import engine
from .anomaly import detect_anomaly  # noqa: F401  (torch.autograd.detect_anomaly)
from .node import Node
from .tensor import Tensor, _seed, as_tensor, backward


def _as_list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def grad(
    outputs: Node | Sequence[Node],
    inputs: Node | Sequence[Node],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """d(sum of outputs * grad_outputs)/d(input) for each input, as a tuple of tensors."""
    outs, ins = _as_list(outputs), _as_list(inputs)
    gouts = _as_list(grad_outputs) if grad_outputs is not None else [None] * len(outs)
    if len(gouts) != len(outs):
        raise RuntimeError(
            f"grad_outputs has {len(gouts)} entries, outputs has {len(outs)}: they must match"
        )
    for i, t in enumerate(ins):
        if not isinstance(t, Node) or not t._rg:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not require grad")
    seeds = []
    for t, g in zip(outs, gouts):
        if not isinstance(t, Node) or not t._rg:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        seeds.append((t, _seed(t, g)))
    found = engine.propagate(seeds, retain_graph=bool(retain_graph), wanted=ins)
    result: list[Tensor | None] = []
    for i, t in enumerate(ins):
        if id(t) in found:
            result.append(as_tensor(found[id(t)]))
        elif allow_unused:
            result.append(None)
        else:
            raise RuntimeError(
                f"One of the differentiated Tensors (input {i}) appears to not have been used in "
                "the graph. Set allow_unused=True if this is the desired behavior."
            )
    return tuple(result)


__all__ = ["grad", "backward"]
