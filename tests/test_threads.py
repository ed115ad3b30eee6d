"""Recording is per thread and replays use per-thread workspaces: threads get the serial results."""

import threading

import numpy as np

import tapegrad as tg
import tapegrad.numpy as tnp


def train(seed: float, steps: int = 300) -> tuple[float, float]:
    """Fit y = 3x - 1 by SGD with scalar tensors; returns (w, b)."""
    w = tg.tensor(seed, requires_grad=True)
    b = tg.tensor(0.0, requires_grad=True)
    xs = [0.1 * k for k in range(10)]
    for _ in range(steps):
        loss = tg.tensor(0.0)
        for x in xs:
            loss = loss + (w * x + b - (3.0 * x - 1.0)) ** 2
        loss.backward()
        with tg.no_grad():
            w = tg.tensor(w.item() - 0.05 * w.grad.item(), requires_grad=True)
            b = tg.tensor(b.item() - 0.05 * b.grad.item(), requires_grad=True)
    return w.item(), b.item()


def test_threads_training_independent_models_match_serial():
    seeds = [0.5, -1.0, 2.0, 0.0]
    serial = [train(s) for s in seeds]
    results: dict[int, tuple[float, float]] = {}

    def worker(i: int) -> None:
        results[i] = train(seeds[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(seeds))] == serial


def test_no_grad_is_per_thread():
    seen = {}
    x = tg.tensor(1.0, requires_grad=True)

    def other() -> None:
        seen["recorded"] = (x * 2.0).requires_grad

    with tg.no_grad():
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen["recorded"] is True


def test_a_node_from_another_thread_is_an_input_of_this_threads_tape():
    x = tg.tensor(2.0, requires_grad=True)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("h", x * x))
    t.start()
    t.join()
    y = box["h"] * 3.0
    assert y.tape is not box["h"].tape
    y.backward()
    assert x.grad.item() == 12.0


def _in_threads(work, n: int = 8) -> list:
    """work(i) in n threads started together; the results in order (a worker's error re-raised)."""
    results: list = [None] * n
    errors: list = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _eager_graphs(i: int):
    """Scalar and array graphs recorded eagerly, with their gradients."""
    rng = np.random.default_rng(i)
    x = tg.tensor(rng.normal(size=(16, 8)), requires_grad=True)
    w = tg.tensor(rng.normal(size=(8, 4)), requires_grad=True)
    out = []
    for _ in range(20):
        loss = (tnp.tanh(x @ w) ** 2).mean() + tg.sigmoid(x[0, 0]) * 2.0
        loss.backward()
        out.append((loss.item(), x.grad.numpy().copy(), w.grad.numpy().copy()))
    return out


def _same(a, b) -> bool:
    return all(np.array_equal(np.asarray(p), np.asarray(q)) for u, v in zip(a, b) for p, q in zip(u, v))


def test_eight_threads_record_eager_graphs_at_once():
    serial = [_eager_graphs(i) for i in range(8)]
    parallel = _in_threads(_eager_graphs)
    assert all(_same(p, s) for p, s in zip(parallel, serial))


def test_one_compiled_function_replayed_from_eight_threads():
    cf = tg.compile(lambda x: (tnp.sin(tnp.asarray(x)) * x[0]).sum() + x[1] ** 3)
    points = [np.random.default_rng(i).normal(size=50) for i in range(8)]
    serial = [cf.value_and_grad(p) for p in points]

    def work(i: int):
        return [cf.value_and_grad(points[i]) for _ in range(50)]

    for i, runs in enumerate(_in_threads(work)):
        for value, grad in runs:
            assert value == serial[i][0] and np.array_equal(grad, serial[i][1])


def test_batch_grad_while_another_thread_records():
    cf = tg.compile(lambda x: (x[0] - 1.0) ** 2 + 10.0 * (x[1] - x[0] ** 2) ** 2)
    points = np.random.default_rng(0).normal(size=(2000, 2))
    serial = np.array([cf.grad(p) for p in points])
    eager = _eager_graphs(3)

    def work(i: int):
        return cf.batch_grad(points) if i == 0 else _eager_graphs(3)

    batch, recorded = _in_threads(work, n=2)
    np.testing.assert_array_equal(batch, serial)
    assert _same(recorded, eager)
