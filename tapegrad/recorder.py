"""The recording functions: one per op of the table, generated with the op's formula inline.

An op on operands that need gradients computes its value in Python, appends one row to the
thread's tape (a constant operand written inline) and returns a new node holding its tape and
slot. A leaf, or a node of another tape, is registered on the tape by an ``input`` row the first
time the tape reads it. This is the hot path of eager recording: every line here costs
nanoseconds per op, which is why the formula is spliced in rather than called.
"""

from __future__ import annotations

import linecache
import math
import re
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

from . import memory
from .kernels import CODE
from .kernels.pyeval import MATH_ERRORS, arguments, forward_functions
from .kernels.table import CV, OPS, VC, VV, OpSpec
from .node import Node, as_number, current_tape
from .state import TAPE_ROWS_LIMIT, tape_ref

COMPARISONS = frozenset(s.name for s in OPS if s.boolean)

_SLOT = """\
            if {v}._tape is tape:
                {s} = {v}._slot
            else:
                reg = {v}._reg
                {s} = reg[1] if reg is not None and reg[0] == tape.serial else tape.add_input({v})
"""

_TAIL = """\
            rows = tape.rows
            slot = len(rows) >> 2
            rows += row
            out = new(cls)
            out._v = {value}
            out._tape = tape
            out._slot = slot
            out._reg = None
            out._rg = rg
            out._grad = None
            if slot >= LIMIT:
                full(tape, slot)  # a full tape; every row in anomaly mode (LIMIT 0)
            return out
"""

_UNARY = """\
def record_{name}(x{params}):
    if not isinstance(x, Node):
        return record_{name}(tensor(as_number(x, "{name}")){params})
    cls = x.__class__
    xv = x._v
    if xv.__class__ is NDARRAY:  # an array tensor (of any class): one array row
        return record_array("{name}", x{params})
    try:
        z = {fwd}
    except MATH_ERRORS:
        z = ieee(xv{params})
    if x._rg or x._tape is not None:
        tape = tape_ref()()
        if tape is None or tape.closed:
            tape = current_tape(x)
        if tape is not None:
{slot_a}\
            b = len(tape.consts)
            {store_params}
            row = ({code}, a, b, z)
            rg = {rg_x}
{tail}\
    return cls._leaf(plain(z, (xv,)))
"""

_BINARY = """\
def record_{name}({args}):
    if isinstance(x, Node):
        cls = x.__class__
        xv = x._v
        xt = x._rg or x._tape is not None
        if isinstance(y, Node):
            yv = y._v
            yt = y._rg or y._tape is not None
        else:
            if y.__class__ is float or y.__class__ is int:
                yv = y
            elif is_array(y):  # a scalar tensor with array data: an array op
                return record_array("{name}", x, y)
            else:
                yv = as_number(y, "{name}")
            yt = False
    elif isinstance(y, Node):
        cls = y.__class__
        if x.__class__ is float or x.__class__ is int:
            xv = x
        elif is_array(x):
            return record_array("{name}", x, y)
        else:
            xv = as_number(x, "{name}")
        xt = False
        yv = y._v
        yt = y._rg or y._tape is not None
    else:
        return record_{name}(tensor(as_number(x, "{name}")), y)
    try:
        z = {fwd}
    except MATH_ERRORS:
        z = ieee(xv, yv)
    if xt or yt:
        tape = tape_ref()()
        if tape is None or tape.closed:
            tape = current_tape(x, y)
        if tape is not None:
            if not yt:
{slot_a_deep}\
                row = ({vc}, a, yv, z)
                rg = {rg_x}
            elif not xt:
{slot_b_deep}\
                row = ({cv}, xv, b, z)
                rg = {rg_y}
            else:
{slot_a_deep}\
{slot_b_deep}\
                row = ({vv}, a, b, z)
                rg = {rg_xy}
{tail}\
    return cls._leaf(plain(z, (xv, yv)))
"""


def _plain(spec: OpSpec) -> Callable[[float, tuple], Any]:
    """The value of an unrecorded op, with the dtype torch would give it."""
    if spec.name in COMPARISONS:
        return lambda z, operands: z != 0.0
    if spec.integer:
        return lambda z, operands: (
            int(z) if all(isinstance(v, int) for v in operands) else float(z)
        )
    return lambda z, operands: float(z)


def _inline(formula: str) -> str:
    """The formula in terms of the recorder's locals (operand values xv, yv)."""
    return re.sub(r"\b([xy])\b", r"\1v", formula)


def _source(spec: OpSpec, reflected: bool = False) -> str:
    """The recording function's source; `reflected` swaps the parameters (``__rmul__(y, x)``)."""
    diff = spec.differentiable
    rg = dict(rg_x="x._rg" if diff else "False", rg_y="y._rg" if diff else "False",
              rg_xy="x._rg or y._rg" if diff else "False")
    tail = _TAIL.format(value="z != 0.0" if spec.name in COMPARISONS else "z")
    if spec.arity == 1:
        params = "".join(f", p{k}" for k in range(spec.params))
        return _UNARY.format(
            name=spec.name, params=params, fwd=_inline(spec.fwd), code=CODE[(spec.name, "v")],
            slot_a=_SLOT.format(v="x", s="a"), tail=tail, **rg,
            store_params=f"tape.consts += ({params[2:]},)" if spec.params else "pass",
        )
    return _BINARY.format(
        name=spec.name, fwd=_inline(spec.fwd), tail=tail, args="y, x" if reflected else "x, y", **rg,
        vv=CODE[(spec.name, VV)], vc=CODE[(spec.name, VC)], cv=CODE[(spec.name, CV)],
        slot_a_deep=textwrap.indent(_SLOT.format(v="x", s="a"), "    "),
        slot_b_deep=textwrap.indent(_SLOT.format(v="y", s="b"), "    "),
    )


# The namespaces of the recording functions: a unary op on an array tensor (a node holding an
# ndarray) records through the array recorder, bound by register_arrays
_NAMESPACES: list[dict] = []


def register_arrays(cls: type, record: Callable[..., Any]) -> None:
    """Route unary ops on instances of `cls` to `record(name, x, *params)` (tapegrad.array's)."""
    global ARRAY_CLASS
    ARRAY_CLASS = cls
    for ns in _NAMESPACES:
        ns.update(record_array=record)


ARRAY_CLASS: type = np.ndarray  # tapegrad.array's ArrayTensor, once registered


def tape_full(tape: Any, slot: int) -> None:
    """A tape reached TAPE_ROWS_LIMIT rows: an eager one is full (it takes the rest of the graph
    being recorded; the thread's next graph starts a new tape); one recorded for tg.compile is
    never cut, and its memory is checked every CHECK_ROWS rows."""
    if not tape.tracing:
        tape.closed = tape.full = True
    elif slot % memory.CHECK_ROWS == 0:
        memory.check_recording(slot)


def set_row_hook(hook: Callable[[Any, int], None] | None) -> None:
    """Call `hook(tape, slot)` after every scalar row recorded (anomaly mode; the hook calls
    tape_full itself), or, with None, only when a tape is full (tape_full)."""
    for ns in _NAMESPACES:
        ns.update(LIMIT=0 if hook else TAPE_ROWS_LIMIT, full=hook or tape_full)


def _make_tensor(value: Any) -> Any:
    """tg.tensor(value) (imported at the call: the tensor module imports this one)."""
    from .tensor import tensor

    return tensor(value)


def _compile(spec: OpSpec, reflected: bool = False) -> Callable[..., Any]:
    fast, ieee = forward_functions(spec)
    namespace = dict(fast.__globals__)  # the formula's math functions and helpers
    namespace.update(
        Node=Node, as_number=as_number, current_tape=current_tape, tape_ref=tape_ref,
        MATH_ERRORS=MATH_ERRORS, ieee=ieee, plain=_plain(spec), new=object.__new__,
        LIMIT=TAPE_ROWS_LIMIT, full=tape_full, tensor=_make_tensor, NDARRAY=np.ndarray,
        record_array=None, is_array=lambda v: isinstance(v, (np.ndarray, list, tuple)) and np.ndim(v) > 0,
    )
    _NAMESPACES.append(namespace)
    source = _source(spec, reflected)
    filename = f"<tapegrad recorder: {spec.name}{' reflected' if reflected else ''}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    fn = namespace[f"record_{spec.name}"]
    fn.__name__ = fn.__qualname__ = f"__r{spec.name}__" if reflected else spec.name
    fn.__doc__ = f"{spec.name}({arguments(spec)}) = {spec.fwd}"
    return fn


# One recording function per op of the table, and the reflected operators (``2.0 * x``).
APPLY: dict[str, Callable[..., Any]] = {s.name: _compile(s) for s in OPS}
REFLECTED: dict[str, Callable[..., Any]] = {
    s.name: _compile(s, reflected=True) for s in OPS if s.arity == 2 and s.differentiable
}


def where(condition: Any, x: Any, y: Any) -> Any:
    """`x` where `condition` holds, else `y`: records both sides and a branchless select, so a
    replay follows the condition (a Python ``if`` would freeze the branch behind a guard)."""
    if any(isinstance(v, (ARRAY_CLASS, np.ndarray)) for v in (condition, x, y)):
        from .array import where as array_where

        return array_where(condition, x, y)
    if not isinstance(condition, Node):
        return x if condition else y
    return APPLY["add"](APPLY["where_then"](condition, x), APPLY["where_else"](condition, y))


def clamp(x: Any, min: float | None = None, max: float | None = None) -> Node:
    """Clamp `x` to [min, max] (either bound may be None); the bounds get gradient 1."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    lo = -math.inf if min is None else float(as_number(min, "clamp"))
    hi = math.inf if max is None else float(as_number(max, "clamp"))
    return APPLY["clamp"](x, lo, hi)


_OPERATORS = {"add": "add", "sub": "sub", "mul": "mul", "div": "truediv", "pow": "pow",
              "lt": "lt", "le": "le", "gt": "gt", "ge": "ge", "eq": "eq", "ne": "ne"}


def install_ops(cls: type) -> None:
    """Give a node class every op of the table as a method, and Python's operators (declared for
    type checkers by the generated stub _op_methods.pyi)."""
    methods: dict[str, Any] = {spec.name: APPLY[spec.name] for spec in OPS}
    methods.update(clamp=clamp, __neg__=APPLY["neg"], __abs__=APPLY["abs"])  # clamp: keyword bounds
    for op, dunder in _OPERATORS.items():
        methods[f"__{dunder}__"] = APPLY[op]
        if op in REFLECTED:  # Python reflects comparisons itself
            methods[f"__r{dunder}__"] = REFLECTED[op]
    methods["__hash__"] = object.__hash__  # __eq__ records a comparison; identity hashing as in torch
    for name, method in methods.items():
        setattr(cls, name, method)
