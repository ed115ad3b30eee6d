"""User-defined ops: ``tg.custom_op``. The user's ``@njit`` rules run inside the Numba sweeps.

A custom op is one array row of code ``custom`` whose side-table entry holds the addresses of
three C-callable kernels that tapegrad compiles around the user's functions (Numba ``cfunc``s,
one set per combination of operand and result ranks), the op's id, and the shapes the kernels
read. The sweeps call them through the address: forward replay, reverse (the vector-Jacobian
product) and tangent (the Jacobian-vector product) never return to Python, and the generated
sweeps stay compiled and cached whatever ops users add.

Several operands travel as one: the rows of their values, concatenated (flattened, in order);
each kernel cuts them apart again by the shapes in the entry.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .array import _leaf, _record, _row, _traced, _value, as_array
from .kernels import ARRAY_CODE
from .node import current_tape
from .shapes import concatenate, reshape
from .tensor import Tensor

ROLES = ("forward", "vjp", "jvp")
_lock = threading.Lock()
_BY_ID: list[CustomOp] = []  # every op registered in this process, by id (recorded tapes name them)
_BY_NAME: dict[str, CustomOp] = {}


def _layout(shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> list[int]:
    """The shapes as the kernels read them: operand count, each operand's rank and extents, the
    result's rank and extents."""
    out = [len(shapes)]
    for shape in (*shapes, out_shape):
        out += [len(shape), *shape]
    return out


def _shape_lines(name: str, rank: int, at: int) -> list[str]:
    """Lines reading a shape s{name} of `rank` extents, and its size n{name}, from m[at:]."""
    dims = [f"m[{at + d}]" for d in range(rank)]
    return [f"    s{name} = ({', '.join(dims)}{',' if rank == 1 else ''})",
            f"    n{name} = {' * '.join(dims) or '1'}"]


_TRY = """\
    ok = False
    try:
{body}
    except Exception:
        pass
    if ok:
{store}
    else:
        o[:] = np.nan"""


def _kernel_source(role: str, ranks: tuple[int, ...], out_rank: int) -> str:
    """Source of one kernel, void(x, y, g, out, meta) over float64 pointers (int64 for meta):
    x holds the operands, flat; y the result; g the result's adjoint (vjp) or the operands'
    tangents, flat (jvp); out gets the result (forward), the result's tangent (jvp), or the
    operands' cotangents added (vjp). A rule that raises, or returns another size, leaves NaN."""
    operands = range(len(ranks))
    length = len(ranks) + sum(ranks) + out_rank + 2
    lines = ["def kernel(x, y, g, out, meta):", f"    m = carray(meta, {length})"]
    at = 1
    for k, rank in enumerate(ranks):  # operand k: n{k} values from o{k}, shape s{k}
        lines += _shape_lines(str(k), rank, at + 1)
        lines.append(f"    o{k} = {f'o{k - 1} + n{k - 1}' if k else '0'}")
        at += 1 + rank
    lines += _shape_lines("z", out_rank, at + 1)
    lines += [f"    total = o{len(ranks) - 1} + n{len(ranks) - 1}", "    xs = carray(x, total)"]

    def view(flat: str, k: int) -> str:
        return f"{flat}[o{k}]" if ranks[k] == 0 else f"{flat}[o{k} : o{k} + n{k}].reshape(s{k})"

    xs = ", ".join(view("xs", k) for k in operands)
    y = "carray(y, 1)[0]" if out_rank == 0 else "carray(y, nz).reshape(sz)"
    if role == "vjp":
        ybar = "carray(g, 1)[0]" if out_rank == 0 else "carray(g, nz).reshape(sz)"
        one = "," if len(ranks) == 1 else ""  # a lone cotangent: a tuple of one
        body = [f"r = vjp({xs}, {y}, {ybar}){one}", f"ok = len(r) == {len(ranks)}"]
        for k in operands:
            body += [f"c{k} = np.ravel(np.asarray(r[{k}]))", f"ok = ok and c{k}.shape[0] == n{k}"]
        store = [f"o[o{k} : o{k} + n{k}] += c{k}" for k in operands]
        lines.append("    o = carray(out, total)")
    else:
        call = f"forward({xs})"
        if role == "jvp":
            lines.append("    gs = carray(g, total)")
            call = f"jvp({xs}, {y}, {', '.join(view('gs', k) for k in operands)})"
        body = [f"r = np.ravel(np.asarray({call}))", "ok = r.shape[0] == nz"]
        store = ["o[:] = r"]
        lines.append("    o = carray(out, nz)")
    indent = lambda block: "\n".join(" " * 8 + line for line in block)
    return "\n".join(lines) + "\n" + _TRY.format(body=indent(body), store=indent(store))


class CustomOp:
    """An op whose rules are the user's ``@njit`` functions (see :func:`custom_op`). Call it on
    tensors, traced values or arrays; it records one row."""

    def __init__(self, name: str, forward: Callable[..., Any], vjp: Callable[..., Any],
                 jvp: Callable[..., Any] | None) -> None:
        self.name = name
        self.forward = forward
        self.rules: dict[str, Callable[..., Any] | None] = {"forward": forward, "vjp": vjp, "jvp": jvp}
        self._kernels: dict[tuple[tuple[int, ...], int], tuple[Any, ...]] = {}
        with _lock:
            self.id = len(_BY_ID)
            _BY_ID.append(self)
            _BY_NAME[name] = self

    def __repr__(self) -> str:
        return f"<custom op {self.name!r}{'' if self.rules['jvp'] else ' (no jvp)'}>"

    def addresses(self, ranks: tuple[int, ...], out_rank: int) -> list[int]:
        """The kernels' addresses for these operand and result ranks (compiled on first use; 0 for
        a rule not given)."""
        key = (ranks, out_rank)
        if key not in self._kernels:
            with _lock:
                if key not in self._kernels:
                    self._kernels[key] = tuple(self._compile(role, ranks, out_rank) for role in ROLES)
        return [0 if k is None else k.address for k in self._kernels[key]]

    def _compile(self, role: str, ranks: tuple[int, ...], out_rank: int) -> Any:
        rule = self.rules[role]
        if rule is None:
            return None
        from numba import carray, cfunc, types

        pointer = types.CPointer(types.float64)
        signature = types.void(pointer, pointer, pointer, pointer, types.CPointer(types.int64))
        namespace = {"carray": carray, "np": np, role: rule}
        exec(_kernel_source(role, ranks, out_rank), namespace)
        try:
            return cfunc(signature)(namespace["kernel"])
        except Exception as err:  # Numba's typing errors: name the op and the ranks
            raise TypeError(
                f"custom op {self.name!r}: its {role} rule does not compile for operands of ranks "
                f"{list(ranks)} and a result of rank {out_rank}: {str(err).splitlines()[0]}"
            ) from None

    def __call__(self, *operands: Any) -> Tensor:
        """Apply the op: its forward rule on the operands' values, recorded as one row."""
        if not operands:
            raise TypeError(f"custom op {self.name!r}: expected at least one operand")
        operands = tuple(as_array(x) for x in operands)
        values = [np.array(_value(x), dtype=np.float64) for x in operands]  # (0-d stays 0-d)
        try:
            value = np.asarray(self.forward(*[v[()] if v.ndim == 0 else v for v in values]))
        except Exception as err:
            shapes = ", ".join(str(v.shape) for v in values)
            raise type(err)(f"custom op {self.name!r}: forward on operands of shapes {shapes}: {err}") \
                from None
        if value.dtype.kind not in "fiub":
            raise TypeError(f"custom op {self.name!r}: forward returned {value.dtype}, not numbers")
        value = value.astype(np.float64)
        traced = [x for x in operands if _traced(x)]
        tape = current_tape(*traced) if traced else None
        if tape is None:
            return _leaf(value)
        joined = operands[0]
        if len(operands) > 1:  # one operand row: their values, flattened and joined
            joined = concatenate([reshape(x, (-1,)) if np.ndim(_value(x)) > 1 else x for x in operands])
        dims = [v.shape for v in values]
        kernels = self.addresses(tuple(len(d) for d in dims), value.ndim)
        meta = np.array([*kernels, self.id, *_layout(dims, value.shape)], dtype=np.int64)
        rg = any(getattr(x, "_rg", False) for x in traced)
        return _record(ARRAY_CODE["custom"], _row(tape, joined), 0, meta, value, tape, rg)


def custom_op(name: str, forward: Callable[..., Any], vjp: Callable[..., Any],
              jvp: Callable[..., Any] | None = None) -> CustomOp:
    """Register an op whose rules are your own ``numba.njit`` functions:

    * ``forward(*xs) -> y``: the op (xs: floats or float arrays, as given; y: a float or array);
    * ``vjp(*xs, y, ybar) -> xbar``: the vector-Jacobian product, one cotangent per operand (a
      tuple of them for several operands), each of its operand's shape;
    * ``jvp(*xs, y, *xdots) -> ydot`` (optional): the Jacobian-vector product, for tangent sweeps
      (``cf.jvp``, forward-mode Jacobians); without it those refuse tapes with this op.

    The rules run inside the Numba sweeps, eager backward and compiled replay alike. A rule that
    raises, or returns the wrong size, leaves NaN in what it computes (``tg.detect_anomaly``
    finds it). Registering a name again replaces the op for new recordings.
    """
    from numba.core.registry import CPUDispatcher

    for role, rule in (("forward", forward), ("vjp", vjp), ("jvp", jvp)):
        if rule is not None and not isinstance(rule, CPUDispatcher):
            raise TypeError(
                f"custom op {name!r}: {role} must be a numba.njit function (it runs inside the "
                f"compiled sweeps), got {type(rule).__name__}"
            )
    return CustomOp(name, forward, vjp, jvp)


def op_by_name(name: str) -> CustomOp | None:
    """The op registered last under this name, if any."""
    return _BY_NAME.get(name)


__all__ = ["CustomOp", "custom_op", "op_by_name"]


def ops_in(arrays: tuple) -> list[CustomOp]:
    """The custom ops that rows of an array table (kernels.array_table) apply."""
    code, ameta, imeta = arrays[0], arrays[3], arrays[6]
    entries = ameta[code == ARRAY_CODE["custom"]]
    return [_BY_ID[int(i)] for i in np.unique(imeta[entries + 3])] if len(entries) else []


def has_rule(arrays: tuple, rule: str) -> bool:
    """Whether every custom op of an array table has `rule` ("jvp")."""
    return all(op.rules[rule] is not None for op in ops_in(arrays))


def require(arrays: tuple, rule: str, what: str) -> None:
    """Refuse `what` through a custom op without `rule`: "jvp", or "second order" (a custom op
    has no second-order rule)."""
    for op in ops_in(arrays):
        if rule == "second order":
            raise ValueError(f"{what}: custom op {op.name!r} has no second-order rule (custom ops give "
                             "first derivatives: grad, vjp, jacobian, and jvp with a jvp rule)")
        if op.rules[rule] is None:
            raise ValueError(f"{what}: custom op {op.name!r} has no jvp rule (give jvp= to tg.custom_op; "
                             "reverse mode works without: grad, vjp, jacobian)")


def relink(arrays: tuple, names: dict[str, str], path: str) -> None:
    """Point the custom rows of a loaded array table at this process's kernels: the ops saved
    under ids `names` (id -> name), registered here by name."""
    code, ameta, imeta = arrays[0], arrays[3], arrays[6]
    for m in ameta[code == ARRAY_CODE["custom"]].tolist():
        name = names.get(str(int(imeta[m + 3])))
        op = None if name is None else op_by_name(name)
        if op is None:
            raise ValueError(f"tg.load: {path} uses custom op {name!r}: register it with tg.custom_op "
                             "before loading")
        layout = imeta[m + 4 :].tolist()
        ranks, p = [], 1
        for _ in range(layout[0]):
            ranks.append(layout[p])
            p += 1 + layout[p]
        imeta[m : m + 4] = [*op.addresses(tuple(ranks), layout[p]), op.id]


def layout_sizes(entry: Sequence[int]) -> tuple[int, int] | None:
    """(operands' total size, result size) of a custom entry's layout (entry: from its address
    slots on), or None when it is malformed."""
    if len(entry) < 5 or entry[4] < 1:
        return None
    sizes, p = [], 5
    for _ in range(entry[4] + 1):
        if p >= len(entry) or entry[p] < 0 or len(entry) < p + 1 + entry[p]:
            return None
        dims = entry[p + 1 : p + 1 + entry[p]]
        if any(d < 0 for d in dims):
            return None
        sizes.append(math.prod(dims))
        p += 1 + entry[p]
    return sum(sizes[:-1]), sizes[-1]
