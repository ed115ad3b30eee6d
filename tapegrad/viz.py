"""Pictures of a computation: Graphviz DOT text of the rows an output depends on.

``tg.viz.to_dot(y)`` (or ``tape.to_dot()`` for a whole tape) returns DOT text, no dependency
needed: one box per row with its name, value and, after a backward, its gradient, fed by an oval
naming the op, as in micrograd's ``draw_dot`` and the seeds' figures. ``tg.viz.render(y,
"graph.svg")`` renders it with Graphviz (the ``graphviz`` package, or the ``dot`` program).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import numpy as np

from .kernels import ARRAY_CODE, ARRAY_OPS, ARRAY_ROW, OPCODES, OPERAND_MASK
from .listing import describe_row
from .node import Node
from .tape import Tape

_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "neg": "-", "matmul": "@",
            "sum_into": "sum", "amax_into": "max", "amin_into": "min", "prod_into": "prod", "gather": "index"}


def _operands(tape: Tape, i: int) -> list[int]:
    """The rows row i reads."""
    arrays = tape.arrays()
    op, a, b = int(arrays.op[i]), int(arrays.a[i]), int(arrays.b[i])
    if op < ARRAY_ROW:
        oc = OPCODES[op]
        return [r for r, reads in ((a, oc.reads_a), (b, oc.reads_b)) if reads]
    code, ax, ay, ameta, _, asize, imeta = arrays.arr
    c = int(code[a])
    if c == ARRAY_CODE["pack"]:
        start = int(ameta[a])
        return [int(r) for r in imeta[start : start + int(asize[a])]]
    mask = OPERAND_MASK[c]
    return [int(r) for r, bit in ((ax[a], 1), (ay[a], 2)) if mask & bit]


def _op_name(tape: Tape, i: int) -> str:
    """The op's name or symbol, with a constant operand (``* 2.0``)."""
    arrays = tape.arrays()
    op, a, b = int(arrays.op[i]), int(arrays.a[i]), int(arrays.b[i])
    if op >= ARRAY_ROW:
        code, ax, ay = (int(t[a]) for t in arrays.arr[:3])
        if code >= ARRAY_ROW:
            name = ARRAY_OPS[code - ARRAY_ROW - 2].name
            return _SYMBOLS.get(name, name)
        op, a, b = code, ax, ay
    oc = OPCODES[op]
    name = _SYMBOLS.get(oc.spec.name, oc.spec.name)
    if oc.kind == "vc":
        return f"{name} {_number(float(arrays.consts[b]))}"
    if oc.kind == "cv":
        return f"{_number(float(arrays.consts[a]))} {name}"
    return name


def _number(v: float) -> str:
    return f"{v:.4f}" if v == 0 or 1e-4 <= abs(v) < 1e6 else f"{v:.4e}"


def _escape(text: str) -> str:
    for ch in "\\{}|<>\"":
        text = text.replace(ch, "\\" + ch)
    return text


def _rows_of(tape: Tape, out: int | None, max_nodes: int) -> list[int]:
    """The rows `out` depends on (all rows when None), the latest `max_nodes` of them."""
    if out is None:
        rows = list(range(len(tape)))
    else:
        seen, stack = {out}, [out]
        while stack:
            for r in _operands(tape, stack.pop()):
                if r not in seen:
                    seen.add(r)
                    stack.append(r)
        rows = sorted(seen)
    return rows[-max_nodes:]


def _label(tape: Tape, i: int, inputs: dict[int, Node]) -> str:
    """name | data | grad of row i."""
    arrays = tape.arrays()
    node = inputs.get(i)
    name = getattr(node, "label", "") or (describe_row(tape, i) if node is not None else f"v{i}")
    if int(arrays.op[i]) == ARRAY_ROW:
        start, stop = tape.block(i)
        values = None if (tape.released or tape.frozen) else tape.block_value(int(arrays.a[i]))
        data = f"array [{stop - start}]" if values is None else \
            f"data {np.array2string(np.ravel(values), precision=3, threshold=6)}"
        grad = node._grad if node is not None else None
        grad_text = (
            ""
            if grad is None
            else f"grad {np.array2string(np.ravel(np.asarray(grad._v)), precision=3, threshold=6)}"
        )
    else:
        data = "(freed)" if tape.released else f"data {_number(float(arrays.vals[i]))}"
        adj = tape.adj
        grad_text = f"grad {_number(float(adj[i]))}" if adj is not None and i < len(adj) else ""
    return "{ " + " | ".join(_escape(p) for p in (name, data, grad_text) if p) + " }"


def tape_to_dot(tape: Tape, out: int | None = None, max_nodes: int = 500) -> str:
    """DOT text of the tape's rows (those row `out` depends on, if given)."""
    rows = _rows_of(tape, out, max_nodes)
    kept = set(rows)
    inputs = dict(zip(tape.input_slots, tape.inputs))
    lines = ["digraph tape {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for i in rows:
        lines.append(f'  v{i} [shape=record, label="{_label(tape, i, inputs)}"];')
        operands = _operands(tape, i)
        if i in inputs and not operands:
            continue
        lines.append(f'  op{i} [shape=ellipse, label="{_escape(_op_name(tape, i))}"];')
        lines.append(f"  op{i} -> v{i};")
        lines += [f"  v{r} -> op{i};" for r in operands if r in kept]
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(output: Any, max_nodes: int = 500) -> str:
    """DOT text of the computation behind `output` (a tensor or Value): one box per row with its
    name, value and gradient (after a backward), one oval per op; the latest `max_nodes` rows."""
    if not isinstance(output, Node):
        raise TypeError(f"to_dot: expected a tapegrad tensor or Value, got {type(output).__name__}")
    if output._tape is None:
        label = getattr(output, "label", "") or "leaf"
        return f'digraph tape {{\n  rankdir=LR;\n  v0 [shape=record, label="{{ {_escape(label)} | ' \
               f'data {_escape(str(output._v))} }}"];\n}}\n'
    return tape_to_dot(output._tape, output._slot, max_nodes)


def render(output: Any, path: str, max_nodes: int = 500) -> str:
    """Render the graph of `output` to `path` (its extension is the format: svg, png, pdf) with
    Graphviz; returns `path`."""
    dot = output.to_dot(max_nodes=max_nodes) if isinstance(output, Tape) else to_dot(output, max_nodes)
    fmt = os.path.splitext(path)[1].lstrip(".") or "svg"
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(
            "render: Graphviz's `dot` program is not installed (Debian/Ubuntu: apt install graphviz; "
            "macOS: brew install graphviz; conda: conda install graphviz). tg.viz.to_dot(y) gives the "
            "DOT text without it."
        )
    run = subprocess.run(
        [program, f"-T{fmt}", "-o", path], input=dot, text=True, capture_output=True, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"render: dot failed: {run.stderr.strip()}")
    return path
