"""Generate the Numba sweeps from the op table.

Every sweep is one loop over the tape's rows with one branch per opcode; the branches are written
here once per *kind* of rule (forward value, reverse partials, tangent), filled in from each op's
formulas. The result is the source of one module, compiled by :mod:`kernels.loader`.

Row layout: ``op[i]`` (uint8 opcode), ``a[i]``, ``b[i]`` (uint32 operands: value slots, constant
pool indices or, for ``input``, the input index). A scalar row writes one slot, the slot equal to
its row index. Loop counters and operands are unsigned, so Numba emits no negative-index
wraparound on the hot path.
"""

from __future__ import annotations

import functools
import inspect
import re

from . import array_math, scalar_math
from .table import (
    ARRAY_CODE,
    ARRAY_OPS,
    ARRAY_ROW,
    CODE,
    CV,
    OPCODES,
    REACHED,
    RUN,
    RUN_END,
    STALE,
    VC,
    VV,
    ArrayOpSpec,
    Opcode,
)

MATH_NAMES = (
    "exp log log1p expm1 sqrt sin cos tan asin acos atan sinh cosh tanh erf fabs atan2 pow isnan"
)


def _uses(expr: str, name: str) -> bool:
    return re.search(rf"\b{name}\b", expr) is not None


def _sources_at(x: str, y: str, z: str, cx: str = "", cy: str = ""):
    """Where a scalar formula's names live when operand x is at index x of vals (or of consts,
    at cx if given), y likewise, and the row's own value at z: a function of the opcode."""

    def sources(oc: Opcode) -> dict[str, str]:
        py = cy or y
        return {
            "x": f"consts[{cx or x}]" if oc.kind == CV else f"vals[{x}]",
            "y": f"consts[{py}]" if oc.kind == VC else f"vals[{y}]",
            "z": f"vals[{z}]",
            "p0": f"consts[{py}]",
            "p1": f"consts[{py} + 1]",
        }

    return sources


_scalar_sources = _sources_at("a[i]", "b[i]", "i")  # a row of the sweeps


def _loads(oc: Opcode, exprs: tuple[str, ...], indent: str, sources=_scalar_sources) -> list[str]:
    """Lines that load the operands the expressions use, for opcode ``oc``."""
    return [
        f"{indent}{name} = {where}"
        for name, where in sources(oc).items()
        if any(_uses(e, name) for e in exprs)
    ]


def _diff_terms(oc: Opcode) -> list[tuple[str, str, bool]]:
    """(operand, partial, masked) of the operands this opcode differentiates."""
    spec = oc.spec
    terms = []
    if oc.kind in ("v", VV, VC):
        terms.append(("a", spec.dx, "x" in spec.masked))
    if oc.kind in (VV, CV):
        terms.append(("b", spec.dy, "y" in spec.masked))
    return terms


def _accumulate(target: str, partial: str, masked: bool, weight: str) -> list[str]:
    """Lines adding ``weight * partial`` to ``target``; a masked partial of 0 adds nothing."""
    if not masked:
        return [f"{target} += {weight} * ({partial})"]
    return [f"p = {partial}", "if p != 0.0:", f"    {target} += {weight} * p"]


_IF = re.compile(r"^( *)if (.+):$")
_ADD = re.compile(r"^( *)([\w\[\]]+) \+= (.+)$")


def _branch_free(lines: list[str], live: str | None = None) -> list[str]:
    """A rule's body (loads, assignments, adds, ifs guarding them) without branches, so that a
    loop of it vectorizes: each add adds 0.0 where its guards (and `live`, the row's own guard)
    fail, and every other line runs unconditionally (they only compute). The same bits: adding
    +0.0 leaves a sum as it was (sums start at +0.0 and so are never -0.0)."""
    out: list[str] = []
    guards: list[tuple[int, str]] = []  # (indent, condition) of the ifs around the line
    for ln in lines:
        indent = len(ln) - len(ln.lstrip())
        guards = [(i, c) for i, c in guards if i < indent]
        cond, add = _IF.match(ln), _ADD.match(ln)
        if cond:
            guards.append((indent, cond.group(2)))
        elif add:
            conditions = [c for _, c in guards] + ([live] if live else [])
            select = f" if {' and '.join(conditions)} else 0.0" if conditions else ""
            out.append(f"{add.group(2)} += {add.group(3)}{select}")
        else:
            out.append(ln.strip())
    return out


def _branches(body_for, indent: str = "        ") -> str:
    out: list[str] = []
    first = True
    for oc in OPCODES:
        body = body_for(oc)
        if body is None:
            continue
        kw = "if" if first else "elif"
        first = False
        marker = ARRAY_LINE if all(line.endswith(ARRAY_LINE) for line in body) else ""
        out.append(f"{indent}{kw} c == {oc.code}:  # {oc.spec.name} {oc.kind}{marker}")
        out.extend(f"{indent}    {line}" for line in body)
    return "\n".join(out) if out else f"{indent}pass"


_SCALAR_TARGETS = {"xd": "dot[a[i]]", "yd": "dot[b[i]]", "zd": "dot[i]", "a": "adj[a[i]]", "b": "adj[b[i]]",
                   "ad": "adjd[a[i]]", "bd": "adjd[b[i]]", "g": "g", "gd": "gd"}
# an elementwise array row at element k: operand elements ix, iy, their tangent and adjoint blocks
_ARRAY_TARGETS = {"xd": "xd[ix]", "yd": "yd[iy]", "zd": "zd[k]", "a": "gx[ix]", "b": "gy[iy]",
                  "ad": "gxd[ix]", "bd": "gyd[iy]", "g": "gk", "gd": "gdk"}


def _forward_body(oc: Opcode, sources=_scalar_sources):
    name = oc.spec.name
    if name in ("array", "array_scalar"):
        return ["done = array_forward(i, stop, op, a, vals, consts, inputs, arr, vaddr, done)" + ARRAY_LINE]
    if name == "input":
        return ["vals[i] = inputs[a[i]]"]
    if name == "const":
        return ["vals[i] = consts[a[i]]"]
    if name == "guard":
        return ["if (vals[a[i]] != 0.0) != (b[i] != 0):", "    return np.int64(i)", "vals[i] = b[i]"]
    fwd = oc.spec.fwd
    return [ln.strip() for ln in _loads(oc, (fwd,), "", sources)] + [f"{sources(oc)['z']} = {fwd}"]


def _reverse_body(oc: Opcode, at=_SCALAR_TARGETS, sources=_scalar_sources):
    if oc.spec.name == "array_scalar":
        return ["array_reverse(i, op, a, vals, adj, consts, arr, vaddr, aadj, False, live)" + ARRAY_LINE]
    if not oc.spec.differentiable:
        return None
    terms = _diff_terms(oc)
    lines = [ln.strip() for ln in _loads(oc, tuple(t[1] for t in terms), "", sources)]
    for op, d, masked in terms:
        lines += _accumulate(at[op], d, masked, at["g"])
    return lines


def _tangent_body(oc: Opcode, at=_SCALAR_TARGETS, sources=_scalar_sources):
    if oc.spec.name in ("array", "array_scalar"):
        return ["array_tangent(i, op, a, vals, dot, consts, seeds, arr, vaddr, adot, plan)" + ARRAY_LINE]
    if oc.spec.name == "input":
        return ["dot[i] = seeds[a[i]]"]
    if not oc.spec.differentiable:
        return [f"{at['zd']} = 0.0"] if oc.kind or at is _SCALAR_TARGETS else None
    terms = _diff_terms(oc)
    lines = [ln.strip() for ln in _loads(oc, tuple(t[1] for t in terms), "", sources)]
    lines.append("t = 0.0")
    for op, d, masked in terms:
        # a zero tangent contributes nothing, even through an infinite partial
        lines += [f"d = {at['xd' if op == 'a' else 'yd']}", "if d != 0.0:"]
        lines += ["    " + ln for ln in _accumulate("t", d, masked, "d")]
    lines.append(f"{at['zd']} = t")
    return lines


def _second_order_body(oc: Opcode, at=_SCALAR_TARGETS, sources=_scalar_sources):
    """Forward-over-reverse: the reverse rule and its derivative along the tangents ``dot``.

    adj[k] += g * d_k;  adjd[k] += gd * d_k + g * (d_kx * xd + d_ky * yd), where xd, yd are the
    operands' tangents (0 for constants); zero factors contribute nothing."""
    if oc.spec.name == "array_scalar":
        args = "i, op, a, vals, dot, adj, adjd, consts, arr, vaddr, aadj, aadjd, adot, False, plan, live"
        return [f"array_second_order({args})" + ARRAY_LINE]
    if not oc.spec.differentiable:
        return None
    spec = oc.spec
    second = {"a": (spec.dxx, spec.dxy), "b": (spec.dxy, spec.dyy)}
    terms = _diff_terms(oc)
    exprs = tuple(e for op, d, _ in terms for e in (d, *second[op]))
    g, gd = at["g"], at["gd"]
    lines = [ln.strip() for ln in _loads(oc, exprs, "", sources)]
    lines.append(f"xd_ = {at['xd']}" if oc.kind in ("v", VV, VC) else "xd_ = 0.0")
    lines.append(f"yd_ = {at['yd']}" if oc.kind in (VV, CV) else "yd_ = 0.0")
    for op, d, masked in terms:
        lines += [f"p = {d}", "t = 0.0"]
        lines += [f"if {gd} != 0.0" + (" and p != 0.0" if masked else "") + ":", f"    t += {gd} * p"]
        for tangent, dd, row in zip(("xd_", "yd_"), second[op], (oc.reads_a, oc.reads_b)):
            if dd != "0.0" and row:  # (a constant operand's tangent is 0)
                lines += [f"if {tangent} != 0.0:", f"    t += {g} * ({dd}) * {tangent}"]
        lines += [f"{at[op + 'd']} += t"]
        lines += _accumulate(at[op], "p", masked, g)
    return lines


def _array_sources(oc: Opcode) -> dict[str, str]:
    """Where an elementwise array row's formula names live, at element k (operand elements ix, iy;
    a constant operand at consts[cx] or consts[cy])."""
    return {
        "x": "consts[cx]" if oc.kind == CV else "xv[ix]",
        "y": "consts[cy]" if oc.kind == VC else "yv[iy]",
        "z": "zv[k]",
        "p0": "consts[cy]",
        "p1": "consts[cy + 1]",
    }


_INNER_LOOP = ["for t in range(inner):", "    k = k0 + t", "    ix = bx + t * sxl", "    iy = by + t * syl"]
# the reverse kernel's loop over one chunk of a run: it adds to the operands' adjoints through
# gxr[jx], gyr[jy] (an operand broadcast along the run: a chunk-long spread, summed afterwards)
_REVERSE_LOOP = ["for t in range(run):", "    k = k0 + t", "    ix = bx + t * sxl", "    iy = by + t * syl",
                 "    jx = gbx + t * gsx", "    jy = gby + t * gsy"]
_CONSTANT_LOAD = re.compile(r"^\w+ = consts\[c[xy]( \+ 1)?\]$")


def _loop(oc: Opcode, header: list[str], body: list[str]) -> list[str]:
    """The loop `header` over `body`, with the body's loads of constants before it. Only a vv row
    broadcasts: in any other the operands walk with the result, stride 1, which the loop is
    written with (a stride known only at run time keeps a loop from vectorizing)."""
    if oc.kind != VV:
        header = [re.sub(r"t \* \w+$", "t", ln) for ln in header]
    hoisted = [ln for ln in body if _CONSTANT_LOAD.match(ln)]
    return hoisted + header + ["    " + ln for ln in body if ln not in hoisted]


def _elementwise_forward_body(oc: Opcode):
    """The loop over one run of the innermost dimension (one dispatch per run, not per element)."""
    if not oc.kind:
        return None
    fwd = oc.spec.fwd
    body = [ln.strip() for ln in _loads(oc, (fwd,), "", _array_sources)] + [f"zv[k] = {fwd}"]
    return _loop(oc, _INNER_LOOP, body)


def _elementwise_reverse_body(oc: Opcode):
    if not oc.kind or not oc.spec.differentiable:
        return None
    rule = _reverse_body(oc, {**_ARRAY_TARGETS, "a": "gxr[jx]", "b": "gyr[jy]"}, _array_sources)
    body = ["gk = g[k]", "g[k] = 0.0 if consume else gk"] + _branch_free(rule, "gk != 0.0")
    return _loop(oc, _REVERSE_LOOP, body)


def _elementwise_tangent_body(oc: Opcode):
    if not oc.kind:
        return None
    return _loop(oc, _INNER_LOOP, _tangent_body(oc, _ARRAY_TARGETS, _array_sources))


def _elementwise_second_order_body(oc: Opcode):
    if not oc.kind or not oc.spec.differentiable:
        return None
    body = ["gk = g[k]", "gdk = gd[k]", "g[k] = 0.0 if consume else gk", "gd[k] = 0.0 if consume else gdk",
            "if gk == 0.0 and gdk == 0.0:", "    continue"]
    body += _second_order_body(oc, _ARRAY_TARGETS, _array_sources)
    return _loop(oc, _INNER_LOOP, body)


def _versioned(body_for, constant: str = "consts[cy]"):
    """`body_for` with, for an opcode of a constant y (at `constant`) whose op lists ``literal_y``
    values, a copy of the loop per value with y that literal, and the general loop for any other y."""

    def body(oc: Opcode):
        lines = body_for(oc)
        if lines is None or oc.kind != VC or not oc.spec.literal_y:
            return lines
        out = []
        for k, value in enumerate(oc.spec.literal_y):
            out.append(f"{'elif' if k else 'if'} {constant} == {value!r}:")
            out += ["    " + ln.replace(constant, repr(value)) for ln in lines]
        return out + ["else:"] + ["    " + ln for ln in lines]

    return body


_ELEMENTWISE = """@_kernel
def elementwise_{name}({params}):
    \"\"\"{doc}\"\"\"
    n = {block}.shape[0]
    nd, inner, sxl, syl = elementwise_shape(c, n, imeta, m)
    for o in range(np.uint64(n) // inner):
        bx, by = broadcast_base(o, imeta, m, nd)
        k0 = o * inner
{cases}
"""
# The reverse kernel walks each run in chunks. An operand broadcast along the run (stride 0)
# collects the chunk's adjoints in a spread, one element each, then adds their sum: a chain of
# adds to one memory location would cost a store-to-load round trip per element. An operand row
# that needs no adjoint (array data: dx or dy false) writes to the spread too, which is then
# never read.
_ELEMENTWISE_REVERSE = """@_kernel
def elementwise_{name}({params}):
    \"\"\"{doc}\"\"\"
    n = {block}.shape[0]
    nd, inner, sxl, syl = elementwise_shape(c, n, imeta, m)
    spread_x = np.zeros(CHUNK if (sxl == 0 or not dx) and (OPERANDS[c] & 1) != 0 else 0)
    spread_y = np.zeros(CHUNK if (syl == 0 or not dy) and (OPERANDS[c] & 2) != 0 else 0)
    zero, one = np.uint64(0), np.uint64(1)
    direct_x, direct_y = sxl != 0 and dx, syl != 0 and dy  # else through the spread
    gxr, gsx = (gx, sxl) if direct_x else (spread_x, one)  # (chosen once: an array picked per
    gyr, gsy = (gy, syl) if direct_y else (spread_y, one)  # run costs two atomic refcounts)
    for o in range(np.uint64(n) // inner):
        bx0, by0 = broadcast_base(o, imeta, m, nd)
        for c0 in range(zero, inner, np.uint64(CHUNK)):
            run = min(np.uint64(CHUNK), inner - c0)
            k0 = o * inner + c0
            bx, by = bx0 + c0 * sxl, by0 + c0 * syl
            gbx, gby = bx if direct_x else zero, by if direct_y else zero
{cases}
            if sxl == 0 and dx:
                gx[bx] += run_sum(spread_x, 0, np.int64(run))
                spread_x[:run] = 0.0
            if syl == 0 and dy:
                gy[by] += run_sum(spread_y, 0, np.int64(run))
                spread_y[:run] = 0.0
"""
# name, parameters, docstring, the block as long as the row, the generator of its branches
_ELEMENTWISE_KERNELS = (
    ("forward", "c, xv, yv, zv, consts, cx, cy, imeta, m",
     "zv[k] = op c of the operands' elements (blocks xv, yv; constants consts[cx], consts[cy]).",
     "zv", _elementwise_forward_body),
    ("reverse", "c, g, xv, yv, zv, gx, gy, dx, dy, consts, cx, cy, imeta, m, consume",
     "Push the adjoints g of elementwise row code c to the adjoint blocks gx, gy of its operand\n"
     "    rows that need them (dx, dy; a broadcast operand's elements sum the adjoints of every\n"
     "    element they reached); with `consume`, zero each element of g as it is read.",
     "g", _elementwise_reverse_body),
    ("tangent", "c, xv, yv, zv, xd, yd, zd, consts, cx, cy, imeta, m",
     "zd[k] = the tangent of elementwise row code c from its operands' tangents xd, yd.",
     "zd", _elementwise_tangent_body),
    ("second_order", "c, g, gd, xv, yv, zv, xd, yd, gx, gy, gxd, gyd, consts, cx, cy, imeta, m, consume",
     "The reverse rule of elementwise row code c on adjoints g and on their tangents gd; with\n"
     "    `consume`, zero each element of g and gd as it is read.",
     "g", _elementwise_second_order_body),
)


_TRIG = re.compile(r"\b(sin|cos)\(")


def _angles_versioned(body_for, length: str):
    """`body_for` with, for an op whose formulas call sin or cos, a copy of the loop calling
    array_math's vsin and vcos (which vectorize) where the `length` elements of x from bx are
    within their range, and the loop calling libm's for any other."""

    def body(oc: Opcode):
        lines = body_for(oc)
        if lines is None or not any(_TRIG.search(ln) for ln in lines):
            return lines
        fast = ["    " + _TRIG.sub(r"v\1(", ln) for ln in lines]
        return [f"if small_angles(xv, bx, {length}):", *fast, "else:", *("    " + ln for ln in lines)]

    return body


def _elementwise_kernels() -> str:
    """The four elementwise array kernels: one loop over the innermost runs of a row, one
    branch per opcode inside. Their formulas call array_math.vexp for exp, and vsin, vcos for
    sin, cos (where the arguments are in their range), which vectorize."""
    kernels = []
    for name, params, doc, block, body in _ELEMENTWISE_KERNELS:
        length = "run" if name == "reverse" else "inner"
        cases = _branches(_angles_versioned(_versioned(body), length), " " * (12 if name == "reverse" else 8))
        kernels.append((_ELEMENTWISE_REVERSE if name == "reverse" else _ELEMENTWISE).format(
            name=name, params=params, doc=doc, block=block, cases=re.sub(r"\bexp\(", "vexp(", cases)
        ))
    return "\n\n".join(kernels)


# A run: rows s .. s + r - 1 of one scalar opcode (kernels.runs). The replay sweeps, given the
# run-marked opcodes, compute it in one loop instead of r dispatches. A unit run (its row operands
# step by 1 and come before s, its constants stay) has a loop that vectorizes; any other run
# reads each row's operands from a and b, in the sweeps' own order.
_run_sources = _sources_at("ix", "iy", "k")  # a run's row k, its operands at ix, iy
_unit_run_sources = _sources_at("ix", "iy", "k", "x0", "y0")  # ... a unit run's constants read once


_UNIT_CONSTANT_LOAD = re.compile(r"^\w+ = consts\[[xy]0( \+ 1)?\]$")
_RUN_TARGETS = {"xd": "dot[ix]", "yd": "dot[iy]", "zd": "dot[k]", "a": "adj[ix]", "b": "adj[iy]",
                "ad": "adjd[ix]", "bd": "adjd[iy]", "g": "g", "gd": "gd"}
# in reverse, a unit run is taken first row first (a vectorized loop) only where no two of its rows
# push to one adjoint: their order would change the sum's rounding
_DISJOINT = " and (x0 == y0 or x0 + r <= y0 or y0 + r <= x0)"


_ROW_LOAD = re.compile(r"^(\s*)(\w+) = vals\[(i[xy])\]$")
_ADJOINT_ADD = re.compile(r"^(\s*)adj\[(i[xy])\] \+= (.+)$")


def _carried(lines: list[str], backward: bool) -> tuple[list[str], list[str], list[str]]:
    """A run's loop body (its rows' operands read from a and b) that keeps the row before's value
    (forward: in zp) or the adjoint pushed to it (reverse: in gc when carried) in a register, so
    that an accumulating chain (each row reading the one before: ``s = s + t[i]``) waits on
    arithmetic, not on a store and a load of the same slot. In reverse the push to the row before
    is stored when that row is reached (a second push to it in the same row adds to gc), and after
    the loop for the run's first row's operand. The same operations, the same bits. Returns the
    lines before the loop, the body and the lines after it."""
    out = []
    for ln in lines:
        load, add = _ROW_LOAD.match(ln), _ADJOINT_ADD.match(ln)
        if ln == "g = adj[k]":
            out += ["g = gc if carried else adj[k]", "if carried:", "    adj[k] = gc", "carried = False"]
        elif ln.startswith("vals[k] = "):
            out += ["zp = " + ln[len("vals[k] = "):], "vals[k] = zp"]
        elif load and not backward:
            pad, name, index = load.groups()
            out.append(f"{pad}{name} = zp if {index} + one == k else vals[{index}]")
        elif add:
            pad, index, expr = add.groups()
            out += [f"{pad}before = {index} + one == k",
                    f"{pad}w = (gc if carried and before else adj[{index}]) + {expr}",
                    f"{pad}if before:", f"{pad}    gc, carried = w, True",
                    f"{pad}else:", f"{pad}    adj[{index}] = w"]
        else:
            out.append(ln)
    if backward:
        return ["gc, carried = 0.0, False"], out, ["if carried:", "    adj[s - one] = gc"]
    return ["zp = vals[s - one]"], out, []


# math functions no loop vectorizes (libm calls); a helper of scalar_math counts as what it calls
_LIBM = set("exp log log1p expm1 sin cos tan asin acos atan sinh cosh tanh erf atan2 pow".split())


def _calls(expr: str, opaque: frozenset[str] = frozenset()) -> set[str]:
    """The functions an expression calls, and those its scalar_math helpers but `opaque` call."""
    names = set(re.findall(r"\b(\w+)\(", expr))
    for name in names & set(dir(scalar_math)) - opaque:
        names |= _helper_calls(name, opaque)
    return names


@functools.cache
def _helper_calls(name: str, opaque: frozenset[str]) -> frozenset[str]:
    """_calls of the body of scalar_math's helper `name` (not its def line)."""
    return frozenset(_calls(inspect.getsource(getattr(scalar_math, name)).split("\n", 1)[1], opaque))


def _vectorizes(oc: Opcode, lines: list[str]) -> bool:
    """Whether a loop of these lines of opcode oc can vectorize (calls no libm function): else a
    unit run's loop would cost compile time for nothing, and the run takes the loop reading a and
    b. A constant exponent of pow is taken as one of torch's shortcuts (see _versioned)."""
    return not _calls("\n".join(lines), frozenset({"power"} if oc.kind == VC else ())) & _LIBM


def _run_case(oc: Opcode, backward: bool, skip: list[str], body_for, unit: tuple | None,
              carry: bool) -> list[str] | None:
    """A run kernel's branch for opcode oc: a loop over the run's rows (last row first when
    `backward`; with `carry`, see _carried) and, unless `unit` is None, a vectorizing loop for a
    unit run: its loads, then the body branch-free (_branch_free, with `unit`'s guard)."""
    if oc.kind == "":
        return None
    body = body_for(oc, _run_sources)
    if body is None:
        return None
    order = ["for v in range(r):", "    u = r - one - v"] if backward else ["for u in range(r):"]
    body = ["k = s + u", "ix = a[k]", "iy = b[k]"] + skip + body
    prelude, body, after = _carried(body, backward) if carry else ([], body, [])
    rows = prelude + order + ["    " + ln for ln in body] + after
    if unit is None or not _vectorizes(oc, body):
        return rows
    unit = unit[0] + _branch_free(body_for(oc, _unit_run_sources), unit[1])
    hoisted = [ln for ln in unit if _UNIT_CONSTANT_LOAD.match(ln)]
    loop = ["for u in range(r):", "    k = s + u", "    ix = x0 + u", "    iy = y0 + u"]
    loop = _versioned(lambda oc: hoisted + loop + ["    " + ln for ln in unit if ln not in hoisted],
                      "consts[y0]")(oc)
    condition = "unit" + (_DISJOINT if backward and oc.kind == VV else "")
    return [f"if {condition}:"] + ["    " + ln for ln in loop] + ["else:"] + ["    " + ln for ln in rows]


# name, parameters, docstring, the adjoints a consuming sweep zeroes, backward, lines skipping a
# row with nothing to push, body, the unit loop's (loads, guard of a live row) or None, whether a
# chain is carried in a register
_RUN_KERNELS: tuple[tuple, ...] = (
    ("forward", "op, a, b, vals, consts", "Compute the rows of a run.", (), False, [], _forward_body,
     ([], None), True),
    ("reverse", "op, a, b, vals, consts, adj, consume", "Push the adjoints of a run's rows, last row first.",
     ("adj",), True, ["g = adj[k]", "if g == 0.0:", "    continue"],
     lambda oc, src: _reverse_body(oc, _RUN_TARGETS, src), (["g = adj[k]"], "g != 0.0"), True),
    ("tangent", "op, a, b, vals, consts, dot", "The tangents of a run's rows.", (), False, [],
     lambda oc, src: _tangent_body(oc, _RUN_TARGETS, src), ([], None), False),
    ("second_order", "op, a, b, vals, consts, dot, adj, adjd, consume",
     "Forward-over-reverse on a run's rows, last row first.", ("adj", "adjd"), True,
     ["g = adj[k]", "gd = adjd[k]", "if g == 0.0 and gd == 0.0:", "    continue"],
     lambda oc, src: _second_order_body(oc, _RUN_TARGETS, src),
     (["g = adj[k]", "gd = adjd[k]"], "(g != 0.0 or gd != 0.0)"), False),
)
_RUN_KERNEL = """@_kernel
def run_{name}({params}, i):
    \"\"\"{doc}
    Row i is the run's first row (RUN) in a forward sweep, its last (RUN_END) in a reverse one;
    returns the run's length.\"\"\"
    one = np.uint64(1)
    s = i if op[i] == RUN else i + one - run_length(op, i - np.uint64(4))
    c, r, unit = op[s + one], run_length(op, s + np.uint64(2)), op[s + np.uint64(6)] != 0
    x0, y0 = np.uint64(a[s]), np.uint64(b[s])
{cases}
{cleared}
    return r
"""


def _run_kernels() -> str:
    """The four run kernels: one branch per opcode, each a loop over the run's rows."""
    out = []
    for name, params, doc, cleared, *rule in _RUN_KERNELS:
        cases = _branches(lambda oc, rule=tuple(rule): _run_case(oc, *rule), "    ")
        # a consuming sweep zeroes the run's adjoints once read (a run has no input rows)
        zeroed = "".join(f"\n        {store}[s : s + r] = 0.0" for store in cleared)
        cleared = f"    if consume:{zeroed}" if cleared else ""
        out.append(_RUN_KERNEL.format(name=name, params=params, doc=doc, cases=cases, cleared=cleared))
    return "\n\n".join(out)


# The array ops that are not elementwise: (forward, reverse, tangent, second-order) calls of their
# kernels in kernels.array_math, on the row's blocks: xv, yv, zv (values), g, gx, gy (adjoints),
# xd, yd, zd (tangents), gd, gxd, gyd (tangents of the adjoints).
_NEEDS = "needs_adjoint(ax[j], op, a, code), needs_adjoint(ay[j], op, a, code)"
# a product's cross terms (g @ yd.T, xd.T @ g) need the other operand's tangent: array data has none
_BOTH = "needs_adjoint(ax[j], op, a, code) and needs_adjoint(ay[j], op, a, code)"
_ARRAY_KERNELS = {
    "array_input": ("copy_input(zv, inputs, ax[j], vaddr[j])", None, "zd[:] = seeds[ax[j] : ax[j] + n]",
                    None),
    # its values are written once per workspace (fill_constants), not per replay
    "array_const": (None, None, "zd[:] = 0.0", None),
    "pack": (
        "pack_forward(vals, zv, imeta, m)",
        "pack_reverse(g, adj, imeta, m)",
        "pack_forward(dot, zd, imeta, m)",
        "pack_reverse(g, adj, imeta, m)\n        pack_reverse(gd, adjd, imeta, m)",
    ),
    "matmul": (
        "matmul_forward(xv, yv, zv, imeta, m)",
        f"matmul_reverse(g, xv, yv, gx, gy, {_NEEDS}, imeta, m)",
        f"matmul_tangent(xv, yv, xd, yd, zd, {_NEEDS}, imeta, m)",
        f"matmul_reverse(g, xv, yv, gx, gy, {_NEEDS}, imeta, m)\n"
        f"        matmul_reverse(gd, xv, yv, gxd, gyd, {_NEEDS}, imeta, m)\n"
        f"        matmul_reverse(g, xd, yd, gxd, gyd, {_BOTH}, {_BOTH}, imeta, m)",
    ),
    "gather": (
        "gather_forward(xv, zv, imeta, m)",
        "gather_reverse(g, gx, imeta, m)",
        "gather_forward(xd, zd, imeta, m)",
        "gather_reverse(g, gx, imeta, m)\n        gather_reverse(gd, gxd, imeta, m)",
    ),
    "sum_into": (
        "sum_into_forward(xv, zv, imeta, m)",
        "sum_into_reverse(g, gx, imeta, m)",
        "sum_into_forward(xd, zd, imeta, m)",
        "sum_into_reverse(g, gx, imeta, m)\n        sum_into_reverse(gd, gxd, imeta, m)",
    ),
    "amax_into": (
        "extreme_into_forward(xv, zv, imeta, m, 1.0)",
        "extreme_into_reverse(g, xv, zv, gx, imeta, m)",
        "extreme_into_tangent(xv, zv, xd, zd, imeta, m)",
        "extreme_into_reverse(g, xv, zv, gx, imeta, m)\n"
        "        extreme_into_reverse(gd, xv, zv, gxd, imeta, m)",
    ),
    "amin_into": (
        "extreme_into_forward(xv, zv, imeta, m, -1.0)",
        "extreme_into_reverse(g, xv, zv, gx, imeta, m)",
        "extreme_into_tangent(xv, zv, xd, zd, imeta, m)",
        "extreme_into_reverse(g, xv, zv, gx, imeta, m)\n"
        "        extreme_into_reverse(gd, xv, zv, gxd, imeta, m)",
    ),
    "prod_into": (
        "prod_into_forward(xv, zv, imeta, m)",
        "prod_into_reverse(g, xv, gx, imeta, m)",
        "prod_into_tangent(xv, xd, zd, imeta, m)",
        "prod_into_second_order(g, gd, xv, xd, gx, gxd, imeta, m)",
    ),
    "log_softmax": (
        "log_softmax_forward(xv, zv, imeta, m)",
        "log_softmax_reverse(g, zv, gx, imeta, m)",
        "log_softmax_tangent(zv, xd, zd, imeta, m)",
        "log_softmax_second_order(g, gd, zv, xd, gx, gxd, imeta, m)",
    ),
    "logsumexp_into": (
        "logsumexp_into_forward(xv, zv, imeta, m)",
        "logsumexp_into_reverse(g, xv, zv, gx, imeta, m, fresh_x)",
        "logsumexp_into_tangent(xv, zv, xd, zd, imeta, m)",
        "logsumexp_into_second_order(g, gd, xv, zv, xd, gx, gxd, imeta, m)",
    ),
    "cross_entropy": (
        "cross_entropy_forward(xv, zv, imeta, m)",
        "cross_entropy_reverse(g, xv, gx, imeta, m)",
        "cross_entropy_tangent(xv, xd, zd, imeta, m)",
        "cross_entropy_second_order(g, gd, xv, xd, gx, gxd, imeta, m)",
    ),
    "join": (
        "join_forward(xv, yv, zv, imeta, m)",
        f"join_reverse(g, gx, gy, {_NEEDS}, imeta, m)",
        "join_forward(xd, yd, zd, imeta, m)",
        f"join_reverse(g, gx, gy, {_NEEDS}, imeta, m)\n"
        f"        join_reverse(gd, gxd, gyd, {_NEEDS}, imeta, m)",
    ),
    # no second-order rule: tapegrad refuses Hessians through a custom op before sweeping
    "custom": (
        "custom_forward(xv, zv, imeta, m)",
        "custom_reverse(g, xv, zv, gx, imeta, m)",
        "custom_tangent(xv, zv, xd, zd, imeta, m)",
        "custom_reverse(g, xv, zv, gx, imeta, m)\n        custom_reverse(gd, xv, zv, gxd, imeta, m)",
    ),
}


def _assigns(o: Opcode | ArrayOpSpec) -> bool:
    """Whether code o's reverse rule assigns a block it pushes to first (its call takes fresh_x or
    fresh_y: see array_reverse)."""
    calls = _ARRAY_KERNELS.get(o.name) if isinstance(o, ArrayOpSpec) else None
    return calls is not None and "fresh_" in (calls[1] or "")


def _array_kernel_branches(which: int) -> str:
    """The branches of array_forward, array_reverse, array_tangent or array_second_order (which =
    0, 1, 2, 3) for ARRAY_OPS."""
    out = []
    for name, calls in _ARRAY_KERNELS.items():
        if calls[which] is not None:
            out.append(f"    elif c == {ARRAY_CODE[name]}:  # {name}")
            out.append(f"        {calls[which]}")
    return "\n".join(out)


def _code_table(flag) -> str:
    """A per-code uint8 constant array (opcodes, then ARRAY_OPS codes) as source."""
    values = [int(flag(o)) for o in OPCODES] + [int(flag(s)) for s in ARRAY_OPS]
    return f"np.array({values}, dtype=np.uint8)"


TEMPLATE = '''\
"""Generated by kernels.codegen from kernels.table: do not edit."""
import numpy as np
from numba import carray, cfunc, njit, prange, types
from numba.core.extending import intrinsic
from llvmlite import ir
from math import {math_names}

CACHE = {cache}
ARRAY_ROW = {array_row}
INPUT = {input}
CHUNK = 512  # elements per chunk of the elementwise reverse kernel's runs, of logsumexp's exps
TILE = 2048  # elements per tile of a segment of elementwise rows (array_forward)
REREAD_BYTES, REREAD_CHUNK = 1 << 20, 1 << 19  # array_math.matmul_reverse: a larger x in chunks
ARRAY_CONST = {array_const}
ARRAY_INPUT = {array_input}
PACK = {pack}
PLAN_TANGENT, PLAN_SECOND = {plan_flags}  # kernels.plans
RUN, RUN_END = {run}, {run_end}
REACHED, STALE = {live_bytes}  # kernels.table
_kernel = njit(cache=CACHE, nogil=True, error_model="numpy")
_parallel = njit(cache=CACHE, nogil=True, error_model="numpy", parallel=True)
_helper = njit(cache=CACHE, nogil=True, error_model="numpy", inline="always")
# may fuse a multiply and an add (an FMA, one rounding): LLVM still inlines it into the kernels'
# loops, flags and all, where Numba's own inlining would give it the caller's flags
_fused = njit(cache=CACHE, nogil=True, error_model="numpy", fastmath={{"contract"}})


@intrinsic
def as_pointer(typingctx, address):
    """The float64 pointer at an integer address (of a block the caller keeps alive)."""
    sig = types.CPointer(types.float64)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.float64)))

    return sig, codegen


@intrinsic
def float_of_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 `bits`."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@intrinsic
def bits_of_float(typingctx, value):
    """The IEEE bits of the float64 `value`, as an int64 (reading an array's elements this way
    costs nothing; a ``view(np.int64)`` of the array cost 25 ns a call)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return sig, codegen


@intrinsic
def data_of(typingctx, array):
    """A pointer to the first element of a contiguous array."""
    sig = types.CPointer(array.dtype)(array)

    def codegen(context, builder, signature, args):
        return context.make_array(signature.args[0])(context, builder, args[0]).data

    return sig, codegen


@intrinsic
def borrowed(typingctx, arrays):
    """The same views as `arrays` (an array, or a tuple of arrays and of such tuples) without
    their reference counts, for memory the caller keeps alive: slicing, unpacking or passing
    them on then costs no atomic increment and decrement (a row's kernel that took its arrays
    counted made about 60 pairs of those)."""
    sig = arrays(arrays)

    def strip(context, builder, typ, value):
        if isinstance(typ, types.BaseTuple):
            for k, member in enumerate(typ):
                item = strip(context, builder, member, builder.extract_value(value, k))
                value = builder.insert_value(value, item, k)
            return value
        view = context.make_array(typ)(context, builder, value=value)
        view.meminfo = ir.Constant(view.meminfo.type, None)
        view.parent = ir.Constant(view.parent.type, None)
        return view._getvalue()

    def codegen(context, builder, signature, args):
        return strip(context, builder, signature.args[0], args[0])

    return sig, codegen


# BLAS dgemm (Fortran calling convention: every argument a pointer), by symbol name, not address,
# so that code cached on disk links to the library this process chose (kernels.blas.bind)
_CHAR, _INT, _DOUBLE = types.CPointer(types.uint8), types.CPointer(types.int32), types.CPointer(types.float64)
dgemm = types.ExternalFunction("tapegrad_dgemm", types.void(
    _CHAR, _CHAR, _INT, _INT, _INT, _DOUBLE, _DOUBLE, _INT, _DOUBLE, _INT, _DOUBLE, _DOUBLE, _INT
))
# exp of a vector (n, x, out; out may be x): MKL's vdExp when kernels.blas bound MKL, else exp_array
vector_exp = types.ExternalFunction("tapegrad_vexp", types.void(types.int32, _DOUBLE, _DOUBLE))


@intrinsic
def call_kernel(typingctx, address, x, y, g, out, meta):
    """Call the C function at `address`, void(double*, double*, double*, double*, int64*), on
    the arrays' data (a user op's kernel: tapegrad.custom)."""
    sig = types.void(address, x, y, g, out, meta)

    def codegen(context, builder, signature, args):
        data = [context.make_array(t)(context, builder, v).data for t, v in zip(signature.args[1:], args[1:])]
        function = ir.FunctionType(ir.VoidType(), [d.type for d in data])
        builder.call(builder.inttoptr(args[0], function.as_pointer()), data)
        return context.get_dummy_value()

    return sig, codegen


{helpers}

{array_helpers}


@cfunc(types.void(types.int32, _DOUBLE, _DOUBLE), cache=CACHE, nogil=True)
def exp_array(n, x, out):
    """out[:n] = exp(x[:n]) by vexp: what tapegrad_vexp runs without MKL (kernels.sweeps binds it)."""
    xs, outs = carray(x, n), carray(out, n)
    for t in range(n):
        outs[t] = vexp(xs[t])


@_helper
def needs_adjoint(r, op, a, code):
    """Whether row r can pass a gradient on (array data that needs none cannot)."""
    return not (op[r] == ARRAY_ROW and code[a[r]] == ARRAY_CONST)


@_helper
def reach_operands(j, op, a, arr, live):
    """Mark the blocks of array row j's operand rows that its rule pushes to as maybe nonzero (see
    array_reverse; a where's condition, say, gets nothing)."""
    rows = PUSHES[arr[0][j]]
    if rows & 1 and op[arr[1][j]] == ARRAY_ROW:
        live[a[arr[1][j]]] = REACHED
    if rows & 2 and op[arr[2][j]] == ARRAY_ROW:
        live[a[arr[2][j]]] = REACHED


@_helper
def first_pushes(j, op, a, arr, aadj, live, assigns):
    """Whether array row j's rule is the first to push to the block of its operand x, of y (before
    reach_operands): such a block holds zeros, or for a STALE one values to overwrite. A rule that
    `assigns` where it is first overwrites the block; for the others the stale ones are zeroed."""
    code, ax, ay, aoff, asize = arr[0], arr[1], arr[2], arr[4], arr[5]
    rows = PUSHES[code[j]]
    fx = rows & 1 != 0 and op[ax[j]] == ARRAY_ROW and live[a[ax[j]]] != REACHED
    fy = rows & 2 != 0 and op[ay[j]] == ARRAY_ROW and live[a[ay[j]]] != REACHED and ay[j] != ax[j]
    if not assigns:
        for first, r in ((fx, ax[j]), (fy, ay[j])):
            if first and live[a[r]] == STALE:
                carray(as_pointer(np.int64(aadj.ctypes.data) + 8 * aoff[a[r]]), asize[a[r]])[:] = 0.0
    return fx, fy


@_kernel
def zero_stale(arr, aadj, live):
    """Zero the blocks a reverse sweep left STALE (no rule pushed to them): the input rows' blocks
    the caller reads as their adjoints."""
    for j in range(live.shape[0]):
        if live[j] == STALE:
            carray(as_pointer(np.int64(aadj.ctypes.data) + 8 * arr[4][j]), arr[5][j])[:] = 0.0


@_helper
def mark_stale(arr, live):
    """Mark the input rows' blocks STALE (for a consuming sweep: the blocks need no zeroing first;
    the caller zeroes those still STALE after it, zero_stale)."""
    for j in range(live.shape[0]):
        if arr[0][j] == ARRAY_INPUT and arr[5][j] > 0:
            live[j] = STALE


@_kernel
def fill_constants(op, a, consts, vals, arr, vaddr):
    """Write the tape's array data (array_const rows) into a workspace's values: once, when the
    workspace is made; the forward sweeps leave those rows as they are."""
    code, ax = arr[0], arr[1]
    for i in range(np.uint64(op.shape[0])):
        if op[i] >= ARRAY_ROW and code[a[i]] == ARRAY_CONST:
            zv = row_values(i, op, a, vals, arr, vaddr)[0]
            zv[:] = consts[ax[a[i]] : ax[a[i]] + zv.shape[0]]


@_helper
def alias_inputs(arr, vaddr, inputs, alias):
    """A copy of vaddr, to restore when the sweeps are done; with `alias`, every array_input row's
    block (but a 0-d one's, a scalar slot) is now its entries of `inputs` (the forward sweep then
    copies nothing): for sweeps that read the values only until they return."""
    own = vaddr.copy()
    if alias:
        code, ax = arr[0], arr[1]
        for j in range(code.shape[0]):
            if code[j] == ARRAY_INPUT and vaddr[j] != 0:
                vaddr[j] = np.int64(inputs.ctypes.data) + 8 * np.int64(ax[j])
    return own


@_kernel
def alias_adjoints(op, a, input_slots, arr, aadj, grad, lo, alias):
    """A copy of the adjoint blocks' offsets (arr[4], a workspace's own), to restore after the
    sweep and input_adjoints; with `alias`, the block of each array_input row that input_adjoints
    reads for input entries [lo, lo + len(grad)) is now its entries of `grad` (an offset from
    aadj's start outside aadj): the reverse sweep, its blocks marked STALE, writes the gradient
    there in place."""
    own = arr[4].copy()
    if alias:
        code, ax, aoff, asize = arr[0], arr[1], arr[4], arr[5]
        base = (np.int64(grad.ctypes.data) - np.int64(aadj.ctypes.data)) // 8 - lo
        for j in range(code.shape[0]):
            k = np.int64(ax[j])
            if code[j] == ARRAY_INPUT and 0 < asize[j] and lo <= k and k + asize[j] <= lo + grad.shape[0]:
                s = input_slots[k]
                if op[s] == ARRAY_ROW and a[s] == j:
                    aoff[j] = base + k
    return own


@_helper
def copy_input(zv, inputs, start, address):
    """An array_input row's forward: its entries of `inputs` into its block, unless the block is
    those entries (alias_inputs)."""
    if address != np.int64(inputs.ctypes.data) + 8 * np.int64(start):
        zv[:] = inputs[start : start + zv.shape[0]]


@_helper
def clear_adjoints(arr, aadj, inputs, others):
    """Zero the adjoint blocks of the input rows (unless a sweep takes them STALE), of the others
    (unless a consuming sweep left them zero), but array data's (no reverse rule writes those).
    Blocks outside aadj (a gradient's entries, alias_adjoints) are their owner's to zero."""
    code, aoff, asize = arr[0], arr[4], arr[5]
    for j in range(code.shape[0]):
        data = code[j] == ARRAY_INPUT or code[j] == ARRAY_CONST
        if (inputs and code[j] == ARRAY_INPUT) or (others and not data):
            if 0 <= aoff[j] and aoff[j] + asize[j] <= aadj.shape[0]:
                aadj[aoff[j] : aoff[j] + asize[j]] = 0.0


@_kernel
def unpack_rows(rows, pool, const_a, const_b):
    """A recorded tape's rows as the sweeps take them. `rows` holds op, a, b, value per row, with
    a constant operand written inline (const_a, const_b: per opcode, whether a, b is one). Returns
    op, a, b, vals, and the constants: the pool, the inline constants of operands a, then b (each
    operand now their index), and a last 0.0."""
    n = rows.shape[0] // 4
    op = np.empty(n, dtype=np.uint8)
    inline_a = inline_b = 0
    for i in range(n):
        op[i] = np.uint8(rows[4 * i])
        inline_a += const_a[op[i]]
        inline_b += const_b[op[i]]
    a = np.empty(n, dtype=np.uint32)
    b = np.empty(n, dtype=np.uint32)
    vals = np.empty(n)
    consts = np.empty(pool.shape[0] + inline_a + inline_b + 1)
    consts[: pool.shape[0]] = pool
    consts[-1] = 0.0
    ka, kb = pool.shape[0], pool.shape[0] + inline_a
    for i in range(n):
        a[i], b[i], vals[i] = np.uint32(rows[4 * i + 1]), np.uint32(rows[4 * i + 2]), rows[4 * i + 3]
        if const_a[op[i]]:
            consts[ka] = rows[4 * i + 1]
            a[i] = ka
            ka += 1
        if const_b[op[i]]:
            consts[kb] = rows[4 * i + 2]
            b[i] = kb
            kb += 1
    return op, a, b, vals, consts


@_helper
def unpack_blocks(blocks):
    """A recording tape's array table (code, x, y, meta, offset, size per array row, interleaved)
    as the columns the sweeps take (see kernels.array_table), in one call."""
    n = blocks.shape[0] // 6
    code = np.empty(n, dtype=np.uint8)
    x = np.empty(n, dtype=np.uint32)
    y = np.empty(n, dtype=np.uint32)
    meta, off, size = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for j in range(n):
        b = blocks[6 * j : 6 * j + 6]
        code[j], x[j], y[j] = np.uint8(b[0]), np.uint32(b[1]), np.uint32(b[2])
        meta[j], off[j], size[j] = b[3], b[4], b[5]
    return code, x, y, meta, off, size


@_kernel
def unpack_tape(rows, pool, const_a, const_b, blocks):
    """unpack_rows, then unpack_blocks: an array tape's in one call."""
    return unpack_rows(rows, pool, const_a, const_b) + unpack_blocks(blocks)


@_kernel
def subtract_scaled(table, scale):
    """p -= scale * g for each (address of p, address of g, size) in `table`, float64 blocks the
    caller keeps alive: an optimizer's step over its parameters in one call and one pass each
    (NumPy takes two passes and a temporary; a call per parameter cost 2 us on an MLP's six)."""
    for j in range(table.shape[0] // 3):
        size = table[3 * j + 2]
        p, g = carray(as_pointer(table[3 * j]), size), carray(as_pointer(table[3 * j + 1]), size)
        for k in range(size):
            p[k] -= scale * g[k]


@_kernel
def take_blocks(op, a, arr, aadj, kept, reached):
    """Move out the adjoint blocks of the array rows both kept and reached: one new array holding
    them in row order, and each row's offset in it (-1: none). Their blocks are left zero."""
    aoff, asize = arr[4], arr[5]
    n = op.shape[0]
    at = np.full(n, -1, dtype=np.int64)
    total = 0
    for i in range(n):
        if kept[i] and reached[i] and op[i] == ARRAY_ROW:
            at[i] = total
            total += asize[a[i]]
    out = np.empty(total)
    for i in range(n):
        if at[i] >= 0:
            j = a[i]
            block = aadj[aoff[j] : aoff[j] + asize[j]]
            out[at[i] : at[i] + asize[j]] = block  # (a copy, then a fill: 2x faster than one loop
            block[:] = 0.0  # doing both, which does not vectorize)
    return out, at


@_helper
def leading_inputs(op, a, input_slots):
    """How many of the first rows are input rows reading inputs 0, 1, 2, ... in order (a compiled
    function's arguments): the sweeps copy their values in one go and skip them, instead of
    dispatching one row at a time (input rows have no reverse rule)."""
    k = 0
    while k < input_slots.shape[0] and input_slots[k] == k and op[k] == INPUT and a[k] == k:
        k += 1
    return k


@_helper
def run_length(op, i):
    """The run length written in op[i : i + 4] (base-64 digits, little-endian: kernels.runs)."""
    return np.uint64(op[i] + 64 * (op[i + 1] + 64 * (op[i + 2] + 64 * np.int64(op[i + 3]))))


{run_kernels}


# per code: bit 1: operand x is a row, bit 2: y is; bits of the operand rows its reverse rule may
# push a nonzero to; whether that rule assigns a block it pushes to first (array_reverse);
# broadcasting elementwise rows (vv)
OPERANDS = {operands}
PUSHES = {pushes}
ASSIGNS = {assigns}
BROADCASTS = {broadcasts}


@_helper
def elementwise_shape(c, n, imeta, m):
    """nd, innermost extent and innermost x, y strides of elementwise row code c of n elements
    (unsigned, as are the loops' indices: no negative-index checks in the hot loops)."""
    if BROADCASTS[c]:
        nd = imeta[m]
        return nd, np.uint64(imeta[m + nd]), np.uint64(imeta[m + 2 * nd]), np.uint64(imeta[m + 3 * nd])
    return 1, np.uint64(n), np.uint64(1), np.uint64(1)


{elementwise_kernels}

@_kernel
def array_tangent(i, op, a, vals, dot, consts, seeds, arr, vaddr, adot, plan):
    """The tangent of array row i (its block of adot, or its scalar slot of dot), if its `plan`
    (kernels.plans) says a rule reads it."""
    op, a, vals, dot, consts, seeds, arr, vaddr, adot, plan = borrowed(
        (op, a, vals, dot, consts, seeds, arr, vaddr, adot, plan)
    )
    code, ax, ay, ameta, aoff, asize, imeta = arr
    j = a[i]
    if (plan[j] & PLAN_TANGENT) == 0:
        return
    c = code[j]
    m = ameta[j]
    zd, xd, yd = row_blocks(i, op, a, dot, arr, adot)
    n = zd.shape[0]
    if n == 0:
        return
    zv, xv, yv = row_values(i, op, a, vals, arr, vaddr)
    if c < ARRAY_ROW:
        elementwise_tangent(c, xv, yv, zv, xd, yd, zd, consts, ax[j], ay[j], imeta, m)
{array_tangent_cases}


@_kernel
def array_second_order(
    i, op, a, vals, dot, adj, adjd, consts, arr, vaddr, aadj, aadjd, adot, consume, plan, live
):
    """Forward-over-reverse for array row i: its reverse rule on the adjoints and on their tangents;
    with `consume`, leave its blocks of both zeroed (as array_reverse). A row whose `plan`
    (kernels.plans) says its adjoint tangents stay zero gets its reverse rule alone. `live` as
    array_reverse's."""
    op, a, vals, dot, adj, adjd, consts, arr, vaddr, aadj, aadjd, adot, plan, live = borrowed(
        (op, a, vals, dot, adj, adjd, consts, arr, vaddr, aadj, aadjd, adot, plan, live)
    )
    if (plan[a[i]] & PLAN_SECOND) == 0:
        array_reverse(i, op, a, vals, adj, consts, arr, vaddr, aadj, consume, live)
        return
    consume = consume and op[i] == ARRAY_ROW and arr[0][a[i]] != ARRAY_CONST and arr[0][a[i]] != ARRAY_INPUT
    code, ax, ay, ameta, aoff, asize, imeta = arr
    j = a[i]
    c = code[j]
    m = ameta[j]
    g, gx, gy = row_blocks(i, op, a, adj, arr, aadj)
    if g.shape[0] == 0:
        return
    reach_operands(j, op, a, arr, live)
    gd, gxd, gyd = row_blocks(i, op, a, adjd, arr, aadjd)
    _, xd, yd = row_blocks(i, op, a, dot, arr, adot)
    zv, xv, yv = row_values(i, op, a, vals, arr, vaddr)
    if c < ARRAY_ROW:
        elementwise_second_order(
            c, g, gd, xv, yv, zv, xd, yd, gx, gy, gxd, gyd, consts, ax[j], ay[j], imeta, m, consume
        )
        return
{array_second_order_cases}
    if consume:
        g[:] = 0.0
        gd[:] = 0.0


@_helper
def tiled_size(r, op, a, arr):
    """The elements of array row r if its forward may run tile by tile: an elementwise row of at
    least two tiles whose row operands are array rows of as many elements (none broadcast); else 0."""
    if op[r] != ARRAY_ROW:
        return 0
    code, ax, ay, asize = arr[0], arr[1], arr[2], arr[5]
    j = a[r]
    n = asize[j]
    if code[j] >= ARRAY_ROW or n < 2 * TILE:
        return 0
    rows = OPERANDS[code[j]]
    if (rows & 1 and (op[ax[j]] != ARRAY_ROW or asize[a[ax[j]]] != n)) or (
            rows & 2 and (op[ay[j]] != ARRAY_ROW or asize[a[ay[j]]] != n)):
        return 0
    return n


@_kernel
def array_forward(i, stop, op, a, vals, consts, inputs, arr, vaddr, done):
    """Compute array row i (its block, or its scalar slot when its result is 0-d); returns the
    last row computed. Row i and the rows after it (before `stop`) of as many elements by
    tiled_size are a segment, computed TILE elements of every row at a time: a row then reads its
    operands' elements from cache, not from memory. A row up to `done` was computed so already."""
    if np.int64(i) <= done:
        return done
    op, a, vals, consts, inputs, arr, vaddr = borrowed((op, a, vals, consts, inputs, arr, vaddr))
    n = tiled_size(i, op, a, arr)
    e = np.int64(i)
    while n > 0 and e + 1 < stop and tiled_size(e + 1, op, a, arr) == n:
        e += 1
    if e == i:
        row_forward(i, op, a, vals, consts, inputs, arr, vaddr)
        return e
    code, ax, ay = arr[0], arr[1], arr[2]
    entry = np.ones(4, dtype=np.int64)  # a vv row's imeta entry for one tile: 1-d, strides 1
    for lo in range(0, n, TILE):
        hi = min(lo + TILE, n)
        entry[1] = hi - lo
        for r in range(np.int64(i), e + 1):
            j = a[r]
            zv, xv, yv = row_values(r, op, a, vals, arr, vaddr)
            elementwise_forward(code[j], xv[lo:hi], yv[lo:hi], zv[lo:hi], consts, ax[j], ay[j], entry,
                                np.int64(0))
    return e


@_helper
def row_forward(i, op, a, vals, consts, inputs, arr, vaddr):
    """Compute array row i alone."""
    code, ax, ay, ameta, aoff, asize, imeta = arr
    j = a[i]
    c = code[j]
    m = ameta[j]
    zv, xv, yv = row_values(i, op, a, vals, arr, vaddr)
    n = zv.shape[0]
    if n == 0:
        return
    if c < ARRAY_ROW:
        elementwise_forward(c, xv, yv, zv, consts, ax[j], ay[j], imeta, m)
{array_forward_cases}


@_kernel
def array_reverse(i, op, a, vals, adj, consts, arr, vaddr, aadj, consume, live):
    """Push array row i's adjoint (its block, or its scalar slot) to its operands; with `consume`,
    leave its block zeroed (the elementwise kernels zero each element as they read it). An input
    row's block is left to its caller, who reads it; array data's is never written, not swept over.

    live[j] (one byte per array row j) is REACHED where row j's block may hold a nonzero: the
    caller sets it for the blocks it seeded (all others are zero when the sweep starts, or STALE:
    kernels.table), and a row that pushes its adjoint sets it for its operands. A block row not
    REACHED is skipped unread: a pullback of one output column (a Jacobian's row) does not scan
    the blocks of every row it never reaches. A rule that ASSIGNS writes the block of an operand
    it pushes to first (fresh_x, fresh_y) rather than adding to it: no zeroing before, no reading
    (see first_pushes)."""
    op, a, vals, adj, consts, arr, vaddr, aadj, live = borrowed(
        (op, a, vals, adj, consts, arr, vaddr, aadj, live)
    )
    consume = consume and op[i] == ARRAY_ROW and arr[0][a[i]] != ARRAY_CONST and arr[0][a[i]] != ARRAY_INPUT
    code, ax, ay, ameta, aoff, asize, imeta = arr
    j = a[i]
    c = code[j]
    m = ameta[j]
    g, gx, gy = row_blocks(i, op, a, adj, arr, aadj)
    if OPERANDS[c] == 0 and c != PACK:  # an input's or array data's: no rule, and nothing to scan
        if consume:
            g[:] = 0.0
        return
    if (op[i] == ARRAY_ROW and live[j] != REACHED) or not any_nonzero(g):  # nothing to push (a row the
        return  # seeds do not reach, or reach with zeros: another column's pullback)
    fresh_x, fresh_y = first_pushes(j, op, a, arr, aadj, live, ASSIGNS[c] != 0)
    reach_operands(j, op, a, arr, live)
    if c < ARRAY_ROW and PUSHES[c] == 0:  # a comparison, stop_gradient: no rule, but zero it
        if consume:
            g[:] = 0.0
        return
    zv, xv, yv = row_values(i, op, a, vals, arr, vaddr)
    if c < ARRAY_ROW:
        dx = (OPERANDS[c] & 1) != 0 and needs_adjoint(ax[j], op, a, code)
        dy = (OPERANDS[c] & 2) != 0 and needs_adjoint(ay[j], op, a, code)
        elementwise_reverse(c, g, xv, yv, zv, gx, gy, dx, dy, consts, ax[j], ay[j], imeta, m, consume)
        return
    elif OPERANDS[c] == 1 and not needs_adjoint(ax[j], op, a, code):
        pass  # its one operand is array data: no adjoint to push (array data's are never written)
{array_reverse_cases}
    if consume:
        g[:] = 0.0


{sweeps}
'''


# the loops of the sweeps over rows [start, stop), up and down: with runs (#R) a while loop, which
# skips a run's rows; without (#P) a for loop, which was 4% faster
ROWS_UP = """\
    for i in range(np.uint64(start), np.uint64(stop)):  #P
    i = np.uint64(start)  #R
    while i < np.uint64(stop):  #R"""
ROWS_DOWN = """\
    for k in range(stop - start):  #P
        i = np.uint64(stop - 1 - k)  #P
    i = np.uint64(stop)  #R
    while i > np.uint64(start):  #R
        i -= np.uint64(1)  #R"""


SWEEPS = '''\
@_kernel
def tangent{S}(op, a, b, vals, consts, seeds, dot, start, stop{AT}):
    """Tangent (forward-mode) sweep over rows [start, stop) at the values in `vals`."""
    op, a, b, vals, consts, seeds, dot = borrowed((op, a, b, vals, consts, seeds, dot))
    arr, vaddr, adot, plan = borrowed((arr, vaddr, adot, plan))  #A
{ROWS_UP}
        c = op[i]
{tangent_cases}
        elif c == RUN:  #R
            i += run_tangent(op, a, b, vals, consts, dot, i) - np.uint64(1)  #R
        i += np.uint64(1)  #R


@_kernel
def second_order{S}(op, a, b, vals, consts, dot, adj, adjd, start, stop, consume{A2C}):
    """Reverse sweep of the adjoints `adj` and of their tangents `adjd` along `dot` (the tangents
    of the values, from `tangent`): forward-over-reverse, for Hessian-vector products. With
    `consume`, as `reverse`: adj, adjd, aadj and aadjd are left zero but for the input rows."""
    op, a, b, vals, consts, dot, adj, adjd = borrowed((op, a, b, vals, consts, dot, adj, adjd))
    arr, vaddr, aadj, aadjd, adot, plan, live = borrowed((arr, vaddr, aadj, aadjd, adot, plan, live))  #A
{ROWS_DOWN}
        c = op[i]
        if c == RUN_END:  #R
            i -= run_second_order(op, a, b, vals, consts, dot, adj, adjd, consume, i) - np.uint64(1)  #R
            continue  #R
        g = adj[i]
        gd = adjd[i]
        if g == 0.0 and gd == 0.0:  # always so for an array row: its adjoints are in aadj, aadjd
            if c == ARRAY_ROW:  #A
                array_second_order(  #A
                    i, op, a, vals, dot, adj, adjd, consts, arr, vaddr, aadj, aadjd, adot, consume, plan,  #A
                    live,  #A
                )  #A
            continue
{second_order_cases}
        if consume and c != INPUT:
            adj[i] = 0.0
            adjd[i] = 0.0


@_kernel
def forward{S}(op, a, b, vals, consts, inputs, start, stop{AF}):
    """Replay rows [start, stop): write each row's value. Returns the first failing guard row, or -1."""
    op, a, b, vals, consts, inputs = borrowed((op, a, b, vals, consts, inputs))
    arr, vaddr = borrowed((arr, vaddr))  #A
    done = np.int64(-1)  # the last row of a segment of array rows computed tile by tile  #A
{ROWS_UP}
        c = op[i]
{forward_cases}
        elif c == RUN:  #R
            i += run_forward(op, a, b, vals, consts, i) - np.uint64(1)  #R
        i += np.uint64(1)  #R
    return -1


@_kernel
def reverse{S}(op, a, b, vals, consts, adj, start, stop, consume{ARC}):
    """Reverse sweep over rows [start, stop): push each row's adjoint to its operands. With
    `consume`, zero each row's adjoint once its rule has read it, but the input rows' (which the
    caller reads): adj is then zero but for those, and the next sweep need clear only them. The
    array part (sweeps for tapes with array rows): arr (the tape's array table), vaddr (each
    array row's value block, by address), aadj (the adjoints of the array blocks, consumed
    alike: a block as its rule reads it)."""
    op, a, b, vals, consts, adj = borrowed((op, a, b, vals, consts, adj))
    arr, vaddr, aadj, live = borrowed((arr, vaddr, aadj, live))  #A
{ROWS_DOWN}
        c = op[i]
        if c == RUN_END:  #R
            i -= run_reverse(op, a, b, vals, consts, adj, consume, i) - np.uint64(1)  #R
            continue  #R
        g = adj[i]
        if g == 0.0:  # always so for an array row: its adjoints are the block's, in aadj
            if c == ARRAY_ROW:  #A
                array_reverse(i, op, a, vals, adj, consts, arr, vaddr, aadj, consume, live)  #A
            continue
{reverse_cases}
        if consume and c != INPUT:
            adj[i] = 0.0


@_kernel
def reverse_tracked{S}(op, a, b, vals, consts, adj, reached, freed, saves, operands, release{AK}):
    """Reverse sweep of an eager backward: as `reverse`, and marks the rows it reaches.

    Rows whose rule reads saved values are marked freed when `release` is set; reaching a freed
    row again returns its index (a second backward through released values), else -1. An array
    row's block of aadj is zeroed as its rule reads it, unless keep[i] (the blocks the caller
    reads afterwards): the caller zeroes those, and aadj is all zeros for the next sweep.
    """
    op, a, b, vals, consts, adj, reached, freed = borrowed((op, a, b, vals, consts, adj, reached, freed))
    arr, vaddr, aadj, keep, live = borrowed((arr, vaddr, aadj, keep, live))  #A
    n = op.shape[0]
    code, ax, ay = arr[0], arr[1], arr[2]  #A
    for k in range(n):
        i = np.uint64(n - 1 - k)
        if reached[i] == 0:
            continue
        c = op[i]
        x, y = a[i], b[i]
        if c >= ARRAY_ROW:  #A
            j = a[i]  #A
            x, y, c = ax[j], ay[j], code[j]  #A
            if c == PACK:  #A
                for r in range(arr[5][j]):  #A
                    reached[arr[6][arr[3][j] + r]] = 1  #A
        m = operands[c]
        if m & 1:
            reached[x] = 1
        if m & 2:
            reached[y] = 1
        if saves[c]:
            if freed[i]:
                return np.int64(i)
            if release:
                freed[i] = 1
        c = op[i]
        g = adj[i]
        if g == 0.0:
            if c == ARRAY_ROW:  #A
                array_reverse(i, op, a, vals, adj, consts, arr, vaddr, aadj, keep[i] == 0, live)  #A
            continue
{reverse_cases}
    return -1


@_kernel
def clear_rows{S}(op, a, input_slots, adj, inputs_only{AR}):
    """Zero the rows' adjoints; with `inputs_only`, the input rows' alone (a consuming sweep left
    the others zero): one per scalar input, none for an array input's entries (its row's is 0)."""
    if not inputs_only:
        adj[:] = 0.0
        return
    k = 0
    while k < input_slots.shape[0]:
        s = input_slots[k]
        if op[s] == ARRAY_ROW:  # past the entries the array row reads  #A
            k = max(k + 1, np.int64(arr[1][a[s]]) + np.int64(arr[5][a[s]]))  #A
            continue  #A
        adj[s] = 0.0
        k += 1


@_kernel
def input_adjoints{S}(op, a, input_slots, adj, values, lo, add{AR}):
    """values[t] = the adjoint of input entry k = lo + t (with `add`: add values[t] to it instead),
    from the row reading it, input_slots[k]: an input row, or an array row reading entries
    [x, x + size) of which k is element k - x. Returns -1, or an entry its row does not read."""
    t = 0
    while t < values.shape[0]:
        k = lo + t
        s = input_slots[k]
        if op[s] == ARRAY_ROW:  #A
            # the row reads its entries from x on: the rest of them in one go  #A
            j = a[s]  #A
            e = k - np.int64(arr[1][j])  #A
            if not 0 <= e < arr[5][j]:  # not an entry it reads (no valid tape has this)  #A
                return np.int64(k)  #A
            run = min(arr[5][j] - e, values.shape[0] - t)  #A
            block = carray(as_pointer(np.int64(aadj.ctypes.data) + 8 * (arr[4][j] + e)), run)  #A
            if add:  #A
                block += values[t : t + run]  #A
            elif block.ctypes.data != values[t:].ctypes.data:  # (else: the block is these entries)  #A
                values[t : t + run] = block  #A
            t += run  #A
            continue  #A
        if add:
            adj[s] += values[t]
        else:
            values[t] = adj[s]
        t += 1
    return -1


@_kernel
def gradient{S}(op, a, b, consts, inputs, input_slots, out_slot, vals, adj, grad{AR}):
    """Replay the whole tape at `inputs`, then sweep back from `out_slot`:
    grad[k] = d vals[out_slot] / d inputs[k] for k < len(grad) (the arguments' entries). `vals`
    and `adj` are workspaces of one slot per row. Returns -1, or the row of the first guard that
    fails at these inputs (grad is then not set)."""
    return workspace_gradient{S}(
        op, a, b, consts, inputs, input_slots, out_slot, vals, adj, grad, False, False{AR}
    )


@_kernel
def workspace_gradient{S}(
    op, a, b, consts, inputs, input_slots, out_slot, vals, adj, grad, clean, consume{AR}
):
    """`gradient`, in a workspace whose adjoints a consuming sweep may leave zero: `clean` says
    adj and aadj are zero but for the input rows' (only those are zeroed first), `consume`
    leaves them so (see `reverse`), has the array_input rows read `inputs` in place (their blocks
    of values are not written: nothing reads this workspace's values after a consuming call but
    the next call) and write their adjoints in `grad` in place, taken STALE (their blocks in aadj
    are not touched: arr[4] must then be the workspace's own). A failing guard leaves aadj as it
    was."""
    n = op.shape[0]
    lead = leading_inputs(op, a, input_slots)
    vals[:lead] = inputs[:lead]
    own = alias_inputs(arr, vaddr, inputs, consume)  #A
    failed = forward{S}(op, a, b, vals, consts, inputs, lead, n{AF})
    if failed < 0:
        clear_rows{S}(op, a, input_slots, adj, clean{AR})
        own_offsets = alias_adjoints(op, a, input_slots, arr, aadj, grad, 0, consume)  #A
        clear_adjoints(arr, aadj, not consume, not clean)  #A
        adj[out_slot] = 1.0
        live = np.zeros(arr[0].shape[0], np.uint8)  # (no block seeded)  #A
        if consume:  #A
            mark_stale(arr, live)  #A
        reverse{S}(op, a, b, vals, consts, adj, lead, n, consume{ARC})
        zero_stale(arr, aadj, live)  #A
        input_adjoints{S}(op, a, input_slots, adj, grad, 0, False{AR})
        if consume:  #A
            arr[4][:] = own_offsets  #A
    vaddr[:] = own  #A
    return failed


@_kernel
def hvp{S}(op, a, b, consts, inputs, seeds, input_slots, out_slot, vals, dot, adj, adjd, grad, hv, clean,
           consume{AH}):
    """Replay at `inputs`; grad = d out / d inputs and hv = (d2 out / d inputs2) @ seeds.
    `clean` and `consume` as `workspace_gradient`'s, for adj and adjd alike. Returns -1, or the
    row of the first guard that fails at these inputs (aadj and aadjd are then as they were)."""
    n = op.shape[0]
    lead = leading_inputs(op, a, input_slots)
    vals[:lead] = inputs[:lead]
    own = alias_inputs(arr, vaddr, inputs, consume)  #A
    failed = forward{S}(op, a, b, vals, consts, inputs, lead, n{AF})
    if failed < 0:
        dot[:lead] = seeds[:lead]
        tangent{S}(op, a, b, vals, consts, seeds, dot, lead, n{AT})
        clear_rows{S}(op, a, input_slots, adj, clean{AR})
        clear_rows{S}(op, a, input_slots, adjd, clean{AR})
        clear_adjoints(arr, aadj, True, not clean)  #A
        clear_adjoints(arr, aadjd, True, not clean)  #A
        adj[out_slot] = 1.0
        live = np.zeros(arr[0].shape[0], np.uint8)  #A
        second_order{S}(op, a, b, vals, consts, dot, adj, adjd, lead, n, consume{A2C})
        input_adjoints{S}(op, a, input_slots, adj, grad, 0, False{AR})
        input_adjoints{S}(op, a, input_slots, adjd, hv, 0, False{ARD})
    vaddr[:] = own  #A
    return failed


@_parallel
def batch_gradient{S}(op, a, b, consts, inputs, input_slots, out_slot, values, grads, failed, threads{AR}):
    """`gradient` at every row of `inputs` (one point per row), in parallel: one workspace per
    each of `threads` workers. values[r] = the output at row r, grads[r] its gradient, failed[r]
    as `gradient`."""
    n, points = op.shape[0], inputs.shape[0]
    for t in prange(threads):
        vals = np.empty(n)
        adj = np.empty(n)
        arena = np.empty(aadj.shape[0])  # this thread's array values, and adjoints  #A
        own_adj = np.empty(aadj.shape[0])  #A
        own_vaddr = vaddr.copy()  #A
        own_arr = (arr[0], arr[1], arr[2], arr[3], arr[4].copy(), arr[5], arr[6])  # (offsets: aliased)  #A
        for j in range(vaddr.shape[0]):  #A
            if vaddr[j] != 0:  #A
                own_vaddr[j] = arena.ctypes.data + 8 * arr[4][j]  #A
        fill_constants(op, a, consts, vals, arr, own_vaddr)  #A
        clean = False  # adj and own_adj are zero but for the input rows' (after a consuming sweep)
        for r in range(t, points, threads):
            failed[r] = workspace_gradient{S}(
                op, a, b, consts, inputs[r], input_slots, out_slot, vals, adj, grads[r], clean, True{AOWN}
            )
            clean = clean or failed[r] < 0
            values[r] = vals[out_slot]
            values[r] += 0.0 * arena.shape[0]  # (keeps the arena alive to here)  #A
'''


def helper_source(module=scalar_math) -> str:
    """Source of a helper module's functions, without its docstring."""
    src = inspect.getsource(module)
    return src[src.index("\ndef ") :]


# array_math's small helpers, inlined where called, and the ones whose arithmetic may be fused;
# its kernels are compiled on their own
_INLINE_ARRAY_HELPERS = (
    "broadcast_base", "strided_base", "attains", "run_sum", "run_extreme", "run_ties", "any_nonzero",
    "run_exp_sum", "softmax_rows", "sample_weight", "exp_into",
    "run_exps", "value_block", "adjoint_block", "row_blocks", "row_values", "map_length", "small_angles",
)
_FUSED_ARRAY_HELPERS = ("vexp", "vsin", "vcos", "reduce_quarter", "sin_kernel", "cos_kernel")


ARRAY_LINE = "  #A"  # marks the lines of SWEEPS that only tapes with array rows need
RUN_LINE = "  #R"  # ... and those that only tapes with runs need (kernels.runs)
PLAIN_LINE = "  #P"  # ... and those of the sweeps without runs (ROWS_UP, ROWS_DOWN)


def _sweeps(arrays: bool, runs: bool, cases: dict[str, str]) -> str:
    """The sweeps, for tapes with array rows (names ending in ``_arrays``) or without, and with
    runs marked (then ``_runs``) or without: a tape runs sweeps that never compile the kernels
    it has no rows for (the array kernels, the run kernels: each takes a minute or more)."""
    params = dict(AF=", arr, vaddr", AR=", arr, vaddr, aadj", ARC=", arr, vaddr, aadj, live",
                  ARD=", arr, vaddr, aadjd", AK=", arr, vaddr, aadj, keep, live",
                  AOWN=", own_arr, own_vaddr, own_adj", AT=", arr, vaddr, adot, plan",
                  A2C=", arr, vaddr, aadj, aadjd, adot, plan, live",
                  AH=", arr, vaddr, aadj, aadjd, adot, plan")
    if not arrays:
        params = dict.fromkeys(params, "")
    suffix = ("_arrays" if arrays else "") + ("_runs" if runs else "")
    text = SWEEPS.format(S=suffix, ROWS_UP=ROWS_UP, ROWS_DOWN=ROWS_DOWN, **params,
                         **{k: v for k, v in cases.items() if k in SWEEPS})
    wanted = {ARRAY_LINE: arrays, RUN_LINE: runs, PLAIN_LINE: not runs}
    dropped = tuple(marker for marker, keep in wanted.items() if not keep)
    lines = [ln for ln in text.splitlines() if not ln.endswith(dropped)]
    return "\n".join(ln[:-4] if ln[-4:] in wanted else ln for ln in lines)  # (each marker: 4 characters)


def _decorator(helper: str) -> str:
    if helper in _INLINE_ARRAY_HELPERS:
        return "_helper"
    return "_fused" if helper in _FUSED_ARRAY_HELPERS else "_kernel"


def generate(cache: bool) -> str:
    """Source of the sweeps module."""
    from . import plans  # (imports Numba)

    helpers = re.sub(r"\ndef ", "\n@_helper\ndef ", helper_source())
    array_helpers = re.sub(
        r"\ndef (\w+)",
        lambda mt: f"\n@{_decorator(mt.group(1))}\ndef {mt.group(1)}",
        helper_source(array_math),
    )
    cases = dict(
        forward_cases=_branches(_forward_body),
        reverse_cases=_branches(_reverse_body),
        tangent_cases=_branches(_tangent_body),
        second_order_cases=_branches(_second_order_body),
    )
    return TEMPLATE.format(
        math_names=", ".join(MATH_NAMES.split()),
        cache=cache,
        array_row=ARRAY_ROW,
        input=CODE[("input", "")],
        array_const=ARRAY_CODE["array_const"],
        array_input=ARRAY_CODE["array_input"],
        pack=ARRAY_CODE["pack"],
        plan_flags=f"{plans.TANGENT}, {plans.SECOND}",
        run=RUN,
        run_end=RUN_END,
        live_bytes=f"{REACHED}, {STALE}",
        run_kernels=_run_kernels(),
        helpers=helpers.strip(),
        array_helpers=array_helpers.strip(),
        operands=_code_table(lambda o: o.operands),
        pushes=_code_table(lambda o: o.pushes),
        assigns=_code_table(_assigns),
        broadcasts=_code_table(lambda o: isinstance(o, Opcode) and o.kind == VV),
        array_forward_cases=_array_kernel_branches(0),
        array_reverse_cases=_array_kernel_branches(1),
        elementwise_kernels=_elementwise_kernels(),
        array_tangent_cases=_array_kernel_branches(2),
        array_second_order_cases=_array_kernel_branches(3),
        sweeps="\n".join(_sweeps(arrays, runs, cases) for arrays in (False, True) for runs in (False, True)),
    )


__all__ = ["generate", "helper_source", "MATH_NAMES", "CODE"]
