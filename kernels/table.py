"""The op table: every op tapegrad records, in one place.

Each row gives an op's name, arity, forward formula and partial derivatives as expressions in
``x`` (first operand), ``y`` (second operand), ``z`` (the op's result) and ``p0``/``p1`` (constant
parameters from the pool). Everything else is derived from these rows:

* the Numba sweeps (forward replay, reverse, tangent) are generated from the formulas
  (:mod:`kernels.codegen`);
* the eager recorder evaluates ``fwd`` in Python (:mod:`kernels.pyeval`);
* the tests walk the whole table against finite differences and torch;
* a binary op gets three opcodes: variable-variable, variable-constant and
  constant-variable, so ``x * 2.0`` and ``2.0 ** x`` cost one row and no partial is computed
  for a constant.

Formulas may call the functions of :mod:`math` and of :mod:`kernels.scalar_math`.
Conventions at kinks follow torch (float64); ``kink`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OpSpec:
    """One row of the op table."""

    name: str
    arity: int  # number of tape operands (1 or 2); 0 for structural rows
    fwd: str
    dx: str = "0.0"
    dy: str = "0.0"
    # second partials (for Hessian-vector products, forward-over-reverse)
    dxx: str = "0.0"
    dxy: str = "0.0"
    dyy: str = "0.0"
    params: int = 0  # constant parameters read from the pool at operand b (unary ops only)
    differentiable: bool = True
    kink: str = ""  # convention at non-differentiable points, for docs and tests
    torch: str = ""  # torch expression for oracle tests, in x, y, p0, p1 (torch as ``torch``)
    domain: tuple[float, float] = (-2.0, 2.0)  # where tests sample ordinary points
    kinks: tuple[tuple[float, ...], ...] = field(default_factory=tuple)  # points tested at kinks
    symbol: str = ""  # infix symbol for listings (``+``), empty for function-style ops
    # operands ("x", "y") whose partial is a selection: where it is exactly 0 the row passes
    # nothing, not even a NaN or inf adjoint (torch's where/masked_fill rules)
    masked: str = ""
    integer: bool = False  # on integer operands, an integer result (unrecorded ops, like torch)
    # the forward on NumPy arrays, where evaluating `fwd` with NumPy's functions does not do it
    array: str = ""
    # values of a constant operand y that get a loop of their own in the array kernels, with y a
    # literal there: the formulas' branches on y fold away and the loop vectorizes
    literal_y: tuple[float, ...] = ()

    @property
    def boolean(self) -> bool:
        """A comparison: its value is a bool (1.0/0.0 on the tape)."""
        return self.fwd.startswith("truth(")

    @property
    def saves(self) -> bool:
        """Whether the reverse rule reads values saved in the forward pass (torch's 'saved tensors')."""
        return any(v in _names(f) for f in (self.dx, self.dy) for v in ("x", "y", "z"))


def _names(expr: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", expr))


# Structural rows: the leaves of a tape.
INPUT = OpSpec("input", 0, "inputs[a]", differentiable=False)  # a = index of the input
CONST = OpSpec("const", 0, "consts[a]", differentiable=False)  # a = index in the constant pool
GUARD = OpSpec("guard", 0, "b", differentiable=False)  # asserts truth(vals[a]) == b

_TIE = "ties split the gradient evenly"

OPS: tuple[OpSpec, ...] = (
    OpSpec("add", 2, "x + y", dx="1.0", dy="1.0", symbol="+", torch="x + y", integer=True,
    ),
    OpSpec("sub", 2, "x - y", dx="1.0", dy="-1.0", symbol="-", torch="x - y", integer=True,
    ),
    OpSpec("mul", 2, "x * y", dx="y", dy="x", dxy="1.0", symbol="*", torch="x * y", integer=True,
    ),
    OpSpec(
        "div", 2, "x / y", dx="1.0 / y", dy="-z / y",
        dxy="-1.0 / (y * y)", dyy="2.0 * z / (y * y)", symbol="/", torch="x / y",
        kinks=((1.0, 0.0),),
    ),
    OpSpec(
        "pow", 2, "power(x, y)", dx="pow_dx(x, y)", dy="pow_dy(x, y, z)",
        dxx="pow_dxx(x, y)", dxy="pow_dxy(x, y)", dyy="pow_dyy(x, y, z)", symbol="**", masked="x",
        torch="x ** y", domain=(0.2, 2.0),
        kink="d(x**0)/dx = 0; d(0**y)/dy = 0 for y >= 0", literal_y=(2.0, 3.0, 0.5, -1.0, -2.0, -0.5),
        kinks=((0.0, 0.0), (2.0, 0.0), (0.0, 2.0), (0.0, 0.5), (-1.5, 2.0)),
    ),
    OpSpec("neg", 1, "-x", dx="-1.0", torch="-x", integer=True,
    ),
    OpSpec("exp", 1, "exp(x)", dx="z", dxx="z", torch="torch.exp(x)"),
    OpSpec(
        "log", 1, "log(x)", dx="1.0 / x", dxx="-1.0 / (x * x)", torch="torch.log(x)", domain=(0.1, 3.0),
        kinks=((0.0,),),
    ),
    OpSpec("log1p", 1, "log1p(x)", dx="1.0 / (1.0 + x)",
        dxx="-1.0 / ((1.0 + x) * (1.0 + x))", torch="torch.log1p(x)", domain=(-0.9, 3.0)),
    OpSpec("expm1", 1, "expm1(x)", dx="z + 1.0", dxx="z + 1.0", torch="torch.expm1(x)"),
    OpSpec(
        "sqrt", 1, "sqrt(x)", dx="0.5 / z",
        dxx="-0.25 / (z * z * z)", torch="torch.sqrt(x)", domain=(0.1, 3.0),
        kink="sqrt'(0) = inf", kinks=((0.0,),),
    ),
    OpSpec("sin", 1, "sin(x)", dx="cos(x)", dxx="-z", torch="torch.sin(x)"),
    OpSpec("cos", 1, "cos(x)", dx="-sin(x)", dxx="-z", torch="torch.cos(x)"),
    OpSpec("tan", 1, "tan(x)", dx="1.0 + z * z",
        dxx="2.0 * z * (1.0 + z * z)", torch="torch.tan(x)", domain=(-1.2, 1.2)),
    OpSpec(
        "asin", 1, "asin(x)", dx="1.0 / sqrt(1.0 - x * x)",
        dxx="x / ((1.0 - x * x) * sqrt(1.0 - x * x))", torch="torch.asin(x)",
        domain=(-0.9, 0.9),
    ),
    OpSpec(
        "acos", 1, "acos(x)", dx="-1.0 / sqrt(1.0 - x * x)",
        dxx="-x / ((1.0 - x * x) * sqrt(1.0 - x * x))", torch="torch.acos(x)",
        domain=(-0.9, 0.9),
    ),
    OpSpec("atan", 1, "atan(x)", dx="1.0 / (1.0 + x * x)",
        dxx="-2.0 * x / ((1.0 + x * x) * (1.0 + x * x))", torch="torch.atan(x)"),
    OpSpec("sinh", 1, "sinh(x)", dx="cosh(x)", dxx="z", torch="torch.sinh(x)"),
    OpSpec("cosh", 1, "cosh(x)", dx="sinh(x)", dxx="z", torch="torch.cosh(x)"),
    OpSpec("tanh", 1, "tanh(x)", dx="1.0 - z * z", dxx="-2.0 * z * (1.0 - z * z)", torch="torch.tanh(x)"),
    OpSpec("sigmoid", 1, "sigmoid(x)", dx="z * (1.0 - z)",
        dxx="z * (1.0 - z) * (1.0 - 2.0 * z)", torch="torch.sigmoid(x)"),
    OpSpec(
        "relu", 1, "relu(x)", dx="step(x)", torch="torch.relu(x)", masked="x",
        kink="relu'(0) = 0", kinks=((0.0,),),
    ),
    OpSpec(
        "abs", 1, "fabs(x)", dx="sign(x)", torch="torch.abs(x)",
        kink="abs'(0) = 0", kinks=((0.0,),),
    ),
    OpSpec(
        "erf", 1, "erf(x)", dx="1.1283791670955126 * exp(-x * x)",
        dxx="-2.2567583341910252 * x * exp(-x * x)", torch="torch.erf(x)",
    ),
    OpSpec(
        "clamp", 1, "clamp(x, p0, p1)", dx="inside(x, p0, p1)", params=2, masked="x",
        torch="torch.clamp(x, p0, p1)", kink="the boundaries get gradient 1",
        kinks=((-0.5,), (0.5,)), integer=True,
    ),
    OpSpec(
        "maximum", 2, "maximum(x, y)", dx="tie_split(x, y)", dy="tie_split(y, x)", masked="xy",
        torch="torch.maximum(x, y)", kink=_TIE, kinks=((1.0, 1.0),), integer=True,
    ),
    OpSpec(
        "minimum", 2, "minimum(x, y)", dx="tie_split(y, x)", dy="tie_split(x, y)", masked="xy",
        torch="torch.minimum(x, y)", kink=_TIE, kinks=((1.0, 1.0),), integer=True,
    ),
    OpSpec(
        "atan2", 2, "atan2(x, y)", dx="atan2_dx(x, y)", dy="atan2_dx(y, -x)",
        dxx="atan2_dxx(x, y)", dxy="atan2_dxy(x, y)", dyy="-atan2_dxx(x, y)",
        torch="torch.atan2(x, y)", kink="gradient 0 where x*x + y*y is 0", kinks=((0.0, 0.0),),
    ),
    # The identity without a gradient: what detach() records while tracing for tg.compile.
    OpSpec("stop_gradient", 1, "x", differentiable=False, torch="x.detach()"),
    # tg.where(c, x, y) records where_then(c, x) + where_else(c, y): selections, so the branch not
    # taken passes no gradient, not even NaN (c is the condition, 1.0/0.0, and gets none).
    OpSpec(
        "where_then", 2, "y if x != 0.0 else 0.0", dx="0.0", dy="truth(x != 0.0)", masked="xy",
        array="np.where(x != 0.0, y, 0.0)",
        torch="torch.where(x != 0, y, torch.zeros_like(y))", kinks=((0.0, 1.5), (1.0, 1.5)),
    ),
    OpSpec(
        "where_else", 2, "0.0 if x != 0.0 else y", dx="0.0", dy="truth(x == 0.0)", masked="xy",
        array="np.where(x != 0.0, 0.0, y)",
        torch="torch.where(x != 0, torch.zeros_like(y), y)", kinks=((0.0, 1.5), (1.0, 1.5)),
    ),
    # Comparisons: values 1.0/0.0, no gradient. Converting one to a Python bool records a guard.
    OpSpec("lt", 2, "truth(x < y)", symbol="<", differentiable=False, torch="x < y"),
    OpSpec("le", 2, "truth(x <= y)", symbol="<=", differentiable=False, torch="x <= y"),
    OpSpec("gt", 2, "truth(x > y)", symbol=">", differentiable=False, torch="x > y"),
    OpSpec("ge", 2, "truth(x >= y)", symbol=">=", differentiable=False, torch="x >= y"),
    OpSpec("eq", 2, "truth(x == y)", symbol="==", differentiable=False, torch="x == y"),
    OpSpec("ne", 2, "truth(x != y)", symbol="!=", differentiable=False, torch="x != y"),
)

STRUCTURAL: tuple[OpSpec, ...] = (INPUT, CONST, GUARD)

# Rows of array ops. The tape's row holds ``array`` (or ``array_scalar`` when the result is 0-d, a
# scalar slot) with operand a = the op's entry j in the tape's array table, where its own code
# (an elementwise opcode of OPCODES or an ARRAY_OPS code), operand rows and metadata live.
ARRAY = OpSpec("array", 0, "", differentiable=False)
ARRAY_SCALAR = OpSpec("array_scalar", 0, "", differentiable=False)


@dataclass(frozen=True)
class ArrayOpSpec:
    """An array op that is not elementwise: its sweeps are kernels of :mod:`kernels.array_math`
    (``<name>_reverse``), its metadata described here."""

    name: str
    arity: int  # operand rows (x, then y)
    reads: str  # the values its reverse rule reads: of operands "x", "y", of its result "z"
    meta: str  # layout of its entry in the int side table
    # the operand tangents its second-order rule reads besides its reverse rule on the adjoint's
    # tangent (as dxx, dxy, dyy do for an elementwise op): "xy" = x's adjoint tangent reads y's
    curvature: tuple[str, ...] = ()

    @property
    def saves(self) -> bool:
        """Whether the reverse rule reads values saved in the forward pass."""
        return bool(self.reads)

    @property
    def operands(self) -> int:
        """Which operands are rows: bit 1 x, bit 2 y."""
        return (1 if self.arity >= 1 else 0) | (2 if self.arity == 2 else 0)

    @property
    def pushes(self) -> int:
        """The operand rows its reverse rule pushes adjoints to: every one."""
        return self.operands


ARRAY_OPS: tuple[ArrayOpSpec, ...] = (
    ArrayOpSpec("array_input", 0, "", "leaf data: inputs[x : x + size] of the tape's input vector"),
    ArrayOpSpec("array_const", 0, "", "data that needs no gradient: consts[x : x + size]"),
    ArrayOpSpec("pack", 0, "", "out[k] = vals[rows[k]]: scalar rows (size of them) as one array"),
    ArrayOpSpec(
        "matmul", 2, "xy", "batch, m, k, n, x and y batch strides (0: broadcast), y transposed", ("xy", "yx")
    ),
    # idx: an index map, strided (nd, offset, shape, strides) or explicit (-1, positions)
    ArrayOpSpec("gather", 1, "", "out[k] = x[idx[k]], idx over the output"),
    ArrayOpSpec("sum_into", 1, "", "out[idx[k]] += x[k], idx over the input"),
    ArrayOpSpec("amax_into", 1, "xz", "out[idx[k]] = max x[k], idx over the input; ties split"),
    ArrayOpSpec("amin_into", 1, "xz", "out[idx[k]] = min x[k], idx over the input; ties split"),
    ArrayOpSpec("prod_into", 1, "x", "out[idx[k]] *= x[k], idx over the input", ("xx",)),
    ArrayOpSpec(
        "log_softmax", 1, "z", "out[k] = x[k] - logsumexp of x[k]'s segment idx[k], idx over the input",
        ("xx",),
    ),
    # a user's op (tapegrad.custom): x is its operands' values, joined
    ArrayOpSpec(
        "custom", 1, "xz", "forward, vjp, jvp kernel addresses, op id, then the shapes they read", ("xx",)
    ),
    ArrayOpSpec(
        "logsumexp_into", 1, "xz", "out[idx[k]] = log of the sum of exp(x[k]), idx over the input", ("xx",)
    ),
    ArrayOpSpec(
        "cross_entropy", 1, "x", "n samples, c classes, reduction (0 none, 1 sum, 2 mean), the n targets: "
        "out = the losses logsumexp(x[i]) - x[i, target i], reduced", ("xx",),
    ),
    # concatenate: each operand's elements land in their places of the result (x's map, then y's)
    ArrayOpSpec("join", 2, "", "out[px[k]] = x[k], out[py[k]] = y[k]: an index map over each operand"),
)

BY_NAME: dict[str, OpSpec] = {s.name: s for s in OPS}

# Operand kinds of a binary op: both variables, a variable and a constant, a constant and a variable.
VV, VC, CV = "vv", "vc", "cv"


@dataclass(frozen=True)
class Opcode:
    """One opcode: an op of the table with its operand kinds."""

    code: int
    spec: OpSpec
    kind: str  # "vv", "vc", "cv" for binary ops; "v" for unary ops; "" for structural rows

    @property
    def reads_a(self) -> bool:
        """Operand a is a slot whose adjoint this row may update."""
        return self.kind in ("v", VV, VC)

    @property
    def reads_b(self) -> bool:
        return self.kind in (VV, CV)

    @property
    def operands(self) -> int:
        """Which operands are rows: bit 1 a, bit 2 b."""
        return int(self.reads_a) | (int(self.reads_b) << 1)

    @property
    def pushes(self) -> int:
        """The operand rows its reverse rule may push a nonzero adjoint to: bit 1 a, bit 2 b (a
        partial written 0.0, as a where's condition's, pushes nothing)."""
        a, b = self.reads_a and self.spec.dx != "0.0", self.reads_b and self.spec.dy != "0.0"
        return int(a) | (int(b) << 1)


def _assign_opcodes() -> tuple[Opcode, ...]:
    codes: list[Opcode] = []
    for spec in STRUCTURAL:
        codes.append(Opcode(len(codes), spec, ""))
    for spec in OPS:
        for kind in (VV, VC, CV) if spec.arity == 2 else ("v",):
            codes.append(Opcode(len(codes), spec, kind))
    for spec in (ARRAY, ARRAY_SCALAR):
        codes.append(Opcode(len(codes), spec, ""))
    assert len(codes) + len(ARRAY_OPS) < 254, "opcodes are stored in one byte, below RUN and RUN_END"
    return tuple(codes)


OPCODES: tuple[Opcode, ...] = _assign_opcodes()
CODE: dict[tuple[str, str], int] = {(o.spec.name, o.kind): o.code for o in OPCODES}
ARRAY_ROW = CODE[("array", "")]  # the first of the two opcodes of array rows
# Markers of a run of one opcode in the opcodes the replay sweeps take (kernels.runs): never
# recorded, saved or listed; they stand in the first and the last row of the run.
RUN, RUN_END = 254, 255
# The bytes of a reverse sweep's `live` (one per array row, see the sweeps' array_reverse): a block
# that may hold a nonzero adjoint, and an input row's block that holds values nobody pushed in this
# sweep (its first push assigns or zeroes it; the sweep's caller zeroes it if none comes). 0: zero.
REACHED, STALE = 1, 2
# Codes of the array ops that are not elementwise: after the opcodes, in the array table only.
ARRAY_CODE: dict[str, int] = {s.name: len(OPCODES) + k for k, s in enumerate(ARRAY_OPS)}
