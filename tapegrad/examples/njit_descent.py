"""Gradient descent on the extended Rosenbrock function inside one ``@numba.njit`` function.

tapegrad records the Python function once; the whole optimization loop, gradient included, then
runs in Numba: every iteration replays the tape (forward and reverse sweep) without returning
to Python. Run: ``python -m tapegrad.examples.njit_descent``.
"""

from __future__ import annotations

import time

import numba
import numpy as np

import tapegrad as tg


def rosenbrock(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


# the compiled replay, usable from @njit code: `gradient` in a workspace the last call left clean
gradient = tg.sweeps().workspace_gradient


@numba.njit
def descend(x0, tape, steps, rate):
    """`steps` of gradient descent from x0, replaying `tape` (a tg.ReplayTape) for each gradient.
    Returns the final point, the loss at each step, and the step a guard failed at (or -1)."""
    x = x0.copy()
    n = x.shape[0]
    vals = np.empty(tape.op.shape[0])
    adj = np.empty(tape.op.shape[0])
    grad = np.empty(n)  # d loss / d x
    losses = np.empty(steps)
    clean = False  # adj is zero (but for the inputs' rows): not before the first sweep
    for step in range(steps):
        inputs = np.concatenate((x, tape.captured))
        if gradient(tape.op, tape.a, tape.b, tape.consts, inputs, tape.input_slots,
                    tape.out_slot, vals, adj, grad, clean, True) >= 0:  # (True: leave it so)
            return x, losses[:step], step  # another branch: back to Python to record it
        clean = True
        losses[step] = vals[tape.out_slot]
        x -= rate * grad
    return x, losses, -1


def main(n: int = 100, steps: int = 20_000, rate: float = 1e-3) -> np.ndarray:
    x0 = np.full(n, -0.5)
    cf = tg.compile(rosenbrock)
    tape = cf.replay_tape(x0)
    print(f"recorded {len(cf.tape)} rows for n = {n}; compiling the loop ...")
    descend(x0, tape, 1, rate)
    start = time.perf_counter()
    x, losses, failed = descend(x0, tape, steps, rate)
    seconds = time.perf_counter() - start
    for step in (0, steps // 100, steps // 10, steps - 1):
        print(f"  step {step:6d}  loss {losses[step]:.6e}")
    print(f"{steps} steps in {seconds * 1e3:.1f} ms ({seconds / steps * 1e6:.2f} us per gradient); "
          f"guard failure at step {failed}")
    return x


if __name__ == "__main__":
    main()
