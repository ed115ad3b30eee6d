"""Fast start: a fresh process importing tapegrad, and one getting its first gradient from a warm
Numba cache (the sweeps loaded, not compiled: the warm-up run fills the cache)."""

import subprocess
import sys

import pytest

SCALAR = """
import tapegrad as tg
x = tg.tensor(2.0, requires_grad=True)
(x * x).backward()
assert x.grad.item() == 4.0
"""
ARRAY = """
import numpy as np, tapegrad as tg
x = tg.tensor(np.ones(3), requires_grad=True)
(x * x).sum().backward()
assert x.grad.numpy().tolist() == [2.0] * 3
"""
PROGRAMS = {
    "import tapegrad": "import tapegrad",
    "first scalar gradient": SCALAR,
    "first array gradient": ARRAY,
    "python alone": "pass",
}


@pytest.mark.benchmark(group="startup: a fresh process")
@pytest.mark.parametrize("name", PROGRAMS)
def test_startup(benchmark, name):
    """Timed: a fresh Python process running the program (the interpreter's own start included:
    'python alone' is that part)."""
    def run():
        done = subprocess.run(
            [sys.executable, "-c", PROGRAMS[name]], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "compiling" not in done.stderr  # the cache was warm

    run()  # fills the Numba cache if this checkout has not compiled yet
    benchmark.pedantic(run, rounds=7, warmup_rounds=1)
