"""Recording is per thread: threads training independent models get the serial results."""

import threading

import tapegrad as tg


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
