"""The Wengert listing of a tape: one line per row, ``v3 = mul(v1, v2)``, with values and adjoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .kernels import OPCODES
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
    if name == "input":
        node = tape.inputs[a]
        label = getattr(node, "label", "")
        if node._tape is tape:
            return f"input #{a}"  # an argument of a compiled function
        return f"input {label or '#' + str(a)}" + ("" if node._tape is None else " (from another tape)")
    if name == "const":
        return f"const {_const(consts[a])}"
    if name == "guard":
        return f"guard v{a} is {bool(b)}"
    args = [_const(consts[a]) if oc.kind == CV else f"v{a}"]
    if oc.spec.arity == 2:
        args.append(_const(consts[b]) if oc.kind == VC else f"v{b}")
    args += [_const(consts[b + k]) for k in range(oc.spec.params)]
    return f"{name}({', '.join(args)})"


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
            lines.append(f"  ... {n - 2 * (limit // 2)} rows ...")
            continue
        text = f"v{i} = {describe_row(tape, i)}"
        value = "(freed)" if tape.released else f"{tape.arrays().vals[i]:.6g}"
        line = f"{text:<{width}} {value:>12}"
        if adj is not None and i < len(adj):
            line += f"  {adj[i]:.6g}"
        lines.append(line)
    return "\n".join(lines)
