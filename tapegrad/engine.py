"""The eager backward pass: one Numba reverse sweep per tape involved.

Gradients flow from the outputs' slots down each tape; at its ``input`` rows they leave the tape,
either into a leaf (accumulated into ``.grad``) or into a node of another tape, whose tape is swept
next. Tapes are swept newest first (a tape only reads nodes that existed when it recorded them).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import anomaly, kernels
from .node import Node, TracingError
from .state import NONE, get_tape, set_tape
from .tape import Tape, TapeArrays

_SECOND_BACKWARD = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time."
)


def propagate(
    seeds: Iterable[tuple[Node, Any]],
    retain_graph: bool,
    wanted: Sequence[Node] = (),
) -> dict[int, Any]:
    """Push the seed adjoints (floats, or arrays of the nodes' shapes) to every node they reach.

    Returns the adjoint of each wanted node that was reached (by ``id``). When `wanted` is empty,
    leaves accumulate their adjoints into ``.grad`` (as do nodes that ``retain_grad``).
    """
    sweeps = kernels.sweeps()
    accumulate = not wanted
    want_ids = {id(n) for n in wanted}
    found: dict[int, Any] = {}
    pending: dict[Tape, list[tuple[int, Any]]] = {}
    order: list[tuple[int, int, Tape]] = []  # max-heap on tape serial

    def reach(node: Node, g: Any) -> None:
        if node._tape is None:  # a leaf
            if id(node) in want_ids:  # (the first adjoint as it is: no copy of a large array)
                found[id(node)] = found[id(node)] + g if id(node) in found else g
            if accumulate and node._rg:
                node._accumulate_grad(g)
            return
        tape = node._tape
        if tape not in pending:
            pending[tape] = []
            heapq.heappush(order, (-tape.serial, id(tape), tape))
        pending[tape].append((node._slot, g))

    for node, g in seeds:
        if node._tape is not None and node._tape.tracing:
            raise TracingError(
                "backward() or autograd.grad() inside a function being recorded by tg.compile: "
                "the gradient would be a constant frozen at the recording inputs. Differentiate "
                "the compiled function instead (cf.grad, cf.jvp, cf.hvp, cf.hessian)."
            )
        reach(node, g.copy() if g.__class__ is np.ndarray else g)  # (never the caller's array)
    while order:
        _, _, tape = heapq.heappop(order)
        arrays = tape.arrays()
        adj, aadj, reached, keep = _sweep(sweeps, tape, arrays, pending.pop(tape), retain_graph, wanted)
        taken, at = aadj, keep
        if len(keep):  # the kept blocks' adjoints, moved out in one call: the arena is zeros again
            taken, at = sweeps.take_blocks(arrays.op, arrays.a, arrays.arr, aadj, keep, reached)
            _arena.clean = True
        if accumulate:
            for node in tape.retained:
                if reached[node._slot]:
                    node._accumulate_grad(_adjoint(adj, taken, at, node, node._slot))
        for node in wanted:
            if node._tape is tape and reached[node._slot]:
                g = _adjoint(adj, taken, at, node, node._slot)
                found[id(node)] = found[id(node)] + g if id(node) in found else g
        slots = np.array(tape.input_slots, dtype=np.int64)
        hits, grads = reached[slots].tolist(), adj[slots].tolist()
        for node, slot, hit, g in zip(tape.inputs, tape.input_slots, hits, grads):
            if hit:
                reach(node, _adjoint(adj, taken, at, node, slot) if node._v.__class__ is np.ndarray else g)
    return found


def _adjoint(adj: np.ndarray, taken: np.ndarray, at: np.ndarray, node: Node, slot: int) -> Any:
    """The adjoint at `slot`, where `node` is read: a float, or an array of its shape: a view of
    the blocks taken out of the arena when they are few (up to _SHARED elements) or it is most of
    them, else a copy (a small gradient does not keep the others' memory alive)."""
    v = node._v
    if v.__class__ is np.ndarray:
        start = at[slot]
        block = taken[start : start + v.size].reshape(v.shape)
        return block if len(taken) <= _SHARED or 2 * v.size > len(taken) else block.copy()
    return float(adj[slot])


_SHARED = 1 << 15  # (256 KB)


class _Arena(threading.local):
    """The adjoints of array blocks: one buffer a thread reuses from one backward to the next
    (results are moved out before the next sweep; fresh memory from the OS costs more than
    zeroing warm memory, several times over for large arrays). The sweep zeroes each block as
    it reads it, and take_blocks the blocks it kept, so a buffer is zeroed again only after a
    sweep that did not finish."""

    buf: np.ndarray | None = None
    used = 0  # elements of buf that may be nonzero
    clean = True

    def take(self, n: int) -> np.ndarray:
        """n zeros."""
        if self.buf is None or len(self.buf) < n:
            self.buf = np.zeros(max(n, 2 * len(self.buf) if self.buf is not None else n))
        elif not self.clean:
            self.buf[: self.used].fill(0.0)
        self.used, self.clean = n, False
        return self.buf[:n]


_arena = _Arena()


def _sweep(
    sweeps, tape: Tape, arrays: TapeArrays, seeds: list[tuple[int, Any]], retain_graph: bool,
    wanted: Sequence[Node],
):
    """Sweep `tape` back from `seeds` (slot, adjoint). Returns the scalar adjoints, the array
    blocks' adjoints, the rows reached, and the rows whose blocks the caller reads (inputs,
    retained and wanted tensors; every row in anomaly mode)."""
    n = len(arrays.vals)
    adj = np.zeros(n)
    array_tape = len(arrays.vaddr) > 0
    aadj = _arena.take(arrays.array_slots) if array_tape else np.zeros(0)
    reached = np.zeros(n, dtype=np.uint8)
    keep = np.zeros(n if array_tape else 0, dtype=np.uint8)
    if array_tape and anomaly.is_anomaly_enabled():
        keep[:] = 1
    elif array_tape:
        keep[tape.input_slots] = 1
        for node in (*tape.retained, *wanted):
            if node._tape is tape:
                keep[node._slot] = 1
    seeded = []
    for slot, g in seeds:
        if g.__class__ is np.ndarray:
            seeded.append(slot)
            start, stop = tape.block(slot)
            aadj[start:stop] += g.reshape(-1)
        else:
            adj[slot] += g
        reached[slot] = 1
    # a tape of scalar rows runs the sweep that never compiles the array kernels
    array_args: tuple[Any, ...] = ()
    if array_tape:
        live = kernels.live_blocks(arrays.arr, arrays.op, arrays.a, seeded)
        array_args = (arrays.arr, arrays.vaddr, aadj, keep, live)
    sweep = sweeps.reverse_tracked_arrays if array_tape else sweeps.reverse_tracked
    bad = sweep(
        arrays.op, arrays.a, arrays.b, arrays.vals, arrays.consts, adj, reached,
        tape.freed_rows(), kernels.SAVES, kernels.OPERAND_MASK, not retain_graph, *array_args,
    )
    if bad >= 0:
        raise RuntimeError(_SECOND_BACKWARD)
    tape.check_versions(reached)
    if anomaly.is_anomaly_enabled():
        anomaly.check_adjoints(tape, arrays, adj, aadj)
    tape.adj = adj if tape.adj is None or len(tape.adj) != n else tape.adj + adj
    tape.closed, tape.full = True, False  # new rows go to a fresh tape: this one is freed with its nodes
    if get_tape() is tape:
        set_tape(NONE)
    if not retain_graph and reached.all():
        tape.release()
    return adj, aadj, reached, keep
