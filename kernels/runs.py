"""Runs: where a tape repeats one scalar op, marked for the replay sweeps.

A loop over a vector records the same few ops for every element, and a tape sorted by level
(:mod:`tapegrad.tape_passes`, ``reorder``) puts each op's rows together. A **run** is MIN_RUN or
more consecutive rows of one opcode of the table; the replay sweeps compute it in one loop of
that op instead of dispatching each row. A **unit run** is one whose row operands step by one row
from row to row and all come before its first row (no row of it reads another) and whose
constants stay the same: ``x[i] * y[i]``, ``x[i] ** 2.0`` across a vector. Its loop vectorizes.
Any other run reads each row's operands from the tape. Either way values and derivatives are
those of the sweeps row by row, to the bit: a run is swept in the sweep's own order, but for a
unit run in reverse whose rows push to distinct adjoints (where the order changes nothing).

The sweeps of a tape with runs (their names end in ``_runs``) find them in the **marked**
opcodes: a copy of ``op`` where a run's first row holds RUN, its second row its opcode, the next
four its length, the next one whether it is a unit run, its last four but one the length again
and its last row RUN_END (so that a sweep finds the length and the opcode going forward or
backward). The length is written in base-64 digits, so that no marker reads as an array row's
opcode (ARRAY_ROW, ARRAY_SCALAR) to the array kernels, which take the marked opcodes and test
whether an operand row is an array row: a run is at most MAX_RUN rows (longer ones are split).
Only the sweeps of a whole replay read the marked opcodes; everything else (listings, passes,
sparsity, saved files) reads ``op``.
"""

from __future__ import annotations

import numpy as np

from .jit import compiled
from .table import ARRAY_ROW, CV, OPCODES, RUN, RUN_END, VC, VV

MIN_RUN = 16  # rows: the markers take eleven of them
DIGIT = 64  # the base of the length's four digits: each below every opcode of an array row
MAX_RUN = DIGIT**4 - 1
assert DIGIT <= ARRAY_ROW and len(OPCODES) <= RUN, "a run's markers must not read as other opcodes"
# a tape is marked where runs hold this share of its rows: the sweeps with runs are compiled apart
# (the first replay of a tape with runs compiles its run kernels, about a minute more)
MIN_SHARE = 0.25
_SPARE = [0] * (256 - len(OPCODES))  # codes of no opcode (array ops', RUN's): never in a run
_RUNNABLE = np.array([o.kind != "" for o in OPCODES] + _SPARE, dtype=np.bool_)
# in a unit run: how operand a, b step from row to row (-1: b is not read), whether they are rows
_STEP_A = np.array([0 if o.kind == CV else 1 for o in OPCODES] + _SPARE, dtype=np.int64)
_STEP_B = np.array(
    [1 if o.kind in (VV, CV) else 0 if o.kind == VC or o.spec.params else -1 for o in OPCODES] + _SPARE,
    dtype=np.int64,
)
_ROW_A = np.array([o.kind in ("v", VV, VC) for o in OPCODES] + _SPARE, dtype=np.bool_)
_ROW_B = np.array([o.kind in (VV, CV) for o in OPCODES] + _SPARE, dtype=np.bool_)


def marked(op: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A copy of the opcodes `op` with the tape's runs marked; `op` itself where runs hold less
    than MIN_SHARE of its rows."""
    out, counts = _runs(op, a, b)
    return out if counts.sum() >= MIN_SHARE * len(op) and counts.sum() > 0 else op


def rows_in_runs(op: np.ndarray, a: np.ndarray, b: np.ndarray, unit: bool = False) -> int:
    """How many of the tape's rows are in runs (in unit runs)."""
    counts = _runs(op, a, b)[1]
    return int(counts[1] if unit else counts.sum())


def _runs(op: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The marked opcodes, and how many rows are in runs that are not unit runs and in unit runs."""
    return _mark(op, a, b, _RUNNABLE, _STEP_A, _STEP_B, _ROW_A, _ROW_B, MIN_RUN, RUN, RUN_END)


@compiled()
def _mark(op, a, b, runnable, step_a, step_b, row_a, row_b, min_run, run, run_end):
    n = op.shape[0]
    out = op.copy()
    counts = np.zeros(2, dtype=np.int64)  # rows in runs that are not unit runs, in unit runs
    i = 0
    while i < n:
        c = op[i]
        j = i + 1
        while j < n and op[j] == c:
            j += 1
        if not runnable[c] or j - i < min_run:
            i = j
            continue
        # rows [i, j) are of one opcode: unit runs where they step, other runs between them
        p = g = i
        while p < j:
            q = p + 1
            while q < j and (
                np.int64(a[q]) == np.int64(a[p]) + step_a[c] * (q - p) and (not row_a[c] or a[q] < p)
                and (step_b[c] < 0 or (np.int64(b[q]) == np.int64(b[p]) + step_b[c] * (q - p)
                                       and (not row_b[c] or b[q] < p)))
            ):
                q += 1
            if q - p < min_run:
                p += 1
                continue
            if p - g >= min_run:
                _write(out, g, p, 0, run, run_end)
                counts[0] += p - g
            _write(out, p, q, 1, run, run_end)
            counts[1] += q - p
            p = g = q
        if j - g >= min_run:
            _write(out, g, j, 0, run, run_end)
            counts[0] += j - g
        i = j
    return out, counts


@compiled()
def _write(out, s, stop, unit, run, run_end):
    """Mark rows [s, stop) as a run (a unit run if `unit`): as runs of MAX_RUN rows at most."""
    while s < stop:
        end = stop if stop - s <= MAX_RUN else s + MAX_RUN - MIN_RUN  # (leaves over MIN_RUN rows)
        r, e = end - s, end - 1
        out[s], out[s + 6], out[e] = run, unit, run_end
        for k in range(4):
            out[s + 2 + k] = out[e - 4 + k] = (r // DIGIT**k) % DIGIT
        s = end
