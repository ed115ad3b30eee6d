"""Gradient of a long explicit heat-equation run with ``tg.checkpoint``, where a tape of the whole
loop would not fit in memory.

The 1-D heat equation u_t = kappa u_xx on ``points`` grid points, ends held at 0, explicit Euler
for ``steps`` steps (kappa is in grid units: kappa dt / dx^2, stable below 0.5), with a weak
nonlinear cooling term. Loss: half the squared misfit of the final state against an "observed"
final state made with another kappa. The example:

1. records the whole loop for 2 and 4 steps, extrapolates the tape's rows and array slots to
   ``steps`` and asks tapegrad's memory check whether the machine could sweep that tape (at the
   default size it cannot: ``tapegrad.memory`` refuses it with a MemoryError, and nothing that
   large is ever allocated);
2. runs ``tg.checkpoint``'s forward and reverse passes and prints the loss, the gradient's norm,
   the time, the states and floats it held, and d loss / d kappa checked by central differences.

Run: ``python -m tapegrad.examples.checkpointed_heat`` (about 20 s on a 2-core machine).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad import memory


def heat_step(u: Any, kappa: Any) -> Any:
    """One explicit Euler step of u_t = kappa u_xx - 0.001 u^3, ends fixed."""
    v = tnp.asarray(u)
    c = v[1:-1]
    inner = c + kappa * (v[2:] - 2.0 * c + v[:-2]) - 0.001 * c * c * c
    return tnp.concatenate([v[:1], inner, v[-1:]])


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def full_tape_size(points: int, steps: int) -> tuple[int, int]:
    """(rows, array slots) of a tape of the whole loop, from tapes of 2 and 4 steps recorded with
    ``tg.compile`` (each step adds the same rows)."""
    sizes = []
    for n in (2, 4):
        def loop(u, kappa, n=n):
            for _ in range(n):
                u = heat_step(u, kappa)
            return tnp.sum(tnp.asarray(u))

        cf = tg.compile(loop)
        cf(np.zeros(points), 0.1)
        sizes.append((len(cf.tape), cf.tape.array_slots))
    (r2, s2), (r4, s4) = sizes
    per_rows, per_slots = (r4 - r2) // 2, (s4 - s2) // 2
    return r2 + per_rows * (steps - 2), s2 + per_slots * (steps - 2)


def main(points: int = 2000, steps: int = 100_000, every: int | None = None) -> dict[str, Any]:
    """Run the example; returns the loss, gradients, the finite-difference check and the stats."""
    x = np.linspace(0.0, 1.0, points)
    u0 = np.sin(np.pi * x) + 0.5 * np.sin(5 * np.pi * x)
    kappa, true_kappa = 0.2, 0.25
    sim = tg.checkpoint(heat_step, every=every)
    observed = sim(u0, true_kappa, steps=steps)

    def loss(u: Any) -> Any:
        return 0.5 * tnp.sum((u - observed) ** 2)

    rows, slots = full_tape_size(points, steps)
    print(f"heat equation: {points} points, {steps} steps")
    print(f"a tape of the whole loop: {rows:,} rows and {slots:,} array slots, "
          f"{_gb(rows * memory.ARRAY_BYTES_PER_ROW + slots * memory.ARRAY_BYTES_PER_SLOT)} as the sweeps' "
          f"arrays, {_gb(rows * memory.SWEEP_BYTES_PER_ROW + slots * memory.ARRAY_BYTES_PER_SLOT)} "
          f"while converting; {_gb(memory.available() or 0)} of memory is available")
    try:
        memory.check_sweep(rows, slots)
        print("  (that would fit on this machine)")
    except MemoryError as err:
        print(f"  tapegrad refuses it: MemoryError: {err}")

    start = time.perf_counter()
    value, (g_u0, g_kappa) = sim.value_and_grad(loss, u0, kappa, steps=steps)
    seconds = time.perf_counter() - start
    stats = sim.stats()
    grad_norm = float(np.sqrt(np.sum(g_u0**2) + g_kappa**2))

    eps = 1e-6  # central differences in kappa: two more forward runs
    def misfit(k: float) -> float:
        return 0.5 * float(np.sum((sim(u0, k, steps=steps) - observed) ** 2))
    check_kappa = (misfit(kappa + eps) - misfit(kappa - eps)) / (2 * eps)

    print(f"tg.checkpoint (every {stats['every']}): loss {value:.6e}, gradient norm {grad_norm:.6e}, "
          f"{seconds:.1f} s")
    print(f"  d loss / d kappa = {g_kappa:.8e} (central differences: {check_kappa:.8e})")
    print(f"  {stats['checkpoints']} checkpoints, {stats['recomputed']} steps recomputed, "
          f"peak floats held {stats['peak_floats']:,} ({_gb(8 * stats['peak_floats'])}; "
          f"{stats['peak_states']} states and a step tape of {stats['step_rows']} rows)")
    return {"loss": value, "grad_u0": g_u0, "grad_kappa": g_kappa, "check_kappa": check_kappa,
            "grad_norm": grad_norm, "seconds": seconds, "full_rows": rows, "full_slots": slots,
            "stats": stats}


if __name__ == "__main__":
    main()
