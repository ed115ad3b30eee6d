"""Runs of one opcode (kernels.runs): the replay sweeps run them as loops, with the very numbers of
the sweeps row by row; the reorder pass sorts a loop's tape into them."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tapegrad.kernels import runs
from tapegrad.kernels.table import CODE, CV, OPS, RUN, RUN_END, VC, VV

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad import kernels

from .test_tape_opt import checked

INPUTS = 40
KINDS = {1: ("v",), 2: (VV, VC, CV)}
SPECS = [s for s in OPS if s.arity]
# how a block's rows read their row operands: stepping by 1, all one row, stepping by 2, each the
# block's previous row (an accumulating chain), anywhere before
PATTERNS = ("unit", "same", "stride2", "chain", "random")


@st.composite
def blocked_tapes(draw):
    """Tapes of input rows, then blocks of rows of one opcode each (some shorter than a run),
    their operands read by one of PATTERNS, constants shared or one per row."""
    op, a, b, consts = [CODE[("input", "")]] * INPUTS, list(range(INPUTS)), [0] * INPUTS, []
    for _ in range(draw(st.integers(1, 6))):
        spec = draw(st.sampled_from(SPECS))
        kind = draw(st.sampled_from(KINDS[spec.arity]))
        length = draw(st.integers(8, 40))
        s = len(op)
        pattern = [draw(st.sampled_from(PATTERNS)) for _ in range(2)]
        shared = draw(st.booleans())
        starts = [draw(st.integers(0, s - min(length, s))) for _ in range(2)]
        for u in range(length):
            k = s + u
            rows = []
            for p, x0 in zip(pattern, starts):
                row = {"unit": x0 + u, "same": x0, "stride2": x0 + 2 * u, "chain": k - 1,
                       "random": draw(st.integers(0, k - 1))}[p]
                rows.append(min(row, k - 1))
            if kind in (VC, CV) or spec.params:
                if not shared or not consts or u == 0:
                    consts.extend(draw(st.floats(-2.0, 2.0)) for _ in range(max(spec.params, 1)))
                const = len(consts) - max(spec.params, 1)
            op.append(CODE[(spec.name, kind)])
            a.append(const if kind == CV else rows[0])
            b.append(rows[1] if kind in (VV, CV) else const if (kind == VC or spec.params) else 0)
    return (np.array(op, np.uint8), np.array(a, np.uint32), np.array(b, np.uint32),
            np.array(consts + [0.0]))


def same(x: np.ndarray, y: np.ndarray) -> bool:
    """The same floats to the bit (signed zeros apart), NaN where NaN (whose sign and payload
    depend on the order the machine code takes an add's operands in)."""
    nan = np.isnan(x)
    return np.array_equal(nan, np.isnan(y)) and np.array_equal(x[~nan].view(np.int64), y[~nan].view(np.int64))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocked_tapes(), st.floats(-1.5, 1.5), st.integers(0, 2**32 - 1))
def test_runs_sweep_as_the_rows_one_by_one(tape, start, seed):
    """Forward, reverse, tangent and second-order sweeps over the marked opcodes give the plain
    sweeps' values, adjoints and tangents to the bit (infinities and NaN included); consuming
    sweeps give the input rows' adjoints and leave every other row's zero."""
    op, a, b, consts = tape
    with patch.object(runs, "MIN_SHARE", 0.0):  # every run marked, however few
        marked = runs.marked(op, a, b)
    S = kernels.sweeps()
    rng = np.random.default_rng(seed)
    inputs = start + rng.uniform(-1.0, 1.0, INPUTS)
    seeds, n = rng.uniform(-1.0, 1.0, INPUTS), len(op)
    out = {}
    for name, ops in (("plain", op), ("runs", marked)):
        vals, dot = np.empty(n), np.empty(n)
        adj, adjd = np.zeros(n), np.zeros(n)
        adj[-3:] = [1.0, 0.0, -2.0]
        suffix = "_runs" if name == "runs" else ""
        forward, reverse, tangent, second_order = (
            getattr(S, sweep + suffix) for sweep in ("forward", "reverse", "tangent", "second_order"))
        assert forward(ops, a, b, vals, consts, inputs, 0, n) == -1
        tangent(ops, a, b, vals, consts, seeds, dot, 0, n)
        grad, consumed = adj.copy(), [adj.copy(), adj.copy(), adjd.copy()]
        reverse(ops, a, b, vals, consts, grad, 0, n, False)
        second_order(ops, a, b, vals, consts, dot, adj, adjd, 0, n, False)
        out[name] = [vals, dot, grad, adj, adjd]
        # consuming: the same adjoints of the input rows, every other row's left zero
        reverse(ops, a, b, vals, consts, consumed[0], 0, n, True)
        second_order(ops, a, b, vals, consts, dot, *consumed[1:], 0, n, True)
        for kept, left in zip((grad, adj, adjd), consumed):
            assert same(left[:INPUTS], kept[:INPUTS]) and not left[INPUTS:].any()
    for plain, ran in zip(out["plain"], out["runs"]):
        assert same(plain, ran)


def test_runs_are_marked_where_one_opcode_repeats():
    mul, add, neg = CODE[("mul", VV)], CODE[("add", VC)], CODE[("neg", "v")]
    inp = CODE[("input", "")]
    m = 30
    op = np.array([inp] * m + [mul] * m + [add] * m + [neg] * 10 + [mul] * 20, np.uint8)
    a = np.array(list(range(m))                       # inputs
                 + list(range(m))                     # x[i] * x[i + 1]: a unit run
                 + [59] + list(range(60, 60 + m - 1))  # a chain: each reads the row before
                 + list(range(10))                    # too short for a run
                 + [5] * 20, np.uint32)               # one row read by all: not a unit run
    b = np.array([0] * m + [min(i + 1, m - 1) for i in range(m)] + [0] * (m + 10) + list(range(20)),
                 np.uint32)
    marked = runs.marked(op, a, b)
    starts, ends = np.flatnonzero(marked == RUN), np.flatnonzero(marked == RUN_END)
    assert starts.tolist() == [m, 2 * m, 3 * m + 10] and ends.tolist() == [2 * m - 2, 3 * m - 1, 4 * m - 1]
    # the unit run stops where x[i + 1] is clamped (its last row reads what the row before reads)
    assert marked[m + 6] == 1 and marked[2 * m + 6] == 0 and marked[3 * m + 16] == 0
    assert runs.rows_in_runs(op, a, b) == (m - 1) + m + 20 and runs.rows_in_runs(op, a, b, unit=True) == m - 1


def test_run_markers_never_read_as_array_rows():
    """The array kernels take the marked opcodes and test whether an operand row is an array row:
    a run's length bytes are base-64 digits, below ARRAY_ROW, and a run longer than MAX_RUN is
    marked as several (its markers read back its pieces' lengths)."""
    mul = CODE[("mul", VC)]
    for length in (16, 72, 73, 328, 4096 + 72, 64**3 + 72):
        out = np.full(length, mul, dtype=np.uint8)
        runs._write(out, 0, length, 1, RUN, RUN_END)
        assert not np.isin(out, (kernels.ARRAY_ROW, kernels.ARRAY_ROW + 1)).any()
        assert sum(int(out[2 + k]) * 64**k for k in range(4)) == length
    with patch.object(runs, "MAX_RUN", 40):  # (the uncompiled kernel reads the module's constant)
        out = np.full(100, mul, dtype=np.uint8)
        runs._write.py_func(out, 0, 100, 1, RUN, RUN_END)
    starts = np.flatnonzero(out == RUN)
    assert starts.tolist() == [0, 24, 48, 72] and np.flatnonzero(out == RUN_END).tolist() == [23, 47, 71, 99]
    assert [sum(int(out[s + 2 + k]) * 64**k for k in range(4)) for s in starts] == [24, 24, 24, 28]


def test_an_array_row_reading_a_scalar_row_in_a_run(rng):
    """A row of a marked run whose length byte was 72 (ARRAY_ROW) made the array kernels read a
    scalar operand as an array block: a segmentation fault."""
    def f(x, w):
        t = [x[i] * 2.0 for i in range(72)]  # a run of 72 rows: t[2] held its length's low byte
        return tnp.sum(tnp.asarray(w) * t[2]) + tnp.sum(tnp.sin(tnp.asarray(w)) * t[70])

    cf = tg.compile(f)
    x, w = rng.normal(size=72), rng.normal(size=3)
    value, (gx, gw) = cf.value_and_grad(x, w, argnums=(0, 1))
    assert cf._last.run_op is not cf._last.op  # the tape is marked
    assert value == pytest.approx(2 * x[2] * w.sum() + 2 * x[70] * np.sin(w).sum(), rel=1e-14)
    expected = np.zeros(72)
    expected[2], expected[70] = 2 * w.sum(), 2 * np.sin(w).sum()
    np.testing.assert_allclose(gx, expected, rtol=1e-14)
    np.testing.assert_allclose(gw, 2 * x[2] + 2 * x[70] * np.cos(w), rtol=1e-14)


def test_a_tape_with_few_runs_is_not_marked():
    """Runs holding less than MIN_SHARE of the rows: the tape keeps the sweeps without runs (whose
    compiled code has no run kernels)."""
    mul, inp = CODE[("mul", VV)], CODE[("input", "")]
    for inputs, share in ((100, 1 / 6), (40, 1 / 3)):  # 20 rows x[i] * x[i] after the inputs
        op = np.array([inp] * inputs + [mul] * 20, np.uint8)
        a = np.array(list(range(inputs)) + list(range(20)), np.uint32)
        assert (runs.marked(op, a, a) is op) == (share < runs.MIN_SHARE)


def rosen(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def test_reorder_sorts_a_loop_into_unit_runs():
    x = np.linspace(-1.2, 1.2, 200)
    plain, optimized = tg.compile(rosen), tg.compile(rosen, optimize=("reorder",))
    variant = checked(optimized, x)
    assert optimized.stats()["optimize"]["reordered"] and variant.suffix == "_runs"
    assert runs.rows_in_runs(variant.op, variant.a, variant.b, unit=True) > 0.6 * variant.rows
    recorded = checked(plain, x)
    assert runs.rows_in_runs(recorded.op, recorded.a, recorded.b, unit=True) == 0
    assert recorded.run_op is recorded.op and recorded.suffix == ""
    value, grad = optimized.value_and_grad(x)
    want, want_grad = plain.value_and_grad(x)
    assert value == want  # the forward sweep's order of the sum is kept
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-13)


def test_a_zero_adjoint_passes_nothing_through_an_infinite_partial_in_a_run():
    """sqrt'(0) = inf: a row whose adjoint is 0 adds nothing (not NaN), in a unit run too."""
    def f(x):
        return sum(tg.sqrt(x[i]) * (0.0 if i % 2 else 1.0) for i in range(len(x)))

    x = np.zeros(40)
    cf = tg.compile(f, optimize=("reorder",))
    variant = checked(cf, x)
    assert runs.rows_in_runs(variant.op, variant.a, variant.b, unit=True) >= 40
    grad = cf.grad(x)
    assert np.all(grad[1::2] == 0.0) and np.all(grad[::2] == np.inf)


def test_a_saved_tape_replays_with_its_runs(tmp_path):
    x = np.linspace(-1.2, 1.2, 100)
    cf = tg.compile(rosen, optimize=True)
    value, grad = cf.value_and_grad(x)
    cf.save(str(tmp_path / "rosen.npz"))
    loaded = tg.load(str(tmp_path / "rosen.npz"))
    assert loaded.value_and_grad(x)[0] == value
    assert np.array_equal(loaded.grad(x), grad)
    variant = checked(loaded, x)
    assert np.array_equal(variant.run_op, runs.marked(variant.op, variant.a, variant.b))
    assert np.count_nonzero(variant.run_op == RUN) > 0
