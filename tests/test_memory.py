"""Memory: graphs are released after backward, so training loops run in flat memory; the bytes a
row costs; a tape the machine cannot hold is refused with its sizes."""

import gc
import math
import tracemalloc

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import kernels, memory


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


@pytest.mark.parametrize("kind", ["array", "scalar", "Value"])
def test_a_graph_dropped_without_backward_frees_its_tape_at_once(kind):
    """The thread holds its tape weakly and a leaf names its tapes by serial: when the last tensor
    recorded on a tape goes (a loss computed for logging), the tape and its saved values go with
    it, without a garbage collection, even while the leaves it read live on."""
    import weakref

    x = np.linspace(-1.0, 1.0, 1000) if kind == "array" else 0.5
    w = tg.Value(x) if kind == "Value" else tg.tensor(x, requires_grad=True)
    gc.disable()
    try:
        serials = set()
        for _ in range(3):
            with tg.enable_grad():  # (a block does not hold the tape it began on either)
                y = tg.tanh(w * 3.0) ** 2
                tape = weakref.ref(y.tape)
                serials.add(y.tape.serial)
                saved = [weakref.ref(v) for v in y.tape.block_vals if isinstance(v, np.ndarray)]
                y = None
            assert tape() is None and all(ref() is None for ref in saved)
        assert len(serials) == 3 and (kind != "array" or saved)
        z = tg.tanh(w * 3.0)
        (z.sum() if kind == "array" else z).backward()
        grad = w.grad if kind == "Value" else w.grad.numpy() if kind == "array" else w.grad.item()
        np.testing.assert_allclose(grad, 3.0 * (1.0 - np.tanh(3.0 * np.asarray(x)) ** 2), rtol=1e-14)
    finally:
        gc.enable()


def _serials_alive(make_graph, graphs: int) -> tuple[int, int]:
    """Record `graphs` graphs without a backward, dropping each: how many tapes they went to, and
    how many of those are still alive. Each graph must sit on one tape."""
    import weakref

    made, refs = set(), []
    for _ in range(graphs):
        first, last = make_graph()
        assert last.tape is first.tape  # never split across tapes
        if last.tape.serial not in made:
            made.add(last.tape.serial)
            refs.append(weakref.ref(last.tape))
    first = last = None
    gc.collect()
    return len(made), sum(ref() is not None for ref in refs)


def test_full_tapes_take_the_rest_of_their_graph_and_go_with_it(monkeypatch):
    """A full tape takes the rows that continue a graph begun on it; the next graph starts a fresh
    tape. Split graphs made each new tape hold the full one: a loop recording without backward
    (an evaluation without no_grad) kept every tape it filled, 1 MB per step of an MLP."""
    from tapegrad import node, recorder, state
    from tapegrad import tape as tape_module

    x = np.linspace(0.0, 2.0, 40)
    w = tg.tensor(np.linspace(-1.0, 1.0, 40), requires_grad=True)

    def array_graph():
        h = tg.tanh(w * x)
        return h, ((h * h).sum() + tg.exp(h).mean()) * 0.5  # 240 array slots

    v = tg.Value(0.3)

    def scalar_graph():
        h = v * 2.0
        for _ in range(10):
            h = h * 0.9 + 0.1
        return h, h

    monkeypatch.setattr(tape_module, "ARRAY_SLOTS_LIMIT", 1000)
    for name in (node, recorder):
        monkeypatch.setattr(name, "TAPE_ROWS_LIMIT", 50)
    recorder.set_row_hook(None)  # the recorders read the limit
    try:
        for graph in (array_graph, scalar_graph):
            made, alive = _serials_alive(graph, 100)
            # alive: the thread's current tape, and the last the other loop's leaf was registered on
            assert made >= 20 and alive <= 2
        monkeypatch.setattr(tape_module, "ARRAY_SLOTS_LIMIT", 100)  # full within each graph
        for _ in range(3):
            h, y = array_graph()
            with tg.no_grad():  # (a full tape is resumed after a block without recording)
                (h * 2.0).sum()
            y = y + (h * 0.0).sum()
            assert y.tape.full and y.tape is h.tape  # the graph went on past the limit
            y.backward()
        t = np.tanh(w.detach().numpy() * x)
        expected = 3 * (2 * t + np.exp(t) / 40) * 0.5 * (1 - t**2) * x  # three backwards accumulated
        np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-13)
    finally:
        monkeypatch.undo()
        recorder.set_row_hook(None)
    assert recorder.TAPE_ROWS_LIMIT == state.TAPE_ROWS_LIMIT


@pytest.mark.slow
def test_a_million_training_steps():
    assert _growth(_step_tensor, 1_000, 1_000_000) < 64 * 1024


def test_bytes_per_row_and_slot():
    """Recording: at most memory.RECORD_BYTES_PER_ROW per scalar row (the tape's list and the
    objects it holds); as arrays, 25 bytes per row (opcode, operands, value, adjoint)."""
    x = tg.tensor(1.0, requires_grad=True)
    n = 200_000
    gc.collect()
    tracemalloc.start()
    with tg.recording() as tape:
        y = x
        for _ in range(n):
            y = y * 0.5 + x
    recorded = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_row = recorded / len(tape)
    assert 40 < per_row <= memory.RECORD_BYTES_PER_ROW, per_row
    arrays = tape.arrays()
    per_slot = (arrays.op.itemsize + arrays.a.itemsize + arrays.b.itemsize + arrays.vals.itemsize
                + np.dtype(np.float64).itemsize)
    assert per_slot == memory.ARRAY_BYTES_PER_ROW == 25
    y.backward()
    assert math.isfinite(x.grad.item())


def _long(x):
    s = x[0]
    for _ in range(1_500_000):  # 3e6 rows
        s = s * 0.5 + x[1]
    return s


def test_a_tape_the_machine_cannot_hold_is_refused_while_recording(monkeypatch):
    """With 300 MB available, recording a 3e6-row tape for tg.compile stops at a checkpoint with
    a MemoryError giving the sizes, before it grows further; afterwards everything works."""
    monkeypatch.setattr(memory, "available", lambda: 300 * 2**20)
    with pytest.raises(MemoryError, match=r"rows .*need ~[0-9.]+ GB, but 0.29 GB is available"):
        tg.compile(_long)(np.array([1.0, 2.0]))
    monkeypatch.undo()
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    np.testing.assert_allclose(tg.compile(lambda v: (v * v).sum()).grad(np.array([3.0])), [6.0])


@pytest.mark.slow
def test_a_hundred_million_row_tape():
    """10^8 scalar rows recorded for tg.compile and replayed where the machine holds them; else
    refused up front (MemoryError with the sizes)."""
    def f(x):
        s = x[0]
        for _ in range(50_000_000):
            s = s * 0.999999 + x[1]
        return s

    try:
        cf = tg.compile(f)
        value, grad = cf.value_and_grad(np.array([1.0, 1e-6]))
    except MemoryError as err:
        assert "GB is available" in str(err)
        return
    assert len(cf.tape) >= 10**8
    q, n = 0.999999, 50_000_000  # s_n = q^n s_0 + x1 (1 - q^n) / (1 - q)
    np.testing.assert_allclose(value, q**n + 1e-6 * (1 - q**n) / (1 - q), rtol=1e-6)
    np.testing.assert_allclose(grad, [q**n, (1 - q**n) / (1 - q)], rtol=1e-6)


def test_an_eager_tape_holds_only_the_values_reverse_rules_read():
    """As torch keeps saved tensors: an array no reverse rule reads goes with its tensor."""
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.normal(size=1000), requires_grad=True)
    y = tg.exp(x + 1.0)  # exp's rule reads its own result; x + 1.0 is read by none
    u = (y * 2.0).reshape(10, 100)  # a product by a constant reads nothing; sin reads the reshape
    loss = (tg.sin(u).reshape(-1) + y).sum()
    tape = loss.tape
    held = [tape.block_value(j) is not None for j in range(len(tape.block_vals))]
    ops = [tape.op_name(i) for i in range(len(tape)) if tape.opcode(i) == kernels.ARRAY_ROW]
    assert list(zip(ops, held)) == [("array_input", True), ("add", False), ("exp", True), ("mul", True),
                                    ("sin", False), ("add", False)]
    loss.backward()
    e = np.exp(x.detach().numpy() + 1.0)
    np.testing.assert_allclose(x.grad.numpy(), e * (2.0 * np.cos(2.0 * e) + 1.0), rtol=1e-14)
