"""``tg.checkpoint``: gradients of long time-stepping loops without a tape of the whole loop.

A loop of T steps ``u = step(u, *params)`` recorded whole is T step tapes. Here the step is
recorded once with :func:`tg.compile` and replayed at every step; the forward pass keeps only
every k-th state (a *checkpoint*) and the states of the last segment. The reverse pass goes
segment by segment from the end: it recomputes the segment's states from its checkpoint, then
steps back through them, each step one forward replay of the step tape at its stored state and
one reverse sweep seeded with the state's cotangent, which also adds to the parameters'
cotangent. Memory: ceil(T/k) + k states and one step tape (k = ceil(sqrt(T)) by default). Time:
2T forward replays and T reverse sweeps, plus (ceil(T/k) - 1)(k - 1) replays recomputing states.
With ``snapshots=s`` the states are placed binomially instead (Griewank's revolve): s + 1 states
held, and the fewest recomputations s states allow (about r T for the least r with
C(s + r, s) >= T).

The parameters' running cotangent is seeded into the step tape's parameter rows before each
reverse sweep, so it accumulates in the order a tape of the whole loop accumulates it: gradients
equal that tape's bit for bit when the step records the same rows there.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any, overload

import numpy as np

from . import anomaly, kernels, memory
from .compiled import CompiledFunction, Variant
from .functional import value_and_grad as _value_and_grad
from .tensor import float_array

Pullback = Callable[[Any], tuple[Any, ...]]
_Reverse = Callable[[np.ndarray, np.ndarray], None]  # (lam, pbar), updated in place


def _floats(value: Any, what: str) -> np.ndarray:
    """`value` as a float64 array, or a TypeError naming `what`."""
    try:
        return float_array(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"tg.checkpoint: {what} must be a number or an array of numbers, got "
            f"{type(value).__name__} ({err})"
        ) from None


def _shaped(flat: np.ndarray, shape: tuple[int, ...]) -> Any:
    """A flat piece as the caller's kind of value: a float for shape (), else an array."""
    return float(flat[0]) if shape == () else flat.reshape(shape).copy()


class _Replay:
    """One variant of the step tape, ready to replay on this thread: the sweeps' arguments (its
    workspace, an inputs vector whose first n entries take the state), the slots of state and
    parameters, and where the next state is: the block of an array row in the arena (a step
    returning an array op's result), else scalar slots. Per step: a few NumPy calls and one or
    two Numba calls."""

    __slots__ = ("variant", "vals", "adj", "aadj", "arena", "forward", "reverse", "fargs", "rargs",
                 "state_in", "n", "inputs_at", "array_args", "out_slots", "out_values", "out_seeds",
                 "seed_outputs", "seeded")

    def __init__(
        self, cf: CompiledFunction, variant: Variant, n: int, params: np.ndarray, out_row: int | None
    ) -> None:
        v = self.variant = variant
        space = cf._space(variant)
        vals, adj, array_args, arena = space.vals, space.adj, space.array_args, space.arena
        self.vals, self.adj, self.arena = vals, adj, arena
        self.aadj = array_args[2] if array_args else None
        inputs = np.array(variant.inputs(np.concatenate([np.zeros(n), params])))
        self.state_in = inputs[:n]
        self.forward, self.reverse = variant.sweep("forward"), variant.sweep("reverse")
        self.fargs = (v.run_op, v.a, v.b, vals, v.consts, inputs, 0, v.rows, *array_args[:2])
        # not consuming: keep the adjoints, read below
        self.rargs = (v.run_op, v.a, v.b, vals, v.consts, adj, 0, v.rows, False, *array_args)
        self.n, self.inputs_at, self.array_args = n, variant.sweep("input_adjoints"), array_args
        self.out_slots = variant.out_slots
        self.out_values: np.ndarray | None = None  # views of the result's block and its adjoints
        self.out_seeds: np.ndarray | None = None
        self.seeded = () if out_row is None else (out_row,)  # the rows whose blocks pull seeds
        if out_row is not None:
            entry = variant.a[out_row]
            start = int(variant.arrays[4][entry])  # the block's offset and size
            block = slice(start, start + int(variant.arrays[5][entry]))
            self.out_values, self.out_seeds = arena[block], array_args[2][block]
        # seed by assignment unless a slot is seeded twice (a value returned twice)
        self.seed_outputs = len(np.unique(self.out_slots)) == len(self.out_slots)

    def advance(self, u: np.ndarray, out: np.ndarray) -> bool:
        """out <- step(u); False (out unset) if a guard fails at u."""
        self.state_in[:] = u
        if self.forward(*self.fargs) >= 0:
            return False
        self.output(out)
        return True

    def output(self, out: np.ndarray) -> None:
        """out <- the next state, from the last replay."""
        if self.out_values is not None:
            out[:] = self.out_values
        else:
            self.vals.take(self.out_slots, out=out)

    def back(self, u: np.ndarray, lam: np.ndarray, pbar: np.ndarray) -> bool:
        """Replay at u and pull back (see pull); False (nothing changed) if a guard fails at u."""
        self.state_in[:] = u
        if self.forward(*self.fargs) >= 0:
            return False
        self.pull(lam, pbar)
        return True

    def pull(self, lam: np.ndarray, pbar: np.ndarray) -> None:
        """A reverse sweep at the last replay: lam <- lam . d step / d u, pbar += lam . d step / d params."""
        adj = self.adj
        adj[:] = 0.0
        if self.aadj is not None:
            self.aadj[:] = 0.0
        if self.out_seeds is not None:
            self.out_seeds[:] = lam
        elif self.seed_outputs:
            adj[self.out_slots] = lam
        else:  # one value returned in several places
            np.add.at(adj, self.out_slots, lam)
        v, n = self.variant, self.n
        self.inputs_at(v.op, v.a, v.input_slots, adj, pbar, n, True, *self.array_args)  # pbar accumulates on
        live = (kernels.live_blocks(v.arrays, v.op, v.a, self.seeded),) if self.array_args else ()
        self.reverse(*self.rargs, *live)
        self.inputs_at(v.op, v.a, v.input_slots, adj, lam, 0, False, *self.array_args)
        self.inputs_at(v.op, v.a, v.input_slots, adj, pbar, n, False, *self.array_args)


class _Loop:
    """The replays of one call: the state's shape, the parameters, the variant in use, counters."""

    def __init__(self, sim: Checkpointed, shape: tuple[int, ...], params: tuple[Any, ...]) -> None:
        self.sim, self.shape, self.n = sim, shape, math.prod(shape)
        flats = [_floats(p, f"parameter {i}") for i, p in enumerate(params)]
        self.params = tuple(float(f) if f.ndim == 0 else f for f in flats)
        self.param_shapes = [f.shape for f in flats]
        self.pflat = np.concatenate([f.ravel() for f in flats]) if flats else np.zeros(0)
        self.current: _Replay | None = None
        self.replays: dict[int, _Replay] = {}
        self.checked = anomaly.is_anomaly_enabled()  # check every replay (tg.detect_anomaly)
        self.forward_replays = 0
        self.reverse_sweeps = 0
        self.recomputed = 0

    def switch(self, u: np.ndarray) -> _Replay:
        """The variant whose guards hold at `u` (recorded if new), replayed there by tg.compile."""
        cf = self.sim._cf
        variant, vals, _, _ = cf._replay((_shaped(u, self.shape), *self.params))
        r = self.replays.get(id(variant))
        if r is None or r.vals is not vals:  # new, or its workspace was replaced
            out_row = self.sim._check_output(variant, self.shape)
            r = self.replays[id(variant)] = _Replay(cf, variant, self.n, self.pflat, out_row)
        self.current = r
        return r

    def advance(self, u: np.ndarray, out: np.ndarray) -> None:
        """out <- step(u, *params)."""
        self.forward_replays += 1
        r = self.current
        if r is None or not r.advance(u, out):
            r = self.switch(u)
            r.output(out)
        if self.checked:
            anomaly.check_replay(r.variant, r.vals, r.arena)

    def step_back(self, u: np.ndarray, lam: np.ndarray, pbar: np.ndarray) -> None:
        """In place: lam <- lam . d step / d u at u; pbar <- pbar + lam . d step / d params."""
        self.forward_replays += 1
        self.reverse_sweeps += 1
        r = self.current
        if r is None or not r.back(u, lam, pbar):
            r = self.switch(u)
            r.pull(lam, pbar)
        if self.checked:
            anomaly.check_replay(r.variant, r.vals, r.arena, r.adj, r.aadj)

    def param_pieces(self, pbar: np.ndarray) -> tuple[Any, ...]:
        """The parameters' cotangent, flat, as one float or array per parameter."""
        pieces, offset = [], 0
        for shape in self.param_shapes:
            size = math.prod(shape)
            pieces.append(_shaped(pbar[offset : offset + size], shape))
            offset += size
        return tuple(pieces)


class Checkpointed:
    """A time step ``step(u, *params) -> u`` looped with checkpointed reverse mode (see
    :func:`checkpoint`)."""

    def __init__(
        self, step: Callable[..., Any], every: int | None = None, *, snapshots: int | None = None,
        max_variants: int = 8,
    ) -> None:
        for name, value in (("every", every), ("snapshots", snapshots)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"tg.checkpoint: {name} must be an int or None, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"tg.checkpoint: {name} must be >= 1, got {value}")
        if every is not None and snapshots is not None:
            raise ValueError("tg.checkpoint: give every (uniform) or snapshots (binomial), not both")
        self.step = step
        self.every = every
        self.snapshots = snapshots
        self._cf = CompiledFunction(step, max_variants)
        self._stats: dict[str, Any] = {}
        functools.update_wrapper(self, step)

    # ------------------------------------------------------------------ checks
    def _check_output(self, variant: Variant, shape: tuple[int, ...]) -> int | None:
        """The array row holding the step's result (None: its scalar slots), checked to have the
        state's shape."""
        row, got = variant.array_output, variant.out_shape
        if got != (None if shape == () else shape):
            name = getattr(self.step, "__name__", "step")
            raise ValueError(
                f"tg.checkpoint: the step {name} returned "
                f"{'a scalar' if got is None else f'shape {got}'} for a state of shape {shape}: "
                "a step must return the next state, of the state's shape"
            )
        return row

    @staticmethod
    def _steps(steps: Any) -> int:
        if isinstance(steps, bool):
            raise TypeError("tg.checkpoint: steps must be an int, got bool")
        try:
            count = operator.index(steps)
        except TypeError:
            raise TypeError(f"tg.checkpoint: steps must be an int, got {type(steps).__name__}") from None
        if count < 0:
            raise ValueError(f"tg.checkpoint: steps must be >= 0, got {count}")
        return count

    @staticmethod
    def _state(u0: Any) -> np.ndarray:
        u = _floats(u0, "the state u0")
        if u.size == 0:
            raise ValueError(f"tg.checkpoint: the state u0 has shape {u.shape}, with no numbers")
        return u

    def interval(self, steps: int) -> int:
        """The steps between checkpoints for a loop of `steps`: `every`, or ceil(sqrt(steps))."""
        if self.every is not None:
            return self.every
        return max(1, math.isqrt(steps - 1) + 1) if steps > 0 else 1

    # ------------------------------------------------------------------ public API
    def __call__(self, u0: Any, *params: Any, steps: int) -> Any:
        """The state after `steps` steps from `u0` (one replay per step, no states kept)."""
        count = self._steps(steps)
        u = self._state(u0)
        loop = _Loop(self, u.shape, params)
        state = u.ravel().copy()
        for _ in range(count):
            loop.advance(state, state)  # in place: a replay reads its state before writing the next
        every = None if self.snapshots else self.interval(count)
        self._record_stats(loop, count, every, checkpoints=0, held=1)
        return _shaped(state, u.shape)

    def vjp(self, u0: Any, *params: Any, steps: int) -> tuple[Any, Pullback]:
        """(the final state, pullback): ``pullback(uT_bar)`` returns ``(u0_bar, *param_bars)``,
        the final state's cotangent pulled back to the initial state and every parameter. The
        pullback holds the checkpoints and may be called any number of times."""
        count = self._steps(steps)
        u = self._state(u0)
        shape = u.shape
        loop = _Loop(self, shape, params)
        schedule = self._uniform if self.snapshots is None else self._binomial
        uT, reverse = schedule(loop, u.ravel().copy(), count)

        def pullback(cotangent: Any) -> tuple[Any, ...]:
            lam = _floats(cotangent, "the cotangent").astype(np.float64, copy=True)
            if lam.shape != shape:
                raise ValueError(
                    f"tg.checkpoint: the cotangent has shape {lam.shape}, the state has shape {shape}"
                )
            pbar = np.zeros(len(loop.pflat))
            loop.current = None  # workspaces are per thread: find this thread's
            loop.replays.clear()
            lam = lam.ravel()
            reverse(lam, pbar)
            return (_shaped(lam, shape), *loop.param_pieces(pbar))

        return _shaped(uT, shape), pullback

    def _uniform(self, loop: _Loop, u: np.ndarray, count: int) -> tuple[np.ndarray, _Reverse]:
        """A checkpoint every k steps; the last segment's states kept from the forward pass."""
        k = self.interval(count)
        segments = -(-count // k)
        checkpoints = np.empty((segments, loop.n))
        buffer = np.empty((min(k, count), loop.n))  # the states of one segment
        last = (segments - 1) * k  # the first step of the last segment
        nxt = np.empty(loop.n)
        for t in range(count):
            if t % k == 0:
                checkpoints[t // k] = u
            if t >= last:
                buffer[t - last] = u
            loop.advance(u, nxt)
            u, nxt = nxt, u
        held = [segments - 1]  # the segment whose states `buffer` holds
        self._record_stats(loop, count, k, segments, segments + len(buffer))

        def reverse(lam: np.ndarray, pbar: np.ndarray) -> None:
            for j in reversed(range(segments)):
                length = min(k, count - j * k)
                if held[0] != j:
                    buffer[0] = checkpoints[j]
                    for i in range(1, length):
                        loop.advance(buffer[i - 1], buffer[i])
                    loop.recomputed += length - 1
                    held[0] = j
                for i in reversed(range(length)):
                    loop.step_back(buffer[i], lam, pbar)
            self._record_stats(loop, count, k, segments, segments + len(buffer))

        return u, reverse

    def _binomial(self, loop: _Loop, u: np.ndarray, count: int) -> tuple[np.ndarray, _Reverse]:
        """Binomial checkpointing (Griewank's revolve): at most `snapshots` states stored, placed
        so that the steps recomputed are the fewest possible, r T - C(s + r, r - 1) for s
        snapshots and the least r with C(s + r, s) >= T; the forward pass keeps u0 only."""
        slots = min(self.snapshots or 1, max(count, 1))
        pool = np.empty((slots, loop.n))  # pool[i]: a stored state; pool[0] = u0
        pool[0] = u
        work = u.copy()  # replayed in place
        for _ in range(count):
            loop.advance(work, work)
        uT = work.copy()
        self._record_stats(loop, count, None, slots, slots + 1)

        def restore(slot: int, steps: int) -> np.ndarray:
            """work <- the state `steps` steps after pool[slot]."""
            work[:] = pool[slot]
            for _ in range(steps):
                loop.advance(work, work)
            loop.recomputed += steps
            return work

        def reverse_range(lo: int, hi: int, slot: int, lam: np.ndarray, pbar: np.ndarray) -> None:
            """Step back from hi to lo, with the state at lo in pool[slot] and the slots after it free."""
            while hi - lo > 1:
                n, s = hi - lo, slots - slot
                if s == 1:  # no free slot: each state from the stored one
                    for t in range(hi - 1, lo, -1):
                        loop.step_back(restore(slot, t - lo), lam, pbar)
                    break
                r = 1
                while math.comb(s + r, s) < n:
                    r += 1
                split = max(n - math.comb(s + r - 1, s - 1), math.comb(s + r - 2, s), 1)
                pool[slot + 1] = restore(slot, split)
                reverse_range(lo + split, hi, slot + 1, lam, pbar)
                hi = lo + split
            loop.step_back(pool[slot], lam, pbar)

        def reverse(lam: np.ndarray, pbar: np.ndarray) -> None:
            if count:
                reverse_range(0, count, 0, lam, pbar)
            self._record_stats(loop, count, None, slots, slots + 1)

        return uT, reverse

    def value_and_grad(
        self, loss: Callable[[Any], Any], u0: Any, *params: Any, steps: int
    ) -> tuple[float, tuple[Any, ...]]:
        """(loss(uT), (d/du0, *d/dparams)) for a scalar ``loss`` of the final state (``loss`` may
        use tg ops; it is recorded eagerly once)."""
        uT, pullback = self.vjp(u0, *params, steps=steps)
        value, cotangent = _value_and_grad(loss)(uT)
        return value, pullback(cotangent)

    def stats(self) -> dict[str, Any]:
        """Counts of the last call (and its pullbacks): steps, every (steps between checkpoints;
        None for binomial snapshots), checkpoints (states stored, or snapshot slots), recomputed
        (steps replayed again from a stored state), forward_replays and reverse_sweeps of the step
        tape, peak_states and peak_floats held (states plus the step's workspace: values and
        adjoints of its rows and array blocks), step_rows, step_array_slots, recordings of the
        step, and full_tape_bytes: about what a tape of the whole loop would take as the sweeps'
        arrays (the step tape's, times the steps)."""
        return dict(self._stats)

    def _record_stats(self, loop: _Loop, steps: int, every: int | None, checkpoints: int, held: int) -> None:
        r = loop.current
        rows = r.variant.rows if r else 0
        array_slots = r.variant.array_slots if r else 0
        self._stats = {
            "steps": steps, "every": every, "checkpoints": checkpoints, "recomputed": loop.recomputed,
            "forward_replays": loop.forward_replays, "reverse_sweeps": loop.reverse_sweeps,
            "peak_states": held if steps else 0,
            "peak_floats": (held * loop.n if steps else 0) + 2 * (rows + array_slots),
            "step_rows": rows, "step_array_slots": array_slots,
            "recordings": self._cf.stats()["recordings"],
            "full_tape_bytes": steps * (rows * memory.ARRAY_BYTES_PER_ROW
                                        + array_slots * memory.ARRAY_BYTES_PER_SLOT),
        }


@overload
def checkpoint(
    step: Callable[..., Any], every: int | None = None, *, snapshots: int | None = None, max_variants: int = 8
) -> Checkpointed: ...


@overload
def checkpoint(
    step: None = None, every: int | None = None, *, snapshots: int | None = None, max_variants: int = 8
) -> Callable[[Callable[..., Any]], Checkpointed]: ...


def checkpoint(
    step: Callable[..., Any] | None = None, every: int | None = None, *, snapshots: int | None = None,
    max_variants: int = 8,
) -> Checkpointed | Callable[[Callable[..., Any]], Checkpointed]:
    """Loop ``u = step(u, *params)`` with checkpointed reverse mode (also a decorator).

    ``sim = tg.checkpoint(step, every=k)``; ``sim(u0, *params, steps=T)`` is the final state;
    ``sim.vjp(u0, *params, steps=T)`` gives it and a pullback to ``(u0_bar, *param_bars)``;
    ``sim.value_and_grad(loss, u0, *params, steps=T)``; ``sim.stats()``. The step is recorded
    with :func:`tg.compile` (branches are guards: a step that branches otherwise is recorded
    again) and replayed each step. Only every k-th state is kept (k = ceil(sqrt(T)) when `every`
    is None), or with ``snapshots=s`` at most s states, placed binomially (revolve): fewer
    states for more recomputation. States and parameters are numbers or float arrays.
    """
    if step is None:
        return lambda f: Checkpointed(f, every, snapshots=snapshots, max_variants=max_variants)
    return Checkpointed(step, every, snapshots=snapshots, max_variants=max_variants)


__all__ = ["checkpoint", "Checkpointed"]
