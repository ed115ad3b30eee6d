"""Memory: graphs are released after backward, so training loops run in flat memory."""

import gc
import tracemalloc

import pytest

import tapegrad as tg


def _train(steps: int, make_leaf) -> None:
    w = make_leaf(0.5)
    for _ in range(steps):
        loss = (w * 3.0 - 6.0) ** 2 + tg.tanh(w) * 0.1
        loss.backward()
        w.data = w.data - 0.001 * float(w.grad)  # Value: .data is a float
        w.grad = 0.0


def _step_tensor(steps: int) -> None:
    w = tg.tensor(0.5, requires_grad=True)
    for _ in range(steps):
        loss = (w * 3.0 - 6.0) ** 2 + tg.tanh(w) * 0.1
        loss.backward()
        with tg.no_grad():
            w = tg.tensor(w.item() - 0.001 * w.grad.item(), requires_grad=True)


def _growth(run, short: int, long: int) -> int:
    """Bytes still allocated after `long` steps minus after `short` steps."""
    run(short)
    gc.collect()
    tracemalloc.start()
    run(short)
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    run(long)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return grown


@pytest.mark.parametrize("run", [_step_tensor, lambda n: _train(n, tg.Value)], ids=["tensor", "Value"])
def test_training_loop_memory_is_flat(run):
    assert _growth(run, 500, 5_000) < 64 * 1024


def test_loop_without_backward_does_not_hold_one_tape():
    """Recording that never calls backward still lets old graphs go (tapes are capped in rows)."""
    from tapegrad import state

    w = tg.tensor(1.5, requires_grad=True)
    tapes = set()
    for _ in range(state.TAPE_ROWS_LIMIT + 1000):
        y = w * 2.0
        tapes.add(id(y.tape))
    y = None
    gc.collect()
    assert len(tapes) == 2  # the thread moved on to a fresh tape once the first was full


@pytest.mark.slow
def test_a_million_training_steps():
    assert _growth(_step_tensor, 1_000, 1_000_000) < 64 * 1024
