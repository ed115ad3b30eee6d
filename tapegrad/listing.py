"""The Wengert listing of a tape: one line per row, ``v3 = mul(v1, v2)``, with values and adjoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .kernels import ARRAY_OPS, OPCODES
from .kernels.table import CV, VC

if TYPE_CHECKING:
    from .tape import Tape


def _const(x: float) -> str:
    return repr(float(x))


def describe_row(tape: Tape, i: int) -> str:
    """The right-hand side of row i (``mul(v1, 2.0)``)."""
    arrays = tape.arrays()
    op, a, b = int(arrays.op[i]), int(arrays.a[i]), int(arrays.b[i])
    consts = arrays.consts
    oc = OPCODES[op]
    name = oc.spec.name
    if name in ("array", "array_scalar"):
        return _describe_array_row(tape, arrays, i)
    if name == "input":
        return _describe_input(tape, i, a)
    if name == "const":
        return f"const {_const(consts[a])}"
    if name == "guard":
        return f"guard v{a} is {bool(b)}"
    args = [_const(consts[a]) if oc.kind == CV else f"v{a}"]
    if oc.spec.arity == 2:
        args.append(_const(consts[b]) if oc.kind == VC else f"v{b}")
    args += [_const(consts[b + k]) for k in range(oc.spec.params)]
    return f"{name}({', '.join(args)})"


def _describe_input(tape: Tape, i: int, index: int) -> str:
    """An input row: entry `index` of the input vector (an array: entries from there)."""
    node = tape.inputs[tape.input_slots.index(i)]
    label = getattr(node, "label", "")
    shape = f" {node._v.shape}" if node._v.__class__ is np.ndarray else ""
    if node._tape is tape:
        return f"input #{index}{shape}"  # an argument of a compiled function
    elsewhere = "" if node._tape is None else " (from another tape)"
    return f"input {label or '#' + str(index)}{shape}{elsewhere}"


def _describe_array_row(tape: Tape, arrays, i: int) -> str:
    """An array row: its op (``matmul(v3, v5)``, ``add[vv](v1, 2.0)``) and result size."""
    code_, ax, ay = (t[int(arrays.a[i])] for t in arrays.arr[:3])
    size = int(arrays.arr[5][int(arrays.a[i])])
    code, x, y = int(code_), int(ax), int(ay)
    if code >= len(OPCODES):
        spec = ARRAY_OPS[code - len(OPCODES)]
        if spec.name == "array_input":
            return _describe_input(tape, i, x) + f" [{size}]"
        names = ["v" + str(v) for v in (x, y)[: spec.arity]]
        return f"{spec.name}({', '.join(names)}) [{size}]"
    oc = OPCODES[code]
    args = [_const(arrays.consts[x]) if oc.kind == CV else f"v{x}"]
    if oc.spec.arity == 2:
        args.append(_const(arrays.consts[y]) if oc.kind == VC else f"v{y}")
    return f"{oc.spec.name}({', '.join(args)}) [{size}]"


def wengert_listing(tape: Tape, limit: int | None = 50) -> str:
    """The tape as a Wengert list; with more than `limit` rows, the first and last ones."""
    n = len(tape)
    rows = list(range(n))
    if limit is not None and n > limit:
        rows = rows[: limit // 2] + [-1] + rows[n - limit // 2 :]
    adj = tape.adj
    width = 24 + len(str(n))
    lines = [f"{'':<{width}} {'value':>12}" + ("  adjoint" if adj is not None else "")]
    for i in rows:
        if i < 0:
            lines.append(f"  ... {n - 2 * (len(rows) - 1) // 2} rows ...")
            continue
        text = f"v{i} = {describe_row(tape, i)}"
        value = "(freed)" if tape.released else f"{tape.arrays().vals[i]:.6g}"
        line = f"{text:<{width}} {value:>12}"
        if adj is not None and i < len(adj):
            line += f"  {adj[i]:.6g}"
        lines.append(line)
    return "\n".join(lines)
