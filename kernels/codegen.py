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

import inspect
import re

from . import scalar_math
from .table import CODE, OPCODES, VC, CV, VV, Opcode

MATH_NAMES = (
    "exp log log1p expm1 sqrt sin cos tan asin acos atan sinh cosh tanh erf fabs atan2 pow isnan"
)


def _uses(expr: str, name: str) -> bool:
    return re.search(rf"\b{name}\b", expr) is not None


def _loads(oc: Opcode, exprs: tuple[str, ...], indent: str) -> list[str]:
    """Lines that load the operands the expressions use, for opcode ``oc``."""
    src = {
        "x": "consts[a[i]]" if oc.kind == CV else "vals[a[i]]",
        "y": "consts[b[i]]" if oc.kind == VC else "vals[b[i]]",
        "z": "vals[i]",
        "p0": "consts[b[i]]",
        "p1": "consts[b[i] + 1]",
    }
    return [
        f"{indent}{name} = {where}"
        for name, where in src.items()
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


def _branches(body_for, indent: str = "        ") -> str:
    out: list[str] = []
    first = True
    for oc in OPCODES:
        body = body_for(oc)
        if body is None:
            continue
        kw = "if" if first else "elif"
        first = False
        out.append(f"{indent}{kw} c == {oc.code}:  # {oc.spec.name} {oc.kind}")
        out.extend(f"{indent}    {line}" for line in body)
    return "\n".join(out) if out else f"{indent}pass"


def _forward_body(oc: Opcode):
    name = oc.spec.name
    if name == "input":
        return ["vals[i] = inputs[a[i]]"]
    if name == "const":
        return ["vals[i] = consts[a[i]]"]
    if name == "guard":
        return ["if (vals[a[i]] != 0.0) != (b[i] != 0):", "    return np.int64(i)", "vals[i] = b[i]"]
    fwd = oc.spec.fwd
    return [ln.strip() for ln in _loads(oc, (fwd,), "")] + [f"vals[i] = {fwd}"]


def _reverse_body(oc: Opcode):
    if not oc.spec.differentiable:
        return None
    terms = _diff_terms(oc)
    lines = [ln.strip() for ln in _loads(oc, tuple(t[1] for t in terms), "")]
    for op, d, masked in terms:
        lines += _accumulate(f"adj[{op}[i]]", d, masked, "g")
    return lines


def _tangent_body(oc: Opcode):
    if oc.spec.name == "input":
        return ["dot[i] = seeds[a[i]]"]
    if not oc.spec.differentiable:
        return ["dot[i] = 0.0"]
    terms = _diff_terms(oc)
    lines = [ln.strip() for ln in _loads(oc, tuple(t[1] for t in terms), "")]
    lines.append("t = 0.0")
    for op, d, masked in terms:
        # a zero tangent contributes nothing, even through an infinite partial
        lines += [f"d = dot[{op}[i]]", "if d != 0.0:"]
        lines += ["    " + ln for ln in _accumulate("t", d, masked, "d")]
    lines.append("dot[i] = t")
    return lines


def _second_order_body(oc: Opcode):
    """Forward-over-reverse: the reverse rule and its derivative along the tangents ``dot``.

    adj[k] += g * d_k;  adjd[k] += gd * d_k + g * (d_kx * xd + d_ky * yd), where xd, yd are the
    operands' tangents (0 for constants); zero factors contribute nothing."""
    if not oc.spec.differentiable:
        return None
    spec = oc.spec
    second = {"a": (spec.dxx, spec.dxy), "b": (spec.dxy, spec.dyy)}
    terms = _diff_terms(oc)
    exprs = tuple(e for op, d, _ in terms for e in (d, *second[op]))
    lines = [ln.strip() for ln in _loads(oc, exprs, "")]
    lines.append("xd = dot[a[i]]" if oc.kind in ("v", VV, VC) else "xd = 0.0")
    lines.append("yd = dot[b[i]]" if oc.kind in (VV, CV) else "yd = 0.0")
    for op, d, masked in terms:
        lines += [f"p = {d}", "t = 0.0"]
        lines += ["if gd != 0.0" + (" and p != 0.0" if masked else "") + ":", "    t += gd * p"]
        for tangent, dd in zip(("xd", "yd"), second[op]):
            if dd != "0.0":
                lines += [f"if {tangent} != 0.0:", f"    t += g * ({dd}) * {tangent}"]
        lines += [f"adjd[{op}[i]] += t"]
        lines += _accumulate(f"adj[{op}[i]]", "p", masked, "g")
    return lines


TEMPLATE = '''\
"""Generated by kernels.codegen from kernels.table: do not edit."""
import numpy as np
from numba import njit, prange
from math import {math_names}

CACHE = {cache}
_kernel = njit(cache=CACHE, nogil=True, error_model="numpy")
_parallel = njit(cache=CACHE, nogil=True, error_model="numpy", parallel=True)
_helper = njit(cache=CACHE, nogil=True, error_model="numpy", inline="always")

{helpers}

@_kernel
def forward(op, a, b, vals, consts, inputs, start, stop):
    """Replay rows [start, stop): write each row's value. Returns the first failing guard row, or -1."""
    for i in range(np.uint64(start), np.uint64(stop)):
        c = op[i]
{forward_cases}
    return -1


@_kernel
def reverse(op, a, b, vals, consts, adj, start, stop):
    """Reverse sweep over rows [start, stop): push each row's adjoint to its operands."""
    for k in range(stop - start):
        i = np.uint64(stop - 1 - k)
        g = adj[i]
        if g == 0.0:
            continue
        c = op[i]
{reverse_cases}


@_kernel
def reverse_tracked(op, a, b, vals, consts, adj, reached, freed, saves, operands, release):
    """Reverse sweep of an eager backward: as `reverse`, and marks the slots it reaches.

    Rows whose rule reads saved values are marked freed when `release` is set; reaching a freed
    row again returns its index (a second backward through released values), else -1.
    """
    n = op.shape[0]
    for k in range(n):
        i = np.uint64(n - 1 - k)
        if reached[i] == 0:
            continue
        c = op[i]
        m = operands[c]
        if m & 1:
            reached[a[i]] = 1
        if m & 2:
            reached[b[i]] = 1
        if saves[c]:
            if freed[i]:
                return np.int64(i)
            if release:
                freed[i] = 1
        g = adj[i]
        if g == 0.0:
            continue
{reverse_cases}
    return -1


@_kernel
def gradient(op, a, b, consts, inputs, input_slots, out_slot, vals, adj, grad):
    """Replay the whole tape at `inputs`, then sweep back from `out_slot`:
    grad[k] = d vals[out_slot] / d inputs[k]. `vals` and `adj` are workspaces of one slot per row.
    Returns -1, or the row of the first guard that fails at these inputs (grad is then not set)."""
    n = op.shape[0]
    failed = forward(op, a, b, vals, consts, inputs, 0, n)
    if failed >= 0:
        return failed
    adj[:] = 0.0
    adj[out_slot] = 1.0
    reverse(op, a, b, vals, consts, adj, 0, n)
    for k in range(input_slots.shape[0]):
        grad[k] = adj[input_slots[k]]
    return -1


@_kernel
def tangent(op, a, b, vals, consts, seeds, dot, start, stop):
    """Tangent (forward-mode) sweep over rows [start, stop) at the values in `vals`."""
    for i in range(np.uint64(start), np.uint64(stop)):
        c = op[i]
{tangent_cases}


@_kernel
def second_order(op, a, b, vals, consts, dot, adj, adjd, start, stop):
    """Reverse sweep of the adjoints `adj` and of their tangents `adjd` along `dot` (the tangents
    of the values, from `tangent`): forward-over-reverse, for Hessian-vector products."""
    for k in range(stop - start):
        i = np.uint64(stop - 1 - k)
        g = adj[i]
        gd = adjd[i]
        if g == 0.0 and gd == 0.0:
            continue
        c = op[i]
{second_order_cases}


@_kernel
def hvp(op, a, b, consts, inputs, seeds, input_slots, out_slot, vals, dot, adj, adjd, grad, hv):
    """Replay at `inputs`; grad = d out / d inputs and hv = (d2 out / d inputs2) @ seeds.
    Returns -1, or the row of the first guard that fails at these inputs."""
    n = op.shape[0]
    failed = forward(op, a, b, vals, consts, inputs, 0, n)
    if failed >= 0:
        return failed
    tangent(op, a, b, vals, consts, seeds, dot, 0, n)
    adj[:] = 0.0
    adjd[:] = 0.0
    adj[out_slot] = 1.0
    second_order(op, a, b, vals, consts, dot, adj, adjd, 0, n)
    for k in range(input_slots.shape[0]):
        grad[k] = adj[input_slots[k]]
        hv[k] = adjd[input_slots[k]]
    return -1


@_parallel
def batch_gradient(op, a, b, consts, inputs, input_slots, out_slot, values, grads, failed, threads):
    """`gradient` at every row of `inputs` (one point per row), in parallel: one workspace per
    each of `threads` workers. values[r] = the output at row r, grads[r] its gradient, failed[r]
    as `gradient`."""
    n, points = op.shape[0], inputs.shape[0]
    for t in prange(threads):
        vals = np.empty(n)
        adj = np.empty(n)
        for r in range(t, points, threads):
            failed[r] = gradient(op, a, b, consts, inputs[r], input_slots, out_slot, vals, adj, grads[r])
            values[r] = vals[out_slot]
'''


def helper_source() -> str:
    """Source of the scalar helpers, without the module docstring."""
    src = inspect.getsource(scalar_math)
    return src[src.index("\ndef ") :]


def generate(cache: bool) -> str:
    """Source of the sweeps module."""
    helpers = re.sub(r"\ndef ", "\n@_helper\ndef ", helper_source())
    return TEMPLATE.format(
        math_names=", ".join(MATH_NAMES.split()),
        cache=cache,
        helpers=helpers.strip(),
        forward_cases=_branches(_forward_body),
        reverse_cases=_branches(_reverse_body),
        tangent_cases=_branches(_tangent_body),
        second_order_cases=_branches(_second_order_body),
    )


__all__ = ["generate", "helper_source", "MATH_NAMES", "CODE"]