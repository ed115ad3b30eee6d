"""How the tool runs an eval's objective with tapegrad, in its two variants.

An objective is a function of one flat float64 vector, written in one of two styles:

* **scalar** (``det``, ``ode``, ``lstm``): loops and indexing over the vector's elements,
  one tape row per scalar op; ``@numba.njit`` compiles the same source as the primal to compare
  with. ``tapegrad`` records it afresh in every run (a fresh ``tg.compile``: record, then sweep).
* **array** (``llsq``, ``lse``, ``gmm``, ``kmeans``, ``ba``): ``f(x, xp)`` with whole-array ops of the
  namespace ``xp`` (``tapegrad.numpy`` here; NumPy, torch or ``jax.numpy`` for the peers), one row
  per array op. ``tapegrad`` runs it eagerly on tensors (record while computing, then backward).

``tapegrad-replay`` records the objective once with ``tg.compile`` while preparing and times the
replay (a forward sweep, and a reverse sweep for derivatives); ``tapegrad-replay-opt`` also runs
the tape passes on the recording (:data:`PASSES`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

import tapegrad as tg
import tapegrad.numpy as tnp

from . import inputs

# the tape passes tg.compile runs on the replay variant's recording (``--optimize``: all of them)
PASSES: bool = False


@functools.cache
def load_sweeps() -> None:
    """Load tapegrad's compiled sweeps (from Numba's disk cache) before anything is timed."""
    cf = tg.compile(lambda x: x[0] * x[1])
    for _ in range(2):  # the first call records and replays, the second takes the one-call path
        cf.value_and_grad(np.ones(2))
    tg.value_and_grad(lambda t: tnp.sum(t * t))(np.ones(2))


def traced(f: Callable, arrays: bool) -> Callable[[Any], Any]:
    """The objective as a function of the vector alone (array style: on tapegrad.numpy, the
    vector one array tensor, as tnp.asarray packs tg.compile's traced elements)."""
    return (lambda x: f(tnp.asarray(x), tnp)) if arrays else f


def compiled(f: Callable, x: np.ndarray, arrays: bool) -> Any:
    """tg.compile of the objective, recorded at x and replayed once (its sweeps loaded)."""
    load_sweeps()
    cf = tg.compile(traced(f, arrays), optimize=PASSES)
    cf(x), cf(x)
    return cf


def value(f: Callable, x: np.ndarray, arrays: bool, replay: bool) -> Callable[[], Any]:
    """The timed call computing f(x) (a float or an array) with tapegrad."""
    if replay:
        return functools.partial(_plain, compiled(f, x, arrays), x)
    load_sweeps()
    g = traced(f, arrays)
    if arrays:
        return functools.partial(_eager_value, g, x)
    return lambda: _plain(tg.compile(g), x)


def value_and_grad(
    f: Callable, x: np.ndarray, arrays: bool, replay: bool
) -> Callable[[], tuple[float, np.ndarray]]:
    """The timed call computing (f(x), its gradient) for a scalar f, with tapegrad."""
    if replay:
        cf = compiled(f, x, arrays)
        cf.value_and_grad(x)
        return functools.partial(cf.value_and_grad, x)
    load_sweeps()
    g = traced(f, arrays)
    if arrays:
        return functools.partial(tg.value_and_grad(g), x)
    return lambda: tg.compile(g).value_and_grad(x)


def value_then_gradient(
    module: str, function: str, names: tuple[str, str], f: Callable, x: np.ndarray, arrays: bool, replay: bool
) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """`prepare` of an eval whose functions are f(x) (a number) and its gradient (a list)."""
    if function == names[0]:
        return value(f, x, arrays, replay), float
    if function == names[1]:
        return value_and_grad(f, x, arrays, replay), lambda r: r[1].tolist()
    raise inputs.unknown(module, function, names)


def _plain(cf: Any, x: np.ndarray) -> Any:
    out = cf(x)
    return np.asarray(out, dtype=np.float64) if np.ndim(out) else float(out)


def _eager_value(g: Callable, x: np.ndarray) -> Any:
    with tg.no_grad():
        out = g(tg.tensor(x))
    return np.asarray(out) if np.ndim(out) else float(out)


def gradient_and_hvp(
    f: Callable, x: np.ndarray, v: np.ndarray, arrays: bool, replay: bool
) -> Callable[[], tuple]:
    """The timed call computing (the gradient of a scalar f at x, its Hessian times v): one
    forward-over-reverse replay of a tg.compile gives both (recorded afresh in each call unless
    `replay`)."""

    def run(cf):
        return cf.grad_and_hvp(x, v)

    if replay:
        cf = compiled(f, x, arrays)
        run(cf)
        return functools.partial(run, cf)
    load_sweeps()
    g = traced(f, arrays)
    return lambda: run(tg.compile(g))
