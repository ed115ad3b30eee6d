"""Tape optimization (tapegrad.tape_passes, tg.compile(optimize=True)): each pass on programs with a
known outcome, random programs against the plain replay, guards, array rows, save and load.

Forward values (and tangents) of an optimized tape must equal the plain replay's to the bit; so
must gradients after dce and fold; after cse and reorder they agree to rounding (rtol 1e-13)."""

from collections import OrderedDict
from collections.abc import Callable
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from tapegrad.kernels.runs import marked
from tapegrad.kernels.table import BY_NAME, CODE, CV, OPCODES, OPS, VC, VV

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad import kernels, tape_passes
from tapegrad.compiled import CompiledFunction, Variant, _check_variant
from tapegrad.recorder import APPLY
from tapegrad.tape import CONST, GUARD, INPUT, Tape

EXACT = ("dce", "fold")  # the passes that keep gradients bit-identical


# --------------------------------------------------------------------------- helpers
def same_bits(ours, theirs) -> bool:
    """Equal to the bit (signed zeros told apart), NaN where the other is NaN."""
    ours, theirs = np.atleast_1d(np.asarray(ours, float)), np.atleast_1d(np.asarray(theirs, float))
    nan = np.isnan(ours)
    return (ours.shape == theirs.shape and np.array_equal(nan, np.isnan(theirs))
            and np.array_equal(ours[~nan].view(np.int64), theirs[~nan].view(np.int64)))


def rounding_close(ours, theirs, bound) -> bool:
    """Equal up to the order in which a reverse sweep added its terms: within 1e-12 of `bound` (per
    component, the sum of the absolute values of the terms that reached it: see absolute_sweeps),
    plus 1e-13 relative; or both NaN (from a forward-mode jacobian). Components whose bound is not
    finite are not compared."""
    finite = np.isfinite(np.ravel(bound))
    ours, theirs, bound = (np.ravel(np.asarray(v, float))[finite] for v in (ours, theirs, bound))
    close = np.abs(ours - theirs) <= 1e-13 * np.abs(theirs) + 1e-12 * bound
    return bool(np.all(close | (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))))


def absolute_sweeps(cf: CompiledFunction, x, v) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """For the tape `cf` replays at `x`: a function from seeds of the outputs to the sums of the
    absolute values of the terms its reverse sweep adds on the way to each argument, and of those
    its second-order sweep along `v` adds (a Hessian-vector product). Sweeps that add the same
    terms in other orders differ by a few ulps of these sums. Each row's partials are read off a
    second-order sweep of that row alone, seeded with a unit adjoint (its operand b moved to a
    slot of its own when it is operand a too, so that their terms do not cancel)."""
    variant, vals, inputs, _ = cf._replay((x,))
    n = variant.rows
    seeds = np.zeros(len(inputs))
    seeds[: np.size(x)] = np.ravel(v)
    dot = np.append(cf._tangent(variant, vals, seeds), 0.0)
    vals = np.append(vals, 0.0)  # slot n: a copy of operand b
    space = cf._space(variant)
    partials = []  # per row: its operand rows, |partials|, |second-order terms along v|
    for r in range(n):
        adj, adjd, b = np.zeros(n + 1), np.zeros(n + 1), variant.b
        adj[r] = 1.0
        twin = OPCODES[variant.op[r]].kind == VV and variant.a[r] == variant.b[r]
        if twin:
            b = b.copy()
            b[r], vals[n], dot[n] = n, vals[b[r]], dot[b[r]]
        for blocks in (*space.array_args[2:], *space.tangents[:1]):  # array adjoints, their tangents
            blocks[:] = 0.0
        # (not consuming: keep the adjoints; every row's second-order rule, every block maybe live)
        live = np.ones(len(variant.arrays[0]), dtype=np.uint8)
        plan = (space.plan(variant, False), live) if space.array_args else ()
        variant.sweep("second_order")(variant.op, variant.a, b, vals, variant.consts, dot, adj, adjd,
                                      r, r + 1, False, *space.array_args, *space.tangents, *plan)
        if twin:
            o = variant.a[r]
            adj[o], adjd[o] = abs(adj[o]) + abs(adj[n]), abs(adjd[o]) + abs(adjd[n])
        rows = np.flatnonzero((adj[:r] != 0.0) | (adjd[:r] != 0.0))
        partials.append((rows, np.abs(adj[rows]), np.abs(adjd[rows])))
    arguments = variant.input_slots[: np.size(x)]

    @np.errstate(over="ignore", invalid="ignore")  # a bound that overflows is not compared
    def sums(out_seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g, gd = np.zeros(n), np.zeros(n)
        np.add.at(g, variant.out_slots, np.abs(out_seeds))
        for r in range(n - 1, -1, -1):
            rows, p, q = partials[r]
            if g[r]:
                g[rows] += g[r] * p
                gd[rows] += g[r] * q
            if gd[r]:
                gd[rows] += gd[r] * p
        return g[arguments], gd[arguments]

    return sums


def checked(cf: CompiledFunction, *args) -> Variant:
    """The variant `cf` replays at `args`, after the loader's validator accepted it."""
    variant = cf._replay(args)[0]
    width = len(variant.inputs(np.concatenate([np.ravel(a) for a in args])))
    _check_variant(variant._replace(captured=()), "optimized", width)  # (as loaded: captured values flat)
    return variant


def runs(op: np.ndarray) -> int:
    """Runs of one opcode along the tape."""
    return 1 + int(np.count_nonzero(op[1:] != op[:-1]))


def repeated_rows(variant: Variant) -> int:
    """Scalar rows (but inputs) whose opcode and operands an earlier row has: operands in either
    order for add, mul, eq, ne; a constant operand on either side (the optimized pool holds each
    single constant once)."""
    keys = set()
    for i, (op, a, b) in enumerate(zip(variant.op.tolist(), variant.a.tolist(), variant.b.tolist())):
        oc = OPCODES[op]
        if oc.spec.name in ("add", "mul", "eq", "ne") and oc.kind == CV:
            op, a, b = CODE[(oc.spec.name, VC)], b, a
        elif oc.spec.name in ("add", "mul", "eq", "ne") and oc.kind == VV:
            a, b = sorted((a, b))
        keys.add((op, a, b) if op != INPUT and op < kernels.ARRAY_ROW else ("row", i, 0))
    return len(variant.op) - len(keys)


def unread_rows(variant: Variant) -> int:
    """Rows of a tape of scalar rows that no output, guard or input slot reads."""
    live = set(variant.out_slots.tolist()) | set(variant.input_slots.tolist())
    live |= {i for i, op in enumerate(variant.op.tolist()) if op == GUARD}
    for i in range(variant.rows - 1, -1, -1):
        oc = OPCODES[variant.op[i]]
        if i in live:
            live |= {int(variant.a[i])} if oc.reads_a or oc.code == GUARD else set()
            live |= {int(variant.b[i])} if oc.reads_b else set()
    return variant.rows - len(live)


def hand_made(rows: list[tuple], out: list[int]) -> Variant:
    """A variant from rows written out: ("input",), ("const", value), ("guard", row, truth), or an
    op of the table with operand rows (ints) or constants (floats), clamp with its bounds."""
    op, a, b, consts, inputs = [], [], [], [], []

    def pool(*values: float) -> int:
        consts.extend(values)
        return len(consts) - len(values)

    for i, (name, *args) in enumerate(rows):
        if name == "input":
            row = (INPUT, len(inputs), 0)
            inputs.append(i)
        elif name == "const":
            row = (CONST, pool(args[0]), 0)
        elif name == "guard":
            row = (GUARD, args[0], int(args[1]))
        elif BY_NAME[name].arity == 1:
            row = (CODE[(name, "v")], args[0], pool(*args[1:]) if args[1:] else 0)
        else:
            kind = "".join("v" if isinstance(x, int) else "c" for x in args)
            row = (CODE[(name, kind)], *(x if isinstance(x, int) else pool(x) for x in args))
        op.append(row[0])
        a.append(row[1])
        b.append(row[2])
    op, a, b = np.array(op, np.uint8), np.array(a, np.uint32), np.array(b, np.uint32)
    return Variant(
        tape=Tape(), op=op, run_op=marked(op, a, b), a=a, b=b,
        consts=np.array(consts + [0.0]), input_slots=np.array(inputs, np.int64),
        out_slots=np.array(out, np.int64), out_shape=None if len(out) == 1 else (len(out),), captured=(),
        rows=len(op), out_slot=out[0], arrays=kernels.NO_ARRAYS, array_slots=0,
    )


def replayer(variant: Variant) -> CompiledFunction:
    """A compiled function that replays `variant` (one array argument of its input rows)."""
    cf = CompiledFunction(None)
    cf._variants[((len(variant.input_slots),),)] = OrderedDict({id(variant): variant})
    return cf


def assert_replays_agree(plain: CompiledFunction, optimized: CompiledFunction, x: np.ndarray,
                         exact_gradients: bool, scalar: bool) -> None:
    """Values and tangents to the bit; gradients, hvp, jacobians and vjp to the bit, or to the
    rounding of sums whose terms were added in another order."""
    v = np.linspace(-1.0, 1.5, x.size).reshape(x.shape)
    assert same_bits(optimized(x), plain(x))
    for ours, theirs in zip(optimized.jvp((x,), (v,)), plain.jvp((x,), (v,))):
        assert same_bits(ours, theirs)
    bounds = (lambda seeds: (None, None)) if exact_gradients else absolute_sweeps(plain, x, v)
    if scalar:
        grad_bound, hvp_bound = bounds(np.ones(1))
        pairs = [(optimized.grad(x), plain.grad(x), grad_bound),
                 (optimized.hvp(x, v), plain.hvp(x, v), hvp_bound)]
    else:
        m = np.size(plain(x))
        cotangent = np.ones_like(plain(x))
        jacobian_bound = [bounds(np.eye(m)[k])[0] for k in range(m)]
        pairs = [(optimized.jacobian(x), plain.jacobian(x), jacobian_bound),
                 (optimized.vjp((x,), cotangent)[1], plain.vjp((x,), cotangent)[1], bounds(cotangent)[0])]
    for ours, theirs, bound in pairs:
        assert same_bits(ours, theirs) if exact_gradients else rounding_close(ours, theirs, bound)


# --------------------------------------------------------------------------- each pass
def test_dce_drops_a_computed_but_unused_value():
    def f(x, y):
        unused = tg.exp(x) * y  # two rows nothing reads
        assert unused is not None
        return x * y + tg.sin(x)

    plain, optimized = tg.compile(f), tg.compile(f, optimize=("dce",))
    assert optimized(0.3, 0.8) == plain(0.3, 0.8)
    report = optimized.stats()["optimize"]
    assert report["removed"] == {"dce": 2} and report["rows_after"] == report["rows_before"] - 2
    assert "exp" not in optimized.tape.stats()["by_op"] and len(optimized.tape) == len(plain.tape) - 2
    assert same_bits(optimized.grad(0.3, 0.8, argnums=(0, 1)), plain.grad(0.3, 0.8, argnums=(0, 1)))


def test_dce_keeps_inputs_that_no_output_reads():
    cf = tg.compile(lambda x, y, z: x * y, optimize=True)
    assert cf.grad(2.0, 3.0, 4.0, argnums=(0, 1, 2)) == (3.0, 2.0, 0.0)
    assert cf.tape.stats()["by_op"]["input"] == 3


def test_cse_merges_a_repeated_product():
    cf = tg.compile(lambda x, y: x * y + x * y, optimize=True)
    assert cf(2.0, 5.0) == 20.0 and cf.grad(2.0, 5.0, argnums=(0, 1)) == (10.0, 4.0)
    report = cf.stats()["optimize"]
    assert report["removed"]["cse"] == 1 and report["merged"] == 1
    assert cf.tape.stats()["by_op"] == {"input": 2, "mul": 1, "add": 1}


@pytest.mark.parametrize("f,merged", [
    (lambda x, y: x * y + y * x, 1),  # commutative: one key
    (lambda x, y: (x + 2.0) * (2.0 + x), 1),  # a constant on either side
    (lambda x, y: (x == y) + (y == x), 1),
    (lambda x, y: (x - y) * (y - x), 0),
    (lambda x, y: tg.maximum(x, y) * tg.maximum(y, x), 0),  # maximum(0.0, -0.0) is 0.0, the other -0.0
    (lambda x, y: (x * 0.0) + (x * -0.0), 0),  # constants compare by their bits
    (lambda x, y: tg.sin(x * y) + tg.sin(y * x), 2),  # the sines' operands are merged first
])
def test_cse_operand_order_and_constants(f, merged):
    cf = tg.compile(f, optimize=("cse",))
    for x, y in ((0.0, -0.0), (-0.0, 0.0), (1.5, -2.0)):
        assert same_bits(cf(x, y), tg.compile(f)(x, y))
    assert cf.stats()["optimize"]["merged"] == merged


def test_fold_turns_constant_rows_into_one_constant():
    # 2.0 * 3.0 * x with both factors recorded as rows (tg.compile folds Python numbers itself)
    variant = hand_made([("input",), ("const", 2.0), ("const", 3.0), ("mul", 1, 2), ("mul", 3, 0)], [4])
    folded, report = tape_passes.optimize(variant, ("fold",))
    assert report.folded == 1 and report.removed == {"fold": 3} and folded.rows == 2
    assert tape_passes.optimize(variant)[1].removed == {"dce": 0, "fold": 3, "cse": 0, "reorder": 0}
    assert folded.op[1] == CODE[("mul", "cv")] and folded.consts[folded.a[1]] == 6.0
    x = np.array([0.7])
    assert_replays_agree(replayer(variant), replayer(folded), x, exact_gradients=True, scalar=True)


def test_fold_uses_the_forward_sweep_and_drops_guards_that_hold():
    rows = [("input",), ("const", 0.3), ("sin", 1), ("exp", 2), ("gt", 3, 1.0), ("guard", 4, True),
            ("lt", 3, 1.0), ("guard", 6, False), ("clamp", 3, 0.0, 1.2), ("pow", 0, 8), ("add", 8, 0)]
    variant = hand_made(rows, [9, 10])
    folded, report = tape_passes.optimize(variant, ("fold",))
    # sin, exp, gt, lt, clamp folded; both guards hold; every constant row left is read by no row
    assert report.folded == 5 and folded.rows == 3 and GUARD not in folded.op
    assert set(folded.op) == {INPUT, CODE[("pow", "vc")], CODE[("add", "cv")]}
    plain = replayer(variant)
    assert same_bits(folded.consts[folded.b[1]], plain._replay((np.array([2.0]),))[1][8])
    assert_replays_agree(plain, replayer(folded), np.array([1.7]), exact_gradients=True, scalar=False)


def test_fold_keeps_a_guard_that_fails():
    variant = hand_made([("input",), ("const", 2.0), ("gt", 1, 3.0), ("guard", 2, True), ("neg", 0)], [4])
    folded, _ = tape_passes.optimize(variant)
    assert list(folded.op).count(GUARD) == 1
    with pytest.raises(RuntimeError, match="cannot record again"):
        replayer(folded)(np.array([1.0]))


UNARY = (tg.sin, tg.exp, tg.tanh, tg.sigmoid, lambda v: v * v, lambda v: 1.0 + v, lambda v: v * 0.5)


def irregular(x):
    """Each term a chain of ops drawn at random: no short pattern of opcodes along the tape."""
    total = x[0] * 0.0
    for i, chain in enumerate(np.random.default_rng(7).integers(0, len(UNARY), (len(x), 4))):
        v = x[i]
        for k in chain:
            v = UNARY[k](v)
        total = total + v
    return total


def test_mispredicted_tells_irregular_opcodes_from_repeated_patterns():
    pattern = np.tile(np.array([3, 9, 9, 12, 40], np.uint8), 1000)
    assert tape_passes.mispredicted(pattern) < 0.01  # the first period's
    assert tape_passes.mispredicted(np.random.default_rng(0).integers(3, 40, 5000).astype(np.uint8)) > 0.9


def test_reorder_groups_the_opcodes_of_an_irregular_tape():
    x = np.linspace(-1.0, 1.0, 300)
    plain, optimized = tg.compile(irregular), tg.compile(irregular, optimize=("reorder",))
    variant = checked(optimized, x)  # the validator: every operand row before its reader
    report = optimized.stats()["optimize"]
    assert report["reordered"] and report["removed"] == {"reorder": 0}
    assert tape_passes.mispredicted(checked(plain, x).op) > 0.3
    assert tape_passes.mispredicted(variant.op) < 0.05
    assert runs(variant.op) < runs(checked(plain, x).op) / 20
    assert_replays_agree(plain, optimized, x, exact_gradients=False, scalar=True)


def recurrence(x):
    """A loop repeating one short pattern of ops, each step reading the one before."""
    s = x[0]
    for i in range(1, len(x)):
        s = tg.sin(s) * x[i] + 0.5
    return s


def test_reorder_leaves_a_repeated_pattern_alone():
    """A recurrence is predicted well and sorted would make no runs (each step is a level of its own)."""
    x = np.linspace(0.1, 0.9, 200)
    cf = tg.compile(recurrence, optimize=True)
    assert not cf.stats()["optimize"]["reordered"] if cf(x) else False
    assert np.array_equal(checked(cf, x).op, checked(tg.compile(recurrence, optimize=("dce", "cse")), x).op)


def test_constant_pool_is_shared_by_value():
    def f(x):
        total = x[0] * 0.1 + 0.5
        for i in range(1, len(x)):
            total = total + (x[i] * 0.1 + 0.5)
        return total

    cf, plain = tg.compile(f, optimize=True), tg.compile(f)
    x = np.linspace(0.0, 1.0, 20)
    assert same_bits(cf(x), plain(x))
    assert len(checked(plain, x).consts) == 41 and sorted(checked(cf, x).consts) == [0.0, 0.1, 0.5]


def test_unknown_pass_names_are_refused():
    with pytest.raises(ValueError, match="unknown tape passes"):
        tg.compile(lambda x: x, optimize=("dce", "inline"))


# --------------------------------------------------------------------------- guards
def test_guards_survive_and_re_record_with_optimization():
    def f(x):
        y = x * x
        t = tg.exp(x) - 2.0  # read only by the guard below: dce must keep it
        if t > 0:
            return y + tg.sin(x) + y
        return y - x

    cf, plain = tg.compile(f, optimize=True), tg.compile(f)
    for x in (1.0, 0.5, 2.0, -1.0, 1.5):
        assert same_bits(cf(x), plain(x))
        assert rounding_close(cf.grad(x), plain.grad(x), absolute_sweeps(plain, x, 1.0)(np.ones(1))[0])
    stats = cf.stats()
    assert stats["recordings"] == 2 and stats["rerecordings"] == 1
    assert stats["tape"]["guards"] == 1 and "exp" in stats["tape"]["by_op"]


@tg.compile(optimize=True)
def halvings(x):
    while x > 1.0:
        x = x / 2.0
    return x * x


def test_decorator_form_re_records_each_trip_count():
    for x in (0.5, 3.0, 10.0, 0.9, 7.0):
        assert halvings(x) == (x / 2.0 ** max(0, int(np.ceil(np.log2(x))))) ** 2
    assert halvings.stats()["recordings"] == 4 and "optimize" in halvings.stats()


# --------------------------------------------------------------------------- array rows
W = tg.tensor(np.linspace(-1.0, 1.0, 12).reshape(3, 4), requires_grad=True)


def with_arrays(x):
    unused = tg.exp(x[0]), tnp.sum(tnp.exp(W * 2.0))  # a scalar row and array rows nothing reads
    hidden = tnp.tanh(W @ (x * 2.0))  # scalar rows packed into an array
    assert unused is not None
    return tnp.sum(hidden * hidden) + x[0] * x[1] + x[0] * x[1] + tnp.sum(W * 0.5)


def test_array_rows_are_optimized_with_their_operands_renumbered():
    x = np.array([0.3, -0.2, 0.9, 0.4])
    plain = tg.compile(with_arrays)
    for passes in (EXACT, True):
        cf = tg.compile(with_arrays, optimize=passes)
        assert_replays_agree(plain, cf, x, exact_gradients=passes == EXACT, scalar=True)
        variant = checked(cf, x)
        report = cf.stats()["optimize"]
        assert report["removed"]["dce"] == 4  # exp(x[0]), W * 2.0, its exp, their sum
        assert variant.array_slots == checked(plain, x).array_slots - 24
        if passes is True:
            assert report["merged"] == 1
        points = np.random.default_rng(3).uniform(-1.0, 1.0, (6, 4))  # replayed in parallel
        assert same_bits(cf.batch_grad(points), np.array([cf.grad(p) for p in points]))
    # W is an input of the tape, read at each call
    assert W.grad is None and np.all(np.isfinite(cf.grad(x)))


def test_a_tape_whose_array_rows_are_all_dead_replays_without_them():
    def f(x):
        unused = tnp.sum(W * W)
        assert unused is not None
        return x[0] * x[1]

    cf = tg.compile(f, optimize=True)
    x = np.array([2.0, 3.0])
    assert cf(x) == 6.0 and list(cf.grad(x)) == [3.0, 2.0]
    assert checked(cf, x).has_arrays  # W is still an input (an array row): the layout holds


# --------------------------------------------------------------------------- save and load
def test_save_and_load_an_optimized_function(tmp_path):
    cf = tg.compile(with_arrays, optimize=True)
    x = np.array([0.3, -0.2, 0.9, 0.4])
    cf(x)
    path = str(tmp_path / "optimized.npz")
    cf.save(path)
    loaded = tg.load(path)  # validated by the loader
    y = np.array([-0.5, 0.1, 0.2, 0.7])
    assert same_bits(loaded(y), cf(y)) and same_bits(loaded.grad(y), cf.grad(y))
    assert same_bits(loaded.hvp(y, x), cf.hvp(y, x))


def test_listing_and_anomaly_sources_follow_the_optimized_rows():
    def f(x):
        unused = tg.exp(x) * 2.0  # rows before the log's: its row number changes
        assert unused is not None
        return x * x + tg.log(x)

    with tg.detect_anomaly():
        cf = tg.compile(f, optimize=True)
        assert cf(1.0) == 1.0
        with pytest.raises(tg.AnomalyError, match=r"return x \* x \+ tg.log\(x\)"):
            cf(-1.0)  # replayed: log(-1.0) is NaN
    listing = cf.tape.listing()
    assert "input #0" in listing and "from another tape" not in listing


# --------------------------------------------------------------------------- random programs
USABLE = [s for s in OPS if s.name not in ("where_then", "where_else")]
numbers = st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, -1.5, 3.0, 0.25])


@st.composite
def programs(draw):
    """Inputs, and steps (op name, operands, params): operands are earlier values (ints) or constants;
    some steps repeat an earlier one (a common subexpression)."""
    n_inputs = draw(st.integers(1, 3))
    inputs = draw(st.lists(st.floats(-2.0, 2.0, allow_subnormal=False), min_size=n_inputs,
                           max_size=n_inputs))
    steps: list = []
    for k in range(draw(st.integers(1, 40))):
        if steps and draw(st.integers(0, 3)) == 0:
            steps.append(steps[draw(st.integers(0, len(steps) - 1))])
            continue
        spec = draw(st.sampled_from(USABLE))
        operand = st.one_of(st.integers(0, n_inputs + k - 1), numbers)
        args = [draw(st.integers(0, n_inputs + k - 1))]
        if spec.arity == 2:
            args.append(draw(operand))
            if draw(st.booleans()):
                args.reverse()
        params = sorted(draw(st.lists(numbers, min_size=2, max_size=2))) if spec.params else []
        steps.append((spec.name, args, params))
    outputs = draw(st.lists(st.integers(0, n_inputs + len(steps) - 1), min_size=1, max_size=4))
    return np.array(inputs), steps, outputs


def interpret(steps, outputs, scalar):
    """The function a program describes (its values not in `outputs` are dead)."""

    def f(x):
        values = list(x)
        for name, args, params in steps:
            values.append(APPLY[name](*[values[a] if isinstance(a, int) else a for a in args], *params))
        chosen = [values[k] * 1.0 for k in outputs]
        return sum(chosen[1:], chosen[0]) if scalar else chosen

    return f


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.sampled_from([EXACT, True]), st.booleans())
def test_random_programs_replay_as_the_plain_tape(program, passes, scalar):
    x, steps, outputs = program
    note(f"{len(steps)} steps, outputs {outputs}")
    f = interpret(steps, outputs, scalar)
    plain = tg.compile(f)
    with patch.object(tape_passes, "REORDER_ABOVE", -1.0):  # reorder every tape
        optimized = tg.compile(f, optimize=passes)
        assert_replays_agree(plain, optimized, x, exact_gradients=passes == EXACT, scalar=scalar)
    variant = checked(optimized, x)
    assert unread_rows(variant) == 0
    if passes is True:
        assert not repeated_rows(variant)


@st.composite
def raw_tapes(draw):
    """Hand-made tapes: input and const rows, ops on rows and constants (constant operands as
    rows too, for fold), repeated rows, guards that hold, several outputs."""
    n_inputs = draw(st.integers(1, 3))
    rows: list[tuple] = [("input",)] * n_inputs
    for _ in range(draw(st.integers(1, 40))):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            rows.append(("const", draw(numbers)))
        elif choice == 1:
            rows.append(rows[draw(st.integers(n_inputs, len(rows) - 1))] if len(rows) > n_inputs
                        else ("const", 1.0))
        else:
            spec = draw(st.sampled_from(USABLE))
            row = st.integers(0, len(rows) - 1)
            args = [draw(row)] + ([draw(st.one_of(row, numbers))] if spec.arity == 2 else [])
            if len(args) == 2 and draw(st.booleans()):
                args.reverse()
            params = sorted(draw(st.lists(numbers, min_size=2, max_size=2))) if spec.params else []
            rows.append((spec.name, *args, *params))
    outputs = draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=4))
    return rows, outputs, draw(st.lists(st.integers(0, len(rows) - 1), max_size=3))


@settings(max_examples=150, deadline=None)
@given(raw_tapes(), st.floats(-2.0, 2.0, allow_subnormal=False), st.sampled_from([EXACT, tape_passes.PASSES]))
def test_random_hand_made_tapes_replay_as_the_plain_tape(tape, start, passes):
    rows, outputs, guarded = tape
    n_inputs = sum(row == ("input",) for row in rows)
    x = start + np.arange(n_inputs) * 0.37
    # guards on some rows, each recorded with the truth it has at x (so they hold there)
    values = replayer(hand_made(rows, list(range(len(rows)))))._replay((x,))[1]
    rows = rows + [("guard", r, bool(values[r] != 0.0)) for r in guarded]
    for out in ([outputs[0]], outputs):
        variant = hand_made(rows, out)
        with patch.object(tape_passes, "REORDER_ABOVE", -1.0):  # reorder every tape
            optimized, report = tape_passes.optimize(variant, passes)
        _check_variant(optimized, "optimized", n_inputs)
        assert unread_rows(optimized) == 0
        assert report.rows_after == optimized.rows <= variant.rows
        assert_replays_agree(replayer(variant), replayer(optimized), x, exact_gradients=passes == EXACT,
                             scalar=len(out) == 1)
