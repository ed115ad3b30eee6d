"""Which array rows the second-order sweeps can treat as first-order.

A Hessian-vector product (forward-over-reverse) sweeps tangents forward, then the adjoints and
their tangents back. Most rows of a typical objective are linear in their operands, or piecewise
so (sums, reshapes, matmuls by data, min and max): the tangent of their adjoint is their reverse
rule applied to their result's adjoint tangent, which is zero unless a curved row (exp, x * y,
logsumexp) lies between them and the output. So for each array row, found once per tape:

* ``TANGENT``: some rule reads its tangent (a curved reader's second-order rule, or the tangent
  rule of a row whose tangent is read): the tangent sweep computes it; the others it skips.
* ``SECOND``: its adjoint's tangent may be nonzero, or its own curvature makes its operands'
  nonzero: the second-order sweep runs its second-order rule; the others get the reverse rule
  alone, and their adjoint tangents stay zero.

kmeans' direction (GradBench) then costs a forward and a reverse sweep over its (n, k) distance
rows, not four. Scalar rows are always swept (their rules skip zeros as they go), but only those
whose tangents some rule reads need their operands' (the output's own tangent is never read); a
tape whose scalar rows feed an array (``pack``) gets every flag, as does the tangent sweep of a jvp.
"""

from __future__ import annotations

import numpy as np

from .jit import compiled

TANGENT, SECOND = 1, 2
# bits of a code's curvature (kernels.CURVES): x's adjoint tangent reads x's tangent, y's; y's
# reads x's, y's
XX, XY, YX, YY = 1, 2, 4, 8


@compiled()
def second_order_plan(op, a, b, code, ax, ay, array_row, pack, operands, curves, seeded):
    """Each array row's flags (TANGENT | SECOND) for a tape's rows (op, a, b), its array table's
    codes and operand rows (code, ax, ay), per code: the operand rows (bit 1: x, 2: y), the
    curvature bits and whether it is a leaf with a tangent (an input)."""
    n = op.shape[0]
    plan = np.full(code.shape[0], TANGENT | SECOND, dtype=np.uint8)
    for j in range(code.shape[0]):
        if code[j] == pack:
            return plan
    c = np.empty(n, dtype=np.int64)
    x = np.empty(n, dtype=np.int64)
    y = np.empty(n, dtype=np.int64)
    active = np.zeros(n, dtype=np.bool_)  # a tangent that is not zero everywhere
    for i in range(n):
        if op[i] >= array_row:
            j = a[i]
            c[i], x[i], y[i] = code[j], ax[j], ay[j]
        else:
            c[i], x[i], y[i] = op[i], a[i], b[i]
        m = operands[c[i]]
        active[i] = seeded[c[i]] != 0 or ((m & 1) != 0 and active[x[i]]) or ((m & 2) != 0 and active[y[i]])
    pushed = np.zeros(n, dtype=np.bool_)  # an adjoint tangent that may be nonzero
    read = np.zeros(n, dtype=np.bool_)  # a tangent some rule reads
    for k in range(n):
        i = n - 1 - k
        m, cv, array = operands[c[i]], curves[c[i]], op[i] >= array_row
        # (x[i], y[i] are rows only where m says so: a constant's a is a pool index)
        has_x, has_y = (m & 1) != 0, (m & 2) != 0
        # its curvature makes an operand's adjoint tangent nonzero: both operands have tangents
        # (the one whose adjoint it is needs one too, or needs no adjoint)
        xa, ya = has_x and active[x[i]], has_y and active[y[i]]
        curved = ((cv & XX) != 0 and xa) or ((cv & (XY | YX)) != 0 and xa and ya) or ((cv & YY) != 0 and ya)
        second = pushed[i] or curved
        # its tangent is read: its tangent rule reads its operands' tangents (a scalar row's rule
        # always runs, but one whose tangent nobody reads may read stale ones); its second-order
        # rule runs (always for a scalar row): it reads those it curves along
        tangents = read[i]
        seconds = not array or second
        if has_x:
            pushed[x[i]] |= second
            read[x[i]] |= tangents or (seconds and (cv & (XX | YX)) != 0)
        if has_y:
            pushed[y[i]] |= second
            read[y[i]] |= tangents or (seconds and (cv & (XY | YY)) != 0)
        if array:
            plan[a[i]] = (TANGENT if read[i] else 0) | (SECOND if second else 0)
    return plan
