"""Array tensors, eager: training steps of MLPs against torch eager, vectorized Rosenbrock's
gradient against torch, JAX ``jit(grad)`` and HIPS autograd, and the Python overhead per array op.

Every peer runs on one thread (see conftest). A training step is forward + backward + SGD update
of the same network (weights copied between systems, both float64), checked equal after one step.
"""

import functools

import harness
import numpy as np
import pytest
from test_replay import rosen_vec
from test_scalar_eager import rosen_grad

import tapegrad as tg
import tapegrad.nn.functional as F

# the two of issue 4, and a small-array step: micrograd's two-moons network with two logits
MLPS = {"64-128-128-10 batch 256": ((64, 128, 128, 10), 256), "784-256-10 batch 128": ((784, 256, 10), 128),
        "2-16-16-2 batch 100": ((2, 16, 16, 2), 100)}
ROSEN_NS = (10_000, 1_000_000)
CHAIN = 50  # elementwise ops per call in the overhead benchmark


# --------------------------------------------------------------------------- MLP training step
@functools.cache
def mlp_problem(name: str):
    sizes, batch = MLPS[name]
    rng = np.random.default_rng(0)
    weights = [(rng.uniform(-1, 1, (o, i)) / np.sqrt(i), rng.uniform(-1, 1, o) / np.sqrt(i))
               for i, o in zip(sizes[:-1], sizes[1:])]
    X = rng.normal(size=(batch, sizes[0]))
    labels = rng.integers(sizes[-1], size=batch)
    return weights, X, labels


def tapegrad_step(name: str):
    weights, X, labels = mlp_problem(name)
    params = [(tg.tensor(w.copy(), requires_grad=True), tg.tensor(b.copy(), requires_grad=True))
              for w, b in weights]
    opt = tg.optim.SGD([p for pair in params for p in pair], lr=0.01)
    x = tg.tensor(X)

    def step():
        h = x
        for k, (w, b) in enumerate(params):
            h = F.linear(h, w, b)
            if k < len(params) - 1:
                h = F.relu(h)
        loss = F.cross_entropy(h, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item(), params[0][0].detach().numpy()

    return step


def torch_step(name: str):
    torch = pytest.importorskip("torch")
    weights, X, labels = mlp_problem(name)
    params = [(torch.tensor(w.copy(), requires_grad=True), torch.tensor(b.copy(), requires_grad=True))
              for w, b in weights]
    opt = torch.optim.SGD([p for pair in params for p in pair], lr=0.01)
    x, y = torch.tensor(X), torch.tensor(labels)

    def step():
        h = x
        for k, (w, b) in enumerate(params):
            h = torch.nn.functional.linear(h, w, b)
            if k < len(params) - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item(), params[0][0].detach().numpy()

    return step


STEPS = {"tapegrad": tapegrad_step, "torch-eager": torch_step}


@pytest.mark.parametrize("system", list(STEPS))
@pytest.mark.parametrize("name", list(MLPS))
def test_mlp_training_step(benchmark, name, system):
    """Timed: one training step. Checked: the first step's loss and updated weights equal
    torch's (both systems start from the same weights)."""
    benchmark.group = f"MLP {name} training step"
    reference = STEPS["tapegrad"](name)()
    first = STEPS[system](name)()
    np.testing.assert_allclose(first[0], reference[0], rtol=1e-10)
    np.testing.assert_allclose(first[1], reference[1], rtol=1e-10, atol=1e-14)
    benchmark(STEPS[system](name))


# --------------------------------------------------------------------------- vectorized Rosenbrock
def tapegrad_rosen(x):
    vg = tg.value_and_grad(rosen_vec)
    return (lambda: vg(x)), None


def autograd_rosen(x):
    ag = pytest.importorskip("autograd")
    vg = ag.value_and_grad(rosen_vec)
    return (lambda: vg(x)), lambda r: (float(r[0]), np.asarray(r[1]))


ROSEN_SYSTEMS = {
    "tapegrad": tapegrad_rosen,
    "torch-eager": lambda x: harness.torch_peer(rosen_vec, x),
    "jax-jit": lambda x: harness.jax_peer(rosen_vec, x),
    "autograd": autograd_rosen,
}


@pytest.mark.parametrize("system", list(ROSEN_SYSTEMS))
@pytest.mark.parametrize("n", ROSEN_NS)
def test_rosenbrock_vectorized_gradient(benchmark, n, system):
    """Timed: value and gradient of Rosenbrock written with whole-array ops."""
    benchmark.group = f"Rosenbrock vectorized n={n} value_and_grad"
    x = np.random.default_rng(n).uniform(-1, 1, n)
    value, grad = rosen_vec(x), rosen_grad(x)
    harness.run_checked(benchmark, ROSEN_SYSTEMS[system](x),
                        lambda r: harness.check(r, value, grad, rtol=1e-10))


# --------------------------------------------------------------------------- per-op overhead
def chain(t, lib):
    """CHAIN small elementwise ops and a sum: the cost is per op, not per element."""
    for _ in range(CHAIN // 2):
        t = lib.tanh(t) * 1.01
    return t.sum()


@pytest.mark.parametrize("system", ["tapegrad", "torch-eager"])
def test_small_array_op_overhead(benchmark, system):
    """Timed: record + backward of CHAIN ops on 16-element arrays (the median / CHAIN is the
    cost of one op, forward and backward)."""
    benchmark.group = f"{CHAIN} ops on 16 elements, record + backward"
    x = np.linspace(-1, 1, 16)

    def tapegrad_run():
        t = tg.tensor(x, requires_grad=True)
        chain(t, tg).backward()
        return t.grad.numpy()

    def torch_run():
        torch = pytest.importorskip("torch")
        t = torch.tensor(x, requires_grad=True)
        chain(t, torch).backward()
        return t.grad.numpy()

    run = tapegrad_run if system == "tapegrad" else torch_run
    np.testing.assert_allclose(run(), tapegrad_run(), rtol=1e-12)
    benchmark(run)
