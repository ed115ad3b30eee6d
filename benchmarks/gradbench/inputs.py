"""GradBench's inputs, replayed: its evals seed NumPy once and draw each workload's data in turn."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

import numpy as np


def seeded_rand(
    workloads: Iterable[Hashable], size: Callable[[Hashable], int], target: Hashable
) -> np.ndarray:
    """The vector GradBench's eval sends for `target`: it seeds NumPy with 31337, then draws
    ``rand(size(w))`` for each workload w in its order, so an input depends on those before it."""
    rng = np.random.RandomState(31337)
    for w in workloads:
        x = rng.rand(size(w))
        if w == target:
            return x
    raise ValueError(f"{target} is not one of GradBench's workloads")


def vector(inputs: dict, name: str) -> np.ndarray:
    """A float64 array from the message's input field `name`."""
    return np.asarray(inputs[name], dtype=np.float64)


def unknown(module: str, function: str, known: Iterable[str]) -> ValueError:
    return ValueError(f"{module}: unknown function {function!r} (it has: {', '.join(known)})")
