"""``tg.compile``: record a function once on a tape, then replay the tape in Numba at new inputs.

The first call for a signature (the shapes of the arguments) records ``f`` on a fresh tape with
traced inputs; later calls replay that tape: a forward sweep, and for derivatives a reverse or
tangent sweep, each one Numba call. Comparisons that Python turned into branches are guard rows:
a replay whose guards fail at the new inputs is never returned; ``f`` is recorded again there and
the new variant kept (the ``max_variants`` most recently used per signature).

Arguments are floats or float arrays. Inside ``f`` an array argument is a traced array
(:class:`tapegrad.arguments.TracedArray`): indexing with integers or slices, iteration and
``np.asarray`` give traced scalars, for scalar code; array ops, NumPy's functions and
``tnp.asarray`` take it whole, as one array row. Tensors that ``f`` reads from outside
(``requires_grad`` leaves, say model parameters) are inputs of the tape too, read afresh at every
call.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import anomaly, arguments, custom, kernels
from .array import ArrayTensor
from .node import Node, slot_on
from .sparse import SparseDerivatives
from .state import restore_tape, set_tape, tape_ref
from .tape import Tape, address
from .tensor import float_array, kernel_data

FORMAT_VERSION = 4  # 2: array tables, captured values flattened; 3: array rows may read arguments; 4: join
# rows (a version-2 tape reads every argument entry with an input row: valid as 3; a version-3 tape
# has no join rows: valid as 4)
READABLE = (2, 3, 4)
Signature = tuple[tuple[int, ...], ...]


class Variant(NamedTuple):
    """One recorded tape of a compiled function, as the arrays the sweeps take."""

    tape: Tape
    op: np.ndarray
    run_op: np.ndarray  # op with its runs marked (kernels.runs), or op itself: what whole replays sweep
    a: np.ndarray
    b: np.ndarray
    consts: np.ndarray
    # the row reading each entry of the arguments (an input row, or an array_input row reading a
    # range of them), then the row of each captured tensor
    input_slots: np.ndarray
    out_slots: np.ndarray  # the row of each output entry (every entry of an array output: its row)
    out_shape: tuple[int, ...] | None  # None: the function returned a scalar
    captured: tuple[Node, ...]  # tensors read from outside f: their values are read at each call
    rows: int
    out_slot: int  # the first output's slot (the output, for a scalar f), as a Python int
    arrays: tuple  # the array table (kernels.NO_ARRAYS for a tape of scalar rows)
    array_slots: int  # floats in the array blocks (0 without array rows)
    optimized: Any = None  # the tape passes' report (tapegrad.tape_passes), if they ran

    @property
    def has_arrays(self) -> bool:
        """Whether the tape has array rows (and an array table)."""
        return len(self.arrays[0]) > 0

    @property
    def suffix(self) -> str:
        """Of the sweeps this tape runs: "_arrays" with array rows, "_runs" with runs marked."""
        return ("_arrays" if self.has_arrays else "") + ("_runs" if self.run_op is not self.op else "")

    @property
    def array_output(self) -> int | None:
        """The array row whose block holds every output entry (f returned an array tensor), else
        None (the outputs are scalar rows)."""
        row = int(self.out_slots[0])
        return row if self.op[row] == kernels.ARRAY_ROW else None

    def inputs(self, flat: np.ndarray) -> np.ndarray:
        """The tape's input vector: the flat arguments, then the captured tensors' values now."""
        if not self.captured:
            return flat
        return np.concatenate([flat, *[np.ravel(node._v).astype(np.float64) for node in self.captured]])

    def sweep(self, name: str) -> Callable[..., Any]:
        """The compiled sweep `name` for this tape (the array-aware one if it has array rows)."""
        return getattr(kernels.sweeps(), name + self.suffix)



def _output_is_input(variant: Variant) -> bool:
    """Whether the output is an array_input row (the function returns its argument): that row's
    blocks then hold the output's values and seeds, not the argument's nor the gradient's."""
    row = variant.array_output
    return row is not None and variant.arrays[0][variant.a[row]] == kernels.ARRAY_CODE["array_input"]


def _flatten_args(args: Sequence[Any]) -> tuple[Signature, np.ndarray]:
    if len(args) == 1:  # the common case, without the loop
        arg = args[0]
        if arg.__class__ is np.ndarray and arg.dtype == np.float64:
            return (arg.shape,), kernel_data(arg.ravel())
        if arg.__class__ is float:
            return ((),), np.array([arg])
    shapes, parts = [], []
    for i, arg in enumerate(args):
        value = arg._untraced("passing", "") if isinstance(arg, Node) else arg
        try:
            array = float_array(value)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"tg.compile: argument {i} must be a number or an array of numbers, got "
                f"{type(arg).__name__} ({err})"
            ) from None
        shapes.append(array.shape)
        parts.append(array.ravel())
    flat = np.concatenate(parts) if parts else np.zeros(0)
    return tuple(shapes), flat


def _output_slots(tape: Tape, out: Any) -> tuple[list[int], tuple[int, ...] | None]:
    def slot(item: Any) -> int:
        if isinstance(item, Node):
            return slot_on(tape, item)
        if isinstance(item, (int, float, np.number)):
            return tape.add_const(float(item))
        raise TypeError(
            f"tg.compile: the function must return numbers or tensors (or sequences or arrays of "
            f"them), got {type(item).__name__}"
        )

    if isinstance(out, ArrayTensor):  # its array row holds every entry: the row, once per entry
        return [slot(out)] * out.size, out.shape
    if isinstance(out, (Node, int, float, np.number)):
        return [slot(out)], None
    array = np.empty(0, dtype=object)
    try:
        array = np.asarray(out, dtype=object)
    except (TypeError, ValueError):
        pass
    if array.ndim == 0:
        return [slot(array.item())], None
    return [slot(item) for item in array.ravel()], array.shape


def record(f: Callable[..., Any], signature: Signature, flat: np.ndarray,
           passes: Sequence[str] = ()) -> Variant:
    """Record `f` at the flat arguments `flat` on a fresh tape (then run the tape `passes`)."""
    tape = Tape()
    tape.tracing = True
    previous = tape_ref()
    set_tape(tape)
    try:
        args = arguments.traced(tape, signature, flat)
        out = f(*args)
        out_slots, out_shape = _output_slots(tape, out)
        arg_rows = arguments.input_rows(args)
    finally:
        restore_tape(previous)
    arrays = tape.freeze()
    reading = set(arg_rows)
    captured = [(node, slot) for node, slot in zip(tape.inputs, tape.input_slots) if slot not in reading]
    variant = Variant(
        tape=tape, op=arrays.op, run_op=arrays.op, a=arrays.a, b=arrays.b, consts=arrays.consts,
        input_slots=np.array(arg_rows + [slot for _, slot in captured], dtype=np.int64),
        out_slots=np.array(out_slots, dtype=np.int64), out_shape=out_shape,
        captured=tuple(node for node, _ in captured), rows=len(arrays.op), out_slot=out_slots[0],
        arrays=arrays.arr, array_slots=arrays.array_slots,
    )
    if passes:
        from . import tape_passes  # imports Numba: only when asked

        return tape_passes.optimize(variant, passes)[0]  # (marks the runs of the tape it makes)
    from .kernels.runs import marked  # imports Numba: only when recording for replay

    return variant._replace(run_op=marked(arrays.op, arrays.a, arrays.b))


class ReplayTape(NamedTuple):
    """A recorded tape as plain arrays for your own ``@numba.njit`` code: pass it (a NamedTuple
    of arrays) into a jitted function and call ``tg.sweeps().gradient(t.op, t.a, t.b, t.consts,
    inputs, t.input_slots, t.out_slot, vals, adj, grad)`` there, with
    ``inputs = concatenate((x, t.captured))``, ``vals``, ``adj`` of ``len(t.op)`` floats and
    ``grad`` of ``len(x)``. A
    tape with array rows (``len(t.addresses) > 0``) replays with ``gradient_arrays``, which takes
    ``t.arrays, t.addresses, t.adjoints`` too (one workspace: one thread at a time). A tape with
    runs (``t.run_op is not t.op``: an optimized loop, kernels.runs) replays faster with
    ``gradient_runs`` (``gradient_arrays_runs``) on ``t.run_op`` in place of ``t.op``. In a loop,
    ``workspace_gradient`` (with the same suffixes) takes two flags after ``grad``: ``clean``, that
    the last call (which returned -1) left ``adj`` and ``t.adjoints`` zero but for the input rows',
    and ``consume``, to leave them so: with True, True it skips zeroing them first (on a
    90 000-row tape, 395 against 430 us a call)."""

    op: np.ndarray
    run_op: np.ndarray  # op with its runs marked, for the sweeps ending in _runs (or op itself)
    a: np.ndarray
    b: np.ndarray
    consts: np.ndarray
    input_slots: np.ndarray
    out_slot: int
    captured: np.ndarray  # values of the tensors f read from outside, appended to the inputs
    arrays: tuple  # the array table (empty for a tape of scalar rows)
    addresses: np.ndarray  # where each array row's values live
    adjoints: np.ndarray  # the adjoints of the array rows
    arena: np.ndarray  # the memory `addresses` point into (keep the tape alive while using it)


class Workspace:
    """One thread's arrays for replaying one variant, reused across its calls: the values and
    adjoints of the rows; the array part of the sweeps' arguments (none for a tape of scalar rows:
    the array table, the addresses of the array blocks' values in the arena, their adjoints); the
    arena (the tape's array data written there once, here); the array blocks' tangents of adjoints
    and tangents (forward mode); the gradient sweep and its arguments but the inputs and gradient;
    the rows' tangents and tangents of adjoints (:meth:`second`).

    `clean`, `clean_d`: the adjoints (adj and the blocks), and their tangents, are zero but the
    input rows' (a consuming sweep left them so; the next one zeroes only those first: zeroing
    every row's took a sixth of a replayed gradient). Every use of the workspace but the
    consuming sweeps' clears them (:meth:`CompiledFunction._space`).

    `consuming`: the array table the consuming reverse sweeps take, whose adjoint offsets put the
    blocks never live at once in one `scratch` (kernels.adjoint_plan; zero between sweeps, as they
    leave it); every other sweep takes the table of array_args, a block per row.

    `own_addresses`: the value blocks' own addresses, while those of the array inputs point at the
    caller's arguments (:meth:`CompiledFunction._replay` with `in_place`), else None."""

    __slots__ = ("vals", "adj", "array_args", "arena", "tangents", "gradient", "head", "tail", "clean",
                 "clean_d", "plans", "consuming", "scratch", "own_addresses", "rows_d")

    def __init__(self, variant: Variant) -> None:
        self.vals, self.adj = np.empty(variant.rows), np.empty(variant.rows)
        self.arena = np.empty(variant.array_slots)
        self.array_args: tuple = ()
        self.tangents: tuple = ()
        self.consuming: tuple = ()
        self.scratch: np.ndarray | None = None
        self.own_addresses: np.ndarray | None = None  # while the array inputs' blocks are the arguments
        if variant.has_arrays:  # each array row's block in the arena (a 0-d result: its scalar slot)
            scalar = variant.a[variant.op == kernels.ARRAY_ROW + 1]
            vaddr = address(self.arena) + 8 * variant.arrays[4]
            vaddr[scalar] = 0
            aadj = np.empty(variant.array_slots)
            self.array_args = (variant.arrays, vaddr, aadj)
            seeded = () if variant.array_output is None else (variant.array_output,)
            shared, length = kernels.adjoint_plan(variant.op, variant.a, variant.arrays, seeded)
            self.scratch = np.zeros(length)
            offsets = variant.arrays[4].copy()  # (its own: the sweeps point those of inputs at results)
            offsets[shared >= 0] = (address(self.scratch) - address(aadj)) // 8 + shared[shared >= 0]
            self.consuming = (*variant.arrays[:4], offsets, *variant.arrays[5:])
            self.tangents = (np.empty(variant.array_slots), np.empty(variant.array_slots))  # adjd, dot
            kernels.sweeps().fill_constants(variant.op, variant.a, variant.consts, self.vals,
                                            *self.array_args[:2])
        self.gradient = variant.sweep("workspace_gradient")
        self.clean = self.clean_d = False
        self.plans: tuple[np.ndarray, ...] = ()
        self.rows_d: tuple[np.ndarray, np.ndarray] | None = None
        self.head = (variant.run_op, variant.a, variant.b, variant.consts)
        self.tail = (variant.input_slots, variant.out_slot, self.vals, self.adj)

    def own_blocks(self) -> None:
        """The array inputs' value blocks back to the workspace's own (after an in-place replay)."""
        if self.own_addresses is not None:
            self.array_args[1][:] = self.own_addresses
            self.own_addresses = None

    def second(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows' tangents and tangents of adjoints (made on first use: second-order sweeps)."""
        if self.rows_d is None:
            self.rows_d = (np.empty(len(self.vals)), np.zeros(len(self.vals)))
        return self.rows_d

    def clear(self) -> None:
        """Zero every adjoint (adj, and the blocks by their own offsets): the workspace is clean."""
        self.adj[:] = 0.0
        if self.array_args:
            kernels.sweeps().clear_adjoints(self.array_args[0], self.array_args[2], True, True)
        self.clean = True

    def plan(self, variant: Variant, second: bool) -> np.ndarray:
        """The array sweeps' `plan` (kernels.plans): which rows the tangent and second-order sweeps
        of a Hessian-vector product compute (`second`), or every row (a jvp's tangents)."""
        if not self.plans:
            rows = (variant.op, variant.a, variant.b, variant.arrays)
            self.plans = tuple(kernels.second_order_plan(*rows, every) for every in (True, False))
        return self.plans[second]


class CompiledFunction(SparseDerivatives):
    """A function recorded once per signature and replayed in Numba (see :func:`compile`)."""

    def __init__(self, f: Callable[..., Any] | None, max_variants: int = 8,
                 optimize: bool | str | Sequence[str] = False) -> None:
        self.f = f
        self.max_variants = max_variants
        self._passes: tuple[str, ...] = ()  # the tape passes run on each recording
        if optimize:
            from .tape_passes import passes_of

            self._passes = passes_of(optimize)
        self._variants: dict[Signature, OrderedDict[int, Variant]] = {}
        self._lock = threading.Lock()
        self._workspaces = threading.local()
        self._counts = {"calls": 0, "recordings": 0, "rerecordings": 0}
        self._last: Variant | None = None
        if f is not None:
            functools.update_wrapper(self, f)

    # ------------------------------------------------------------------ variants and replay
    def _space(self, variant: Variant, keeps_clean: bool = False) -> Workspace:
        """This thread's workspace for `variant` (reused across calls), no longer clean unless the
        caller `keeps_clean` (reads it, or writes only values, or sweeps back consuming)."""
        try:
            spaces = self._workspaces.spaces
        except AttributeError:
            spaces = self._workspaces.spaces = {}
        space = spaces.get(id(variant))
        if space is None or space.head[1] is not variant.a:  # (an id reused by a newer variant)
            if len(spaces) > 2 * self.max_variants:  # workspaces of evicted variants
                spaces.clear()
            space = spaces[id(variant)] = Workspace(variant)
        space.clean &= keeps_clean
        space.clean_d &= keeps_clean
        return space

    def _in_place(self, variant: Variant, sweep: Callable[..., Any], *args: Any) -> Any:
        """`sweep(*args)`, a one-call sweep that reads the arguments in place (alias_inputs): if it
        raises (out of memory), this thread's workspace for `variant` is dropped, as its blocks may
        still point at the arguments."""
        try:
            return sweep(*args)
        except BaseException:
            self._workspaces.spaces.pop(id(variant), None)
            raise

    def _replay(self, args: Sequence[Any], in_place: bool = False
                ) -> tuple[Variant, np.ndarray, np.ndarray, np.ndarray]:
        """The variant whose guards hold at `args`, its values there, and the flat inputs. With
        `in_place`, the array inputs' value blocks are the arguments themselves (not copied), until
        the caller's ``Workspace.own_blocks``: for a caller that keeps them alive and unchanged."""
        signature, flat = _flatten_args(args)
        self._counts["calls"] += 1
        variants = self._variants.get(signature)
        for key, variant in list(variants.items()) if variants else ():
            inputs = variant.inputs(flat)
            space = self._space(variant, keeps_clean=True)
            vals = space.vals
            space.own_blocks()  # (after an in-place call interrupted before it ended)
            if in_place and variant.has_arrays and not (  # (anomaly mode checks the workspace's values)
                    _output_is_input(variant) or anomaly.is_anomaly_enabled()):
                space.own_addresses = kernels.sweeps().alias_inputs(*space.array_args[:2], inputs, True)
            try:
                failed = variant.sweep("forward")(
                    variant.run_op, variant.a, variant.b, vals, variant.consts, inputs, 0, variant.rows,
                    *space.array_args[:2],
                )
            except BaseException:
                space.own_blocks()
                raise
            if failed >= 0:
                space.own_blocks()
            else:
                with self._lock:
                    if variants is not None and key in variants:
                        variants.move_to_end(key, last=False)
                self._last = variant
                return variant, vals, inputs, flat
        return self._record(signature, flat)

    def _record(self, signature: Signature, flat: np.ndarray):
        if self.f is None:
            raise RuntimeError(
                "tg.compile: the guards of every loaded tape fail at these inputs (or their "
                f"shapes {signature} were never recorded), and a loaded function cannot record again"
            )
        variant = record(self.f, signature, flat, self._passes)
        with self._lock:
            variants = self._variants.setdefault(signature, OrderedDict())
            self._counts["recordings"] += 1
            self._counts["rerecordings"] += bool(variants)
            variants[id(variant)] = variant
            variants.move_to_end(id(variant), last=False)
            while len(variants) > self.max_variants:
                variants.popitem(last=True)
        inputs = variant.inputs(flat)
        space = self._space(variant, keeps_clean=True)
        vals = space.vals
        failed = variant.sweep("forward")(
            variant.run_op, variant.a, variant.b, vals, variant.consts, inputs, 0, variant.rows,
            *space.array_args[:2],
        )
        if failed >= 0:  # a comparison that gives another answer when replayed (NaN, say)
            raise RuntimeError(f"tg.compile: guard row {failed} fails at the inputs it was recorded at")
        self._last = variant
        return variant, vals, inputs, flat

    # ------------------------------------------------------------------ results
    @staticmethod
    def _shape_output(variant: Variant, values: np.ndarray) -> Any:
        if variant.out_shape is None:
            return float(values[0])
        return values.reshape(variant.out_shape)

    @staticmethod
    def _split(grad: np.ndarray, args: Sequence[Any], argnums: int | Sequence[int],
               signature: Signature | None = None) -> Any:
        """Per-argument pieces (views) of a gradient over the flat arguments, floats for scalars;
        a stack of gradients (a leading axis) gives pieces with that axis too. (`signature`: the
        arguments' shapes, if known.)"""
        if len(args) == 1 and argnums == 0 and grad.ndim == 1:
            arg = args[0]._v if isinstance(args[0], Node) else args[0]
            shape = signature[0] if signature else np.shape(arg)
            if len(shape) == 1 and len(grad) == shape[0]:
                return grad
            return float(grad[0]) if shape == () else grad[: math.prod(shape)].reshape(shape)
        pieces, offset = [], 0
        for arg in args:
            shape = np.shape(arg._v if isinstance(arg, Node) else arg)
            size = math.prod(shape)
            piece = grad[..., offset : offset + size].reshape(grad.shape[:-1] + shape)
            pieces.append(float(piece) if piece.ndim == 0 else piece)
            offset += size
        if isinstance(argnums, int):
            return pieces[argnums]
        return tuple(pieces[k] for k in argnums)

    def _outputs(self, variant: Variant, store: np.ndarray, block: int) -> np.ndarray:
        """The output entries of a row store (the values, tangents or adjoints of the rows), and
        of the matching array store of the workspace (0: values, 1: tangents, 2: adjoints) for an
        array output, which is the block of one array row (a view: copy it to keep it)."""
        row = variant.array_output
        if row is None:
            return store[variant.out_slots]
        space = self._space(variant, keeps_clean=True)  # (_pull writes seeds it consumes)
        arrays = (space.arena, space.tangents[1], space.array_args[2])[block]
        start = variant.arrays[4][variant.a[row]]
        return arrays[start : start + len(variant.out_slots)]

    def _pull(self, variant: Variant, vals: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """A reverse sweep at the values `vals` from `seeds`, the output entries' adjoints; the
        adjoints of the rows (array blocks': in the workspace, where only the input rows' are
        kept but in anomaly mode, which checks them all). A consuming sweep takes the input rows'
        blocks STALE (which the consuming table may point at the caller's memory: alias_adjoints)
        and zeroes those it does not reach."""
        space = self._space(variant, keeps_clean=True)
        adj, array_args = space.adj, space.array_args
        variant.sweep("clear_rows")(variant.op, variant.a, variant.input_slots, adj, space.clean, *array_args)
        consume = not anomaly.is_anomaly_enabled()
        if array_args:  # (by the blocks' own offsets: the blocks in the scratch are zero)
            if not (consume and space.clean):
                kernels.sweeps().clear_adjoints(array_args[0], array_args[2], not consume, not space.clean)
            if consume:
                array_args = (space.consuming, *array_args[1:])
        if variant.array_output is not None:
            self._outputs(variant, adj, 2)[:] = seeds
        else:
            np.add.at(adj, variant.out_slots, seeds)  # (a value returned twice gets both)
        seeded = () if variant.array_output is None else (variant.array_output,)
        live = () if not array_args else (kernels.live_blocks(array_args[0], variant.op, variant.a, seeded,
                                                              stale=consume),)
        variant.sweep("reverse")(variant.run_op, variant.a, variant.b, vals, variant.consts, adj, 0,
                                 variant.rows, consume, *array_args, *live)
        if array_args:  # (the input rows' blocks no rule reached: zero, as input_adjoints reads them)
            kernels.sweeps().zero_stale(array_args[0], array_args[2], *live)
        space.clean = consume
        return adj

    def _pullbacks(self, variant: Variant, vals: np.ndarray, seeds: Iterable[np.ndarray], out: np.ndarray,
                   start: int = 0) -> np.ndarray:
        """out[k] = the adjoints of input entries [start, start + out.shape[1]) from a reverse
        sweep seeded with the k-th of `seeds` (the output entries' adjoints), at the values `vals`.
        Array inputs' adjoints are written in out[k] in place (alias_adjoints), but for an input
        row the output is (its block holds the seeds) and in anomaly mode (which checks blocks)."""
        space = self._space(variant, keeps_clean=True)
        alias = variant.has_arrays and not (anomaly.is_anomaly_enabled() or _output_is_input(variant))
        for k, seed in enumerate(seeds):
            if alias:
                arrays, aadj = space.consuming, space.array_args[2]
                own = kernels.sweeps().alias_adjoints(
                    variant.op, variant.a, variant.input_slots, arrays, aadj, out[k], start, True)
            try:
                self._input_adjoints(variant, self._pull(variant, vals, seed), start + out.shape[1],
                                     start, out=out[k])
            finally:
                if alias:
                    arrays[4][:] = own
        return out

    def __call__(self, *args: Any) -> Any:
        """f(*args), replayed."""
        variant, vals, _, _ = self._replay(args)
        if anomaly.is_anomaly_enabled():
            anomaly.check_replay(variant, vals, self._space(variant).arena)
        return self._shape_output(variant, self._outputs(variant, vals, 0).copy())

    def value_and_grad(self, *args: Any, argnums: int | Sequence[int] = 0) -> tuple[float, Any]:
        """(f(*args), d f / d args[argnums]) for a scalar-valued f."""
        signature, flat = _flatten_args(args)
        variants = self._variants.get(signature)
        if variants:  # the hot path: one Numba call replays and differentiates
            variant = next(iter(variants.values()))
            if variant.out_shape is None:
                space = self._space(variant, keeps_clean=True)
                grad = np.empty(len(flat))
                inputs = variant.inputs(flat)
                consume = not anomaly.is_anomaly_enabled()  # (which checks every adjoint block)
                array_args = space.array_args
                if consume and not space.clean:  # every adjoint zeroed first (blocks: by their own
                    space.clear()  # offsets, the sweep clears those of inputs alone)
                if consume and array_args:  # the scratch's table
                    array_args = (space.consuming, *array_args[1:])
                failed = self._in_place(variant, space.gradient, *space.head, inputs, *space.tail, grad,
                                        space.clean, consume, *array_args)
                if failed < 0:
                    space.clean = consume
                    self._counts["calls"] += 1
                    self._last = variant
                    if not consume:
                        anomaly.check_replay(variant, space.vals, space.arena, space.adj,
                                             *space.array_args[2:])
                    return float(space.vals[variant.out_slot]), self._split(grad, args, argnums, signature)
        variant, vals, inputs, _ = self._replay(args)
        if variant.out_shape is not None:
            raise ValueError(
                f"grad: the function returns an array of shape {variant.out_shape}; grad needs a "
                "scalar output (use jacobian or vjp)"
            )
        adj = self._pull(variant, vals, np.ones(1))
        if anomaly.is_anomaly_enabled():
            space = self._space(variant)
            anomaly.check_replay(variant, vals, space.arena, adj, *space.array_args[2:])
        grad = self._input_adjoints(variant, adj, len(flat))
        return float(vals[variant.out_slot]), self._split(grad, args, argnums, signature)

    def _input_adjoints(self, variant: Variant, adj: np.ndarray, stop: int, start: int = 0,
                        second: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """The adjoints of input entries [start, stop) after a reverse sweep (with `second`: their
        tangents, after a second-order sweep), wherever the rows reading them keep them (in `out`)."""
        out = np.empty(stop - start) if out is None else out
        space = self._space(variant, keeps_clean=True)
        array_args: tuple = ()
        if variant.has_arrays:  # (input rows' offsets: their own in either table, or aliased in this one)
            blocks = space.tangents[0] if second else space.array_args[2]
            array_args = (space.consuming, space.array_args[1], blocks)
        variant.sweep("input_adjoints")(variant.op, variant.a, variant.input_slots, adj, out, start, False,
                                        *array_args)
        return out

    def grad(self, *args: Any, argnums: int | Sequence[int] = 0) -> Any:
        """d f / d args[argnums] for a scalar-valued f (a tuple of them for several argnums)."""
        return self.value_and_grad(*args, argnums=argnums)[1]

    def hvp(self, x: Any, v: Any) -> Any:
        """The Hessian of a scalar f of one argument at `x`, times `v` (forward-over-reverse in
        Numba: one call runs a forward, a tangent and a second-order reverse sweep)."""
        return self.grad_and_hvp(x, v)[1]

    def grad_and_hvp(self, x: Any, v: Any) -> tuple[Any, Any]:
        """(the gradient of a scalar f of one argument at `x`, its Hessian times `v`): the
        second-order sweep of :meth:`hvp` gives both (a Newton step needs no separate gradient)."""
        signature, flat = _flatten_args((x,))
        direction = np.asarray(v, dtype=np.float64)
        if direction.shape != signature[0]:
            raise ValueError(f"hvp: v has shape {direction.shape}, x has shape {signature[0]}")
        variants = self._variants.get(signature)
        variant = next(iter(variants.values())) if variants else self._replay((x,))[0]
        for _ in range(2):  # the most recent variant; if its guards fail, the right one
            if variant.out_shape is not None:
                raise ValueError(f"hvp: the function returns shape {variant.out_shape}, not a scalar")
            custom.require(variant.arrays, "second order", "hvp")
            inputs = variant.inputs(flat)
            seeds = np.zeros(len(inputs))
            seeds[: len(flat)] = direction.ravel()
            k = len(flat)
            space = self._space(variant, keeps_clean=True)
            grad, hv = np.empty(k), np.empty(k)
            dot, adjd = space.second()
            failed = self._in_place(
                variant, variant.sweep("hvp"), variant.run_op, variant.a, variant.b, variant.consts, inputs,
                seeds, variant.input_slots, variant.out_slot, space.vals, dot, space.adj, adjd,
                grad, hv, space.clean and space.clean_d, True, *space.array_args, *space.tangents,
                *((space.plan(variant, True),) if variant.has_arrays else ()),
            )
            if failed < 0:
                space.clean = space.clean_d = True  # (the sweep consumed both)
                break
            variant = self._replay((x,))[0]
        self._last = variant
        return self._split(grad, (x,), 0), self._split(hv, (x,), 0)

    def hessian(self, x: Any) -> Any:
        """The Hessian of a scalar f of one argument at `x` (one hvp per coordinate)."""
        shape = np.shape(x._v if isinstance(x, Node) else x)
        size = math.prod(shape)
        columns = [np.ravel(self.hvp(x, np.eye(size)[j].reshape(shape))) for j in range(size)]
        h = np.array(columns).T
        return float(h[0, 0]) if shape == () else h.reshape(shape + shape)

    def batch_value_and_grad(self, points: Any) -> tuple[np.ndarray, np.ndarray]:
        """f and its gradient at every row of `points` (f of one array argument), replayed in
        parallel with one workspace per thread. Rows whose guards fail are recorded again."""
        X = kernel_data(np.ascontiguousarray(points, dtype=np.float64))
        if X.ndim < 1:
            raise ValueError(f"batch_grad: points must have one row per point, got shape {X.shape}")
        m = X.shape[0]
        values, grads = np.empty(m), np.empty((m,) + X.shape[1:])
        if m == 0:
            return values, grads
        variant = self._replay((X[0],))[0]  # records (or picks) the variant for this signature
        if variant.out_shape is not None:
            raise ValueError(f"batch_grad: the function returns shape {variant.out_shape}, not a scalar")
        from numba import get_num_threads  # imported with the sweeps, not with tapegrad

        inputs = np.ascontiguousarray(np.stack([variant.inputs(row) for row in X.reshape(m, -1)]))
        n = X[0].size
        flat_grads = np.empty((m, n))
        failed = np.empty(m, dtype=np.int64)
        variant.sweep("batch_gradient")(
            variant.run_op,
            variant.a,
            variant.b,
            variant.consts,
            inputs,
            variant.input_slots,
            variant.out_slot,
            values,
            flat_grads,
            failed,
            min(get_num_threads(), m),
            *self._space(variant).array_args,
        )
        grads.reshape(m, -1)[:] = flat_grads
        for r in np.flatnonzero(failed >= 0):  # another branch: replay (or record) that point alone
            values[r], grads[r] = self.value_and_grad(X[r])
        self._counts["calls"] += m
        return values, grads

    def batch_grad(self, points: Any) -> np.ndarray:
        """The gradient of f at every row of `points`, in parallel (see batch_value_and_grad)."""
        return self.batch_value_and_grad(points)[1]

    def replay_tape(self, *args: Any) -> ReplayTape:
        """The tape that replays f at `args` (recorded if needed), as arrays for ``@njit`` code."""
        variant, _, _, _ = self._replay(args)
        if variant.out_shape is not None:
            raise ValueError(f"replay_tape: the function returns shape {variant.out_shape}, not a scalar")
        space = Workspace(variant)  # the caller's own (which its code may leave in any state)
        return ReplayTape(  # type: ignore[call-arg]  # the starred part is three of its fields
            variant.op, variant.run_op, variant.a, variant.b, variant.consts, variant.input_slots,
            variant.out_slot, variant.inputs(np.zeros(0)),
            *(space.array_args or (kernels.NO_ARRAYS, kernels.NO_ADDRESSES, kernels.NO_ADJOINTS)),
            space.arena,
        )

    def vjp(self, args: Sequence[Any], cotangent: Any) -> tuple[Any, tuple[Any, ...]]:
        """(f(*args), the cotangent pulled back to every argument: sum(cotangent * df/darg)).

        `cotangent` has the output's shape, or is a stack of k of them (a leading axis): then one
        forward replay serves k reverse sweeps, and each argument's pullback has that axis too
        (k rows of a Jacobian, say)."""
        variant, vals, inputs, flat = self._replay(args, in_place=True)  # (inputs: kept alive)
        try:
            cot = np.asarray(cotangent, dtype=np.float64)
            expected = () if variant.out_shape is None else variant.out_shape
            if cot.shape != expected and cot.shape[1:] != expected:
                raise ValueError(
                    f"vjp: cotangent has shape {cot.shape}, the output has shape {expected} (a stack of "
                    f"cotangents: shape (k, *{expected}))"
                )
            out = self._shape_output(variant, self._outputs(variant, vals, 0).copy())
            seeds = cot.reshape(-1, len(variant.out_slots))
            pulled = self._pullbacks(variant, vals, seeds, np.empty((len(seeds), len(flat))))
        finally:
            self._space(variant, keeps_clean=True).own_blocks()
        return out, self._split(pulled[0] if cot.shape == expected else pulled, args, tuple(range(len(args))))

    def jvp(self, args: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
        """(f(*args), the directional derivative of f along `tangents`, one per argument)."""
        if len(tangents) != len(args):
            raise ValueError(f"jvp: {len(args)} arguments but {len(tangents)} tangents")
        variant, vals, inputs, _ = self._replay(args)
        seeds = np.zeros(len(inputs))
        t_signature, t_flat = _flatten_args(tangents)
        a_signature, _ = _flatten_args(args)
        if t_signature != a_signature:
            raise ValueError(f"jvp: tangent shapes {t_signature} differ from argument shapes {a_signature}")
        seeds[: len(t_flat)] = t_flat
        out = self._shape_output(variant, self._outputs(variant, vals, 0).copy())
        dot = self._outputs(variant, self._tangent(variant, vals, seeds), 1)
        return out, self._shape_output(variant, dot.copy())

    def _tangent(self, variant: Variant, vals: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """The tangents of every row along `seeds` (the inputs' tangents), at the values `vals`
        (array rows': in the workspace)."""
        custom.require(variant.arrays, "jvp", "a tangent sweep (jvp, forward-mode jacobian)")
        dot = np.empty(variant.rows)
        space = self._space(variant)
        array_args = ()
        if variant.has_arrays:
            array_args = (*space.array_args[:2], space.tangents[1], space.plan(variant, False))
        variant.sweep("tangent")(
            variant.run_op, variant.a, variant.b, vals, variant.consts, seeds, dot, 0, variant.rows,
            *array_args,
        )
        return dot

    def jacobian(self, *args: Any, argnums: int = 0) -> np.ndarray:
        """d f / d args[argnums] as an array of shape (output shape + argument shape): reverse
        sweeps per output element or tangent sweeps per input element, whichever are fewer."""
        variant, vals, inputs, flat = self._replay(args, in_place=True)
        try:
            offsets = np.cumsum([0] + [math.prod(np.shape(a._v if isinstance(a, Node) else a)) for a in args])
            lo, hi = offsets[argnums], offsets[argnums + 1]
            m, n = len(variant.out_slots), hi - lo
            jac = np.empty((m, n))
            if m <= n or not custom.has_rule(variant.arrays, "jvp"):
                self._pullbacks(variant, vals, (np.eye(1, m, r)[0] for r in range(m)), jac, lo)
            else:
                seeds = np.zeros(len(inputs))
                for c in range(n):
                    seeds[:] = 0.0
                    seeds[lo + c] = 1.0
                    jac[:, c] = self._outputs(variant, self._tangent(variant, vals, seeds), 1)
        finally:
            self._space(variant, keeps_clean=True).own_blocks()
        arg = args[argnums]
        arg_shape = np.shape(arg._v if isinstance(arg, Node) else arg)
        out_shape = () if variant.out_shape is None else variant.out_shape
        return jac.reshape(out_shape + arg_shape)

    # ------------------------------------------------------------------ inspection, save, load
    @property
    def tape(self) -> Tape:
        """The tape of the variant used last (``len()``, ``print()``, ``.listing()``, ``.stats()``)."""
        if self._last is None:
            raise RuntimeError("tg.compile: nothing recorded yet; call the function first")
        return self._last.tape

    def stats(self) -> dict[str, Any]:
        """Calls, recordings, re-recordings (guards that failed), variants kept, and the last tape's
        rows by op, slots, guards and bytes."""
        out: dict[str, Any] = dict(self._counts)
        out["signatures"] = len(self._variants)
        out["variants"] = sum(len(v) for v in self._variants.values())
        if self._last is not None:
            out["tape"] = self._last.tape.stats()
            if self._last.optimized is not None:
                out["optimize"] = self._last.optimized.as_dict()
        return out

    def save(self, path: str) -> None:
        """Write every recorded variant to a NumPy ``.npz`` file (captured tensors as their values
        now); :func:`load` replays it without the Python function."""
        arrays: dict[str, np.ndarray] = {}
        meta: list[dict[str, Any]] = []
        for signature, variants in self._variants.items():
            for variant in variants.values():
                k = len(meta)
                meta.append({"signature": [list(s) for s in signature],
                             "out_shape": None if variant.out_shape is None else list(variant.out_shape),
                             "array_slots": variant.array_slots,
                             "custom_ops": {op.id: op.name for op in custom.ops_in(variant.arrays)}})
                for name in ("op", "a", "b", "consts", "input_slots", "out_slots"):
                    arrays[f"{k}_{name}"] = getattr(variant, name)
                arrays[f"{k}_captured"] = variant.inputs(np.zeros(0))  # their values now, flat
                for c, column in enumerate(variant.arrays):
                    arrays[f"{k}_arr{c}"] = column
        header = {"format": "tapegrad", "version": FORMAT_VERSION, "variants": meta}
        np.savez(path, header=np.array(json.dumps(header)), **arrays)  # type: ignore[arg-type]  # numpy's stub


class _Constant:
    """A captured tensor of a loaded tape: its value when the tape was saved."""

    __slots__ = ("_v",)

    def __init__(self, value: float) -> None:
        self._v = value


def load(path: str) -> CompiledFunction:
    """A compiled function from :meth:`CompiledFunction.save` (no Python function needed)."""
    try:
        data = np.load(path, allow_pickle=False)
        header = json.loads(str(data["header"]))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"tg.load: {path} is not a saved tapegrad tape ({err})") from None
    if header.get("format") != "tapegrad" or header.get("version") not in READABLE:
        raise ValueError(
            f"tg.load: {path} has tape format version {header.get('version')!r}; this tapegrad "
            f"reads version {FORMAT_VERSION}: record and save it again"
        )
    cf = CompiledFunction(None)
    for k, meta in enumerate(header.get("variants", [])):
        try:
            variant, signature = _load_variant(data, k, meta, path)
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"tg.load: {path} is corrupted ({type(err).__name__}: {err})") from None
        cf._variants.setdefault(signature, OrderedDict())[id(variant)] = variant
    return cf


def _load_variant(data: Any, k: int, meta: dict, path: str) -> tuple[Variant, Signature]:
    """Variant k of a saved file, checked (ValueError when it is corrupted)."""
    n_codes = len(kernels.OPCODES)
    op = data[f"{k}_op"]
    if op.dtype != np.uint8 or (len(op) and op.max() >= n_codes):
        raise ValueError(f"tg.load: {path} holds opcodes this tapegrad does not know")
    signature = tuple(tuple(int(d) for d in s) for s in meta["signature"])
    tape = Tape()
    tape.closed = True
    arr = tuple(data[f"{k}_arr{c}"] for c in range(len(kernels.NO_ARRAYS)))
    captured = data[f"{k}_captured"]
    variant = Variant(
        tape=tape, op=op, run_op=op, a=data[f"{k}_a"], b=data[f"{k}_b"], consts=data[f"{k}_consts"],
        input_slots=data[f"{k}_input_slots"], out_slots=data[f"{k}_out_slots"],
        out_shape=None if meta["out_shape"] is None else tuple(meta["out_shape"]),
        captured=(_Constant(captured),) if len(captured) else (),  # type: ignore[arg-type]
        rows=len(op), out_slot=int(data[f"{k}_out_slots"][0]), arrays=arr,
        array_slots=int(meta.get("array_slots", 0)),
    )
    n_args = sum(math.prod(s) for s in signature)
    _check_variant(variant, path, n_args + len(captured))
    if not _arguments_read(variant, n_args):
        raise ValueError(f"tg.load: {path} is corrupted (an argument's entry read by another row)")
    custom.relink(arr, meta.get("custom_ops", {}), path)
    from .kernels.runs import marked

    return variant._replace(run_op=marked(op, variant.a, variant.b)), signature


def _check_variant(v: Variant, path: str, input_width: int) -> None:
    """Refuse a saved tape whose operands point outside it: every slot operand must name an
    earlier row, every constant a pool entry, every input an input, every array block and index
    map stay inside what it reads and writes (a corrupted file must raise, not crash the sweeps)."""
    n = len(v.op)
    floats = [v.consts] + [node._v for node in v.captured]
    if not (v.a.dtype == np.uint32 and v.b.dtype == np.uint32 and len(v.a) == n and len(v.b) == n
            and all(f.dtype == np.float64 and f.ndim == 1 for f in floats) and v.array_slots >= 0
            and v.input_slots.dtype == np.int64 and v.out_slots.dtype == np.int64 and len(v.out_slots)
            and np.all((v.input_slots >= 0) & (v.input_slots < n))
            and np.all((v.out_slots >= 0) & (v.out_slots < n))):
        raise ValueError(f"tg.load: {path} is corrupted (arrays of the wrong type or length)")
    codes = kernels.OPCODES
    kind = np.array([o.kind for o in codes])[v.op]
    name = np.array([o.spec.name for o in codes])[v.op]
    params = np.array([o.spec.params for o in codes])[v.op]
    rows, a, b = np.arange(n), v.a.astype(np.int64), v.b.astype(np.int64)
    a_slot = np.isin(kind, ["v", "vv", "vc"]) | (name == "guard")
    b_slot = np.isin(kind, ["vv", "cv"])
    within = [
        (a[a_slot], rows[a_slot]), (b[b_slot], rows[b_slot]),  # slots: earlier rows
        (a[(kind == "cv") | (name == "const")], len(v.consts)), (b[kind == "vc"], len(v.consts)),
        (b[params > 0] + params[params > 0] - 1, len(v.consts)),
        (a[name == "input"], input_width),
    ]
    if not all(np.all(ops < bound) for ops, bound in within):
        raise ValueError(f"tg.load: {path} is corrupted (operands outside the tape)")
    if (v.has_arrays or np.any(v.op >= kernels.ARRAY_ROW)) and not _array_rows_valid(v, input_width):
        raise ValueError(f"tg.load: {path} is corrupted (array rows outside their blocks)")


def _arguments_read(v: Variant, n_args: int) -> bool:
    """Whether input_slots[k] reads argument entry k, for every k: an input row of entry k, or an
    array_input row whose range holds k."""
    k = np.arange(n_args)
    rows = v.input_slots[:n_args]
    if len(rows) < n_args:
        return False
    op, a = v.op[rows], v.a[rows].astype(np.int64)
    scalar = (op == kernels.CODE[("input", "")]) & (a == k)
    j = np.where(op == kernels.ARRAY_ROW, a, 0)
    if len(v.arrays[0]) == 0:
        return bool(scalar.all())
    j = np.minimum(j, len(v.arrays[0]) - 1)
    x, size = v.arrays[1][j].astype(np.int64), v.arrays[5][j]
    block = (op == kernels.ARRAY_ROW) & (v.arrays[0][j] == kernels.ARRAY_CODE["array_input"])
    return bool(np.all(scalar | (block & (x <= k) & (k < x + size))))


def _array_rows_valid(v: Variant, input_width: int) -> bool:
    """Whether every array row of `v` reads and writes inside its operands' blocks."""
    dtypes = (np.uint8, np.uint32, np.uint32, np.int64, np.int64, np.int64, np.int64)
    if len(v.arrays) != 7 or any(c.dtype != d or c.ndim != 1 for c, d in zip(v.arrays, dtypes)):
        return False
    # Python ints: bounds arithmetic on tampered values must not wrap around
    code, ax, ay, ameta, aoff, asize, imeta = (c.tolist() for c in v.arrays)
    entries, n_codes = len(code), len(kernels.OPCODES)
    if len({len(c) for c in (code, ax, ay, ameta, aoff, asize)}) != 1:
        return False
    sizes = {}  # row -> number of values it holds
    for i in range(len(v.op)):
        op = int(v.op[i])
        if op < kernels.ARRAY_ROW:
            sizes[i] = 1
            continue
        j = int(v.a[i])
        if j >= entries or asize[j] < 0 or (op == kernels.ARRAY_ROW + 1 and asize[j] != 1):
            return False
        if op == kernels.ARRAY_ROW and not (0 <= aoff[j] and aoff[j] + asize[j] <= v.array_slots):
            return False
        sizes[i] = asize[j]
        if not _array_entry_valid(code[j], i, ax[j], ay[j], ameta[j], sizes, imeta, len(v.consts),
                                  input_width, n_codes):
            return False
    return True


class _Entry(Sequence[int]):
    """The side table from one entry on (imeta[start:]) without copying it: a loaded tape's rows
    are checked one by one, and a copy of the rest of the table per row took time quadratic in
    the tape (32 s for 2000 gathers). An open-ended slice is another _Entry, a bounded one a list."""

    def __init__(self, items: list[int], start: int) -> None:
        self.items, self.start = items, start

    def __len__(self) -> int:
        return max(len(self.items) - self.start, 0)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if key.stop is None and step == 1:
                return _Entry(self.items, self.start + lo)
            return self.items[self.start + lo : self.start + hi : step]
        if not 0 <= key < len(self):
            raise IndexError(key)
        return self.items[self.start + key]


def _map_positions(map_: Sequence[int], count: int) -> np.ndarray:
    """The positions an index map names (one checked to lie within its bounds), in order."""
    nd = map_[0]
    if nd < 0:
        return np.asarray(map_[1 : 1 + count], dtype=np.int64)
    positions = np.full((), map_[1], dtype=np.int64)
    for extent, stride in zip(map_[2 : 2 + nd], map_[2 + nd : 2 + 2 * nd]):
        positions = np.add.outer(positions, np.arange(extent, dtype=np.int64) * stride)
    return positions.ravel()


def _array_entry_valid(c: int, i: int, x: int, y: int, m: int, sizes: dict, imeta: list[int],
                       n_consts: int, input_width: int, n_codes: int) -> bool:
    """One array row: code c at row i, operands x, y, side-table entry at m (see kernels.table);
    every number a Python int."""
    n = sizes[i]
    mask = int(kernels.OPERAND_MASK[c]) if c < len(kernels.OPERAND_MASK) else -1
    if mask < 0 or any(r >= i for r, bit in ((x, 1), (y, 2)) if mask & bit):
        return False
    entry = _Entry(imeta, m if 0 <= m <= len(imeta) else len(imeta))

    def positions_within(count: int, bound: int, at: int = 0) -> bool:  # the index map at entry[at]
        map_ = entry[at:]
        if not map_:
            return False
        nd = map_[0]
        if nd < 0:
            idx = map_[1 : 1 + count]
            return len(idx) == count and all(0 <= p < bound for p in idx)
        if len(map_) < 2 + 2 * nd:
            return False
        shape, strides = map_[2 : 2 + nd], map_[2 + nd : 2 + 2 * nd]
        if any(e < 0 for e in shape) or math.prod(shape) != count:
            return False
        if count == 0:
            return True
        low = map_[1] + sum(min(s * (e - 1), 0) for s, e in zip(strides, shape))
        high = map_[1] + sum(max(s * (e - 1), 0) for s, e in zip(strides, shape))
        return 0 <= low and high < bound

    if c < n_codes:  # elementwise
        oc = kernels.OPCODES[c]
        if not oc.kind:
            return False
        pooled = 1 if oc.kind == "vc" else oc.spec.params  # constants read at y
        if (oc.kind == "cv" and not 0 <= x < n_consts) or (pooled and not 0 <= y <= n_consts - pooled):
            return False
        if oc.kind != "vv":
            return all(sizes[r] == n for r, bit in ((x, 1), (y, 2)) if mask & bit)
        if not entry or entry[0] < 1 or len(entry) < 1 + 3 * entry[0]:
            return False
        nd = entry[0]
        shape = entry[1 : 1 + nd]
        if any(e < 1 for e in shape) or math.prod(shape) != n:
            return False
        for r, strides in ((x, entry[1 + nd : 1 + 2 * nd]), (y, entry[1 + 2 * nd : 1 + 3 * nd])):
            if any(s < 0 for s in strides) or sum(s * (e - 1) for s, e in zip(strides, shape)) >= sizes[r]:
                return False
        return True
    name = kernels.ARRAY_OPS[c - n_codes].name
    if name == "array_input":
        return 0 <= x and x + n <= input_width
    if name == "array_const":
        return 0 <= x and x + n <= n_consts
    if name == "pack":
        rows = entry[:n]
        return len(rows) == n and all(0 <= r < i and sizes.get(int(r)) == 1 for r in rows)
    if name == "matmul":
        if len(entry) < 7:
            return False
        batch, m, inner, cols, sx, sy, _ = entry[:7]
        if min(batch, m, inner, cols, sx, sy) < 0 or batch * m * cols != n:
            return False
        return ((batch - 1) * sx + m * inner <= sizes[x]) and ((batch - 1) * sy + inner * cols <= sizes[y])
    if name == "gather":
        return positions_within(n, sizes[x])
    if name == "log_softmax":  # segments over the input, which has the output's size
        return sizes[x] == n and positions_within(n, n)
    if name == "cross_entropy":  # n samples of c scores each, and their targets
        if len(entry) < 3:
            return False
        samples, classes, reduction = entry[:3]
        targets = entry[3 : 3 + samples]
        return (samples >= 0 and classes >= 0 and samples * classes == sizes[x] and len(targets) == samples
                and n == (samples if reduction == 0 else 1) and reduction in (0, 1, 2)
                and all(0 <= t < classes for t in targets))
    if name == "join":  # x's elements, then y's, each in their places of the result, which they fill
        at_y = (1 + sizes[x]) if entry and entry[0] < 0 else (2 + 2 * entry[0]) if entry else 0
        within = positions_within(sizes[x], n) and positions_within(sizes[y], n, at_y)
        if sizes[x] + sizes[y] != n or not within:
            return False
        places = np.concatenate([_map_positions(entry, sizes[x]), _map_positions(entry[at_y:], sizes[y])])
        return len(np.unique(places)) == n  # (else some element of the result would be left unwritten)
    if name == "custom":  # operands and result of the sizes its kernels read
        return custom.layout_sizes(entry) == (sizes[x], n)
    return positions_within(sizes[x], n)  # the reductions: over the input, into the output


def compile(f: Callable[..., Any] | None = None, *, max_variants: int = 8,
            optimize: bool | str | Sequence[str] = False) -> Any:
    """Record `f` once per argument signature and replay it in Numba (also a decorator).

    ``cf(*args)``, ``cf.grad``, ``cf.value_and_grad``, ``cf.jvp``, ``cf.vjp``, ``cf.jacobian``;
    sparse derivatives ``cf.sparse_jacobian``, ``cf.sparse_hessian`` and their patterns;
    ``cf.tape``, ``cf.stats()``, ``cf.save(path)`` and :func:`load`. ``optimize=True`` runs the
    tape passes of :mod:`tapegrad.tape_passes` on each recording (or the ones named: ``("dce", "fold")``).
    """
    if f is None:
        return lambda g: CompiledFunction(g, max_variants, optimize)
    return CompiledFunction(f, max_variants, optimize)


__all__ = ["compile", "load", "CompiledFunction", "ReplayTape"]
