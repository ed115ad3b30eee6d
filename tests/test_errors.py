"""A catalogue of bad inputs: each ends in a Python exception of the right type whose message names
the op, the shapes or dtypes, or the argument; and after each, the same process still computes
correct gradients (eager, functional and compiled)."""

import math
import re

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad.compiled import FORMAT_VERSION, _Entry
from tapegrad.nn import functional as F


def A(*shape: int, requires_grad: bool = True):
    """An array tensor 1, 2, ... of `shape` (default (2, 3))."""
    shape = shape or (2, 3)
    return tg.tensor(np.arange(1.0, 1.0 + math.prod(shape)).reshape(shape), requires_grad=requires_grad)


def S(v: float = 2.0):
    return tg.tensor(v, requires_grad=True)


def _twice(make):
    y = make()
    y.backward()
    y.backward()


def _compiled_then(first, second):
    cf = tg.compile(lambda x: (x * x).sum())
    cf.grad(first)
    cf.grad(second)


def _step_after_read():
    w = A(2)
    (w * w).sum().backward()
    y = (w * w).sum()
    tg.optim.SGD([w], lr=0.1).step()  # updates w in place: y's graph read the old w
    y.backward()


def _save_load(tmp_path, corrupt):
    cf = tg.compile(lambda x: (x * x).sum())
    cf.grad(np.ones(3))
    path = str(tmp_path / "tape.npz")
    cf.save(path)
    data = dict(np.load(path))
    corrupt(data)
    np.savez(path, **data)
    tg.load(path).grad(np.ones(3))


# (id, the bad call, the exception, a pattern its message must contain)
EAGER = [
    ("broadcast add", lambda: A(2, 3) + A(4), ValueError, r"add: .*\(2, 3\) and \(4,\)"),
    ("broadcast mul", lambda: A(3) * A(2, 2), ValueError, r"mul: .*\(3,\) and \(2, 2\)"),
    ("broadcast where", lambda: tg.where(np.array([True, False, True]), A(2), A(2)), ValueError, r"\(3,\)"),
    ("matmul inner", lambda: A(2, 3) @ A(4, 2), ValueError, r"matmul: .*\(2, 3\) and \(4, 2\)"),
    ("matmul 0-d", lambda: A(2) @ S(), ValueError, r"matmul: .*\(\)"),
    ("matmul batch", lambda: A(2, 2, 3) @ A(3, 3, 2), ValueError, r"matmul"),
    ("linear features", lambda: tg.nn.Linear(3, 4)(A(2, 5)), ValueError, r"linear: .*\(2, 5\).*\(4, 3\)"),
    ("sum axis", lambda: A(2, 3).sum(axis=5), IndexError, r"sum: .*5"),
    ("sum repeated axis", lambda: tnp.sum(A(2, 3), axis=(0, 0)), ValueError, r"sum: .*repeated"),
    ("mean axis", lambda: A(2, 3).mean(axis=-3), IndexError, r"mean|sum"),
    ("max axis", lambda: tnp.max(A(2, 3), axis=2), IndexError, r"2"),
    ("softmax dim", lambda: F.softmax(A(2, 3), dim=4), IndexError, r"4"),
    ("logsumexp axis", lambda: tnp.logsumexp(A(2, 3), axis=3), IndexError, r"3"),
    ("index bound", lambda: A(2, 3)[5], IndexError, r"index 5 .*size 2"),
    ("index negative bound", lambda: A(2, 3)[:, -4], IndexError, r"-4"),
    ("too many indices", lambda: A(2, 3)[0, 0, 0], IndexError, r"too many indices"),
    ("float index", lambda: A(2, 3)[0.5], IndexError, r"only integers"),
    ("string index", lambda: A(2, 3)["a"], IndexError, r"only integers"),
    ("integer array index bound", lambda: A(4)[np.array([0, 9])], IndexError, r"9"),
    ("mask shape", lambda: A(4)[np.array([True, False])], IndexError, r"boolean|mask|shape"),
    ("reshape size", lambda: A(2, 3).reshape(4, 2), ValueError, r"reshape: .*\(4, 2\).*6"),
    ("permute axes", lambda: tnp.transpose(A(2, 3), (0, 2)), IndexError, r"2"),
    (
        "concatenate shapes",
        lambda: tnp.concatenate([A(2, 3), A(3, 2)]),
        ValueError,
        r"concatenate: .*\(2, 3\)",
    ),
    ("stack shapes", lambda: tnp.stack([A(2), A(3)]), ValueError, r"stack|shape"),
    ("strings", lambda: tg.tensor(["a", "b"]), TypeError, r"dtype <U1"),
    ("objects", lambda: tg.tensor(np.array([object()], dtype=object)), TypeError, r"dtype object"),
    ("complex array", lambda: tg.tensor(np.array([1 + 2j])), TypeError, r"complex128"),
    ("complex number", lambda: tg.tensor(1 + 2j), TypeError, r"complex"),
    ("None data", lambda: tg.tensor(None), TypeError, r"NoneType"),
    ("ragged list", lambda: tg.tensor([[1.0, 2.0], [3.0]]), TypeError, r"tensor"),
    ("int requires grad", lambda: tg.tensor(3, requires_grad=True), RuntimeError, r"floating point .*int64"),
    ("int array requires grad", lambda: tg.tensor([1, 2], requires_grad=True), RuntimeError, r"int64"),
    ("bool requires grad", lambda: tg.tensor(True, requires_grad=True), RuntimeError, r"bool"),
    ("array plus string", lambda: A(2) + "a", TypeError, r"add: .*<U1"),
    ("array times strings", lambda: A(2) * ["a", "b"], TypeError, r"mul: .*<U1"),
    ("scalar plus None", lambda: S() + None, TypeError, r"add: .*NoneType"),
    ("scalar times string", lambda: S() * "a", TypeError, r"mul: .*str"),
    ("exp of a string", lambda: tg.exp("a"), TypeError, r"exp: .*str"),
    ("Value of a string", lambda: tg.Value("a"), TypeError, r"Value: .*str"),
    ("Value plus string", lambda: tg.Value(1.0) + "a", TypeError, r"add: .*str"),
    ("clamp without bounds", lambda: tg.clamp(A(2)), ValueError, r"clamp: .*min.*max"),
    (
        "gradient shape",
        lambda: (A(2, 3) * 2).backward(gradient=np.ones(3)),
        RuntimeError,
        r"\(3,\).*\(2, 3\)",
    ),
    (
        "gradient of scalar shape",
        lambda: (S() * 2).backward(gradient=np.ones(2)),
        RuntimeError,
        r"\(2,\).*\(\)",
    ),
    ("gradient strings", lambda: (A(2) * 2).backward(gradient=["a", "b"]), (TypeError, ValueError), r"."),
    ("implicit gradient", lambda: (A(2, 3) * 2).backward(), RuntimeError, r"only for scalar outputs"),
    ("backward twice", lambda: _twice(lambda: (A(2) * A(2)).sum()), RuntimeError, r"second time"),
    ("scalar backward twice", lambda: _twice(lambda: S() * S()), RuntimeError, r"second time"),
    ("backward without grad", lambda: tg.tensor(2.0).backward(), RuntimeError, r"does not require grad"),
    (
        "backward of data",
        lambda: (A(requires_grad=False) * 2).sum().backward(),
        RuntimeError,
        r"does not require grad",
    ),
    ("backward in no_grad", lambda: _no_grad_backward(), RuntimeError, r"does not require grad"),
    (
        "autograd.grad unused",
        lambda: tg.autograd.grad((A(2) * 2).sum(), [A(2)]),
        RuntimeError,
        r"not have been used.*allow_unused",
    ),
    ("step after the graph read it", _step_after_read, RuntimeError, r"modified by an inplace operation"),
    ("retain_grad without grad", lambda: tg.tensor(1.0).retain_grad(), RuntimeError, r"requires_grad=False"),
    ("requires_grad off a non-leaf", lambda: (A(2) * 2).requires_grad_(False), RuntimeError, r"leaf"),
    ("numpy of a tensor needing grad", lambda: A(2).numpy(), RuntimeError, r"detach"),
    ("item of many elements", lambda: A(2).item(), ValueError, r"2 elements"),
    (
        "cross entropy class",
        lambda: F.cross_entropy(A(2, 3), np.array([0, 5])),
        IndexError,
        r"target 5 .*3 classes",
    ),
    (
        "cross entropy shapes",
        lambda: F.cross_entropy(A(2, 3), np.array([0, 1, 2])),
        ValueError,
        r"\(2, 3\) and \(3,\)",
    ),
    ("mse shapes", lambda: F.mse_loss(A(2, 3), A(3, 2)), ValueError, r"mse_loss: .*\(2, 3\).*\(3, 2\)"),
    ("SGD without parameters", lambda: tg.optim.SGD([], lr=0.1), ValueError, r"SGD: .*empty"),
    ("SGD learning rate", lambda: tg.optim.SGD([A(2)], lr=-1.0), ValueError, r"SGD: .*-1.0"),
    ("Adam betas", lambda: tg.optim.Adam([A(2)], betas=(1.5, 0.9)), ValueError, r"Adam: .*1.5"),
]

FUNCTIONAL = [
    (
        "grad of a vector",
        lambda: tg.grad(lambda x: x * 2)(np.ones(3)),
        TypeError,
        r"scalar, got shape \(3,\)",
    ),
    ("grad of a string result", lambda: tg.grad(lambda x: "a")(np.ones(3)), TypeError, r"grad: .*str"),
    ("grad at a string", lambda: tg.grad(lambda x: x * 2)("abc"), TypeError, r"argument 0"),
    ("grad at strings", lambda: tg.grad(lambda x: x.sum())(["a", "b"]), TypeError, r"argument 0"),
    ("grad at complex", lambda: tg.grad(lambda x: (x * x).sum())(np.array([1j])), TypeError, r"argument 0"),
    (
        "grad argnums",
        lambda: tg.grad(lambda x: x.sum(), argnums=3)(np.ones(3)),
        ValueError,
        r"argnums 3 .*1 arg",
    ),
    (
        "vjp cotangent",
        lambda: tg.vjp(lambda x: x * 2, np.ones(3))[1](np.ones(4)),
        ValueError,
        r"vjp: .*\(4,\).*\(3,\)",
    ),
    (
        "jacobian argnums",
        lambda: tg.jacobian(lambda x: x * 2, argnums=2)(np.ones(3)),
        ValueError,
        r"argnums 2",
    ),
]

COMPILED = [
    (
        "compiled strings",
        lambda: tg.compile(lambda x: (x * x).sum()).grad(["a", "b"]),
        TypeError,
        r"tg.compile: argument 0 .*list",
    ),
    (
        "compiled complex",
        lambda: tg.compile(lambda x: (x * x).sum()).grad(np.array([1j])),
        TypeError,
        r"argument 0 .*complex128",
    ),
    ("compiled None", lambda: tg.compile(lambda x: x * 2)(None), TypeError, r"argument 0"),
    (
        "compiled grad of a vector",
        lambda: tg.compile(lambda x: x * 2).grad(np.ones(3)),
        ValueError,
        r"grad: .*shape \(3,\)",
    ),
    (
        "compiled float() of a traced value",
        lambda: tg.compile(lambda x: float(x[0]))(np.ones(3)),
        tg.TracingError,
        r"float\(\) of a traced value",
    ),
    (
        "compiled item()",
        lambda: tg.compile(lambda x: x[0].item())(np.ones(3)),
        tg.TracingError,
        r"\.item\(\)",
    ),
    (
        "compiled string result",
        lambda: tg.compile(lambda x: "s")(np.ones(3)),
        TypeError,
        r"must return .*str",
    ),
    (
        "compiled hvp direction",
        lambda: tg.compile(lambda x: (x * x).sum()).hvp(np.ones(3), np.ones(4)),
        ValueError,
        r"hvp: v has shape \(4,\).*\(3,\)",
    ),
    (
        "compiled vjp cotangent",
        lambda: tg.compile(lambda x: x * 2).vjp((np.ones(3),), np.ones(4)),
        ValueError,
        r"vjp: .*\(4,\).*\(3,\)",
    ),
    (
        "compiled jvp tangents",
        lambda: tg.compile(lambda x: x * 2).jvp((np.ones(3),), (np.ones(4),)),
        ValueError,
        r"jvp: .*\(4,\).*\(3,\)",
    ),
    (
        "compiled jvp count",
        lambda: tg.compile(lambda x: x * 2).jvp((np.ones(3),), ()),
        ValueError,
        r"jvp: 1 arg",
    ),
    (
        "compiled batch of a vector f",
        lambda: tg.compile(lambda x: x * 2).batch_grad(np.ones((4, 3))),
        ValueError,
        r"batch_grad: .*shape \(3,\)",
    ),
    ("load a missing file", lambda: tg.load("/nonexistent/tape.npz"), ValueError, r"tg.load: .*not a saved"),
]


def _no_grad_backward():
    with tg.no_grad():
        y = (A(2) * 2).sum()
    y.backward()


CASES = EAGER + FUNCTIONAL + COMPILED


def _still_correct() -> None:
    """Eager, functional and compiled gradients of x0^2 x1 + sin(x2) are right."""
    v = np.array([1.5, -2.0, 0.3])
    expected = np.array([2 * v[0] * v[1], v[0] ** 2, math.cos(v[2])])
    x = tg.tensor(v, requires_grad=True)
    (x[0] ** 2 * x[1] + tg.sin(x[2])).backward()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-14)
    f = lambda t: t[0] ** 2 * t[1] + tg.sin(t[2])  # noqa: E731
    np.testing.assert_allclose(tg.grad(f)(v), expected, rtol=1e-14)
    np.testing.assert_allclose(tg.compile(f).grad(v), expected, rtol=1e-14)
    a, b = tg.Value(2.0), tg.Value(3.0)
    (a * b + a).backward()
    assert (a.grad, b.grad) == (4.0, 2.0)


def test_the_catalogue_is_large():
    assert len(CASES) + len(CORRUPT) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(call, error, pattern):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert re.search(pattern, message), message
    assert "numba" not in message.lower() and "Traceback" not in message
    _still_correct()


CORRUPT = [
    (
        "future format version",
        lambda d: d.__setitem__(
            "header", np.array(str(d["header"]).replace(f'"version": {FORMAT_VERSION}', '"version": 99'))
        ),
        r"version",
    ),
    (
        "opcode out of range",
        lambda d: d.__setitem__(
            next(k for k in d if k.endswith("_op")),
            np.full_like(d[next(k for k in d if k.endswith("_op"))], 250),
        ),
        r"opcode|op",
    ),
    (
        "operand out of range",
        lambda d: d.__setitem__(
            next(k for k in d if k.endswith("_a")),
            np.full_like(d[next(k for k in d if k.endswith("_a"))], 10**6),
        ),
        r"operand|slot|corrupt",
    ),
    (
        "missing array",
        lambda d: d.pop(next(k for k in d if k.endswith("_b"))),
        r"missing|corrupt|not a saved",
    ),
    (
        "wrong dtype",
        lambda d: d.__setitem__(
            next(k for k in d if k.endswith("_op")),
            d[next(k for k in d if k.endswith("_op"))].astype(np.float64),
        ),
        r"dtype|corrupt",
    ),
]


@pytest.mark.parametrize("corrupt, pattern", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupted_tape(tmp_path, corrupt, pattern):
    with pytest.raises(ValueError) as info:
        _save_load(tmp_path, corrupt)
    assert re.search(pattern, str(info.value), re.IGNORECASE), str(info.value)
    _still_correct()


def test_new_rank_records_again():
    """A compiled function called with another rank records a tape for it (no error)."""
    cf = tg.compile(lambda x: (x * x).sum())
    np.testing.assert_allclose(cf.grad(np.ones(3)), 2.0 * np.ones(3))
    np.testing.assert_allclose(cf.grad(np.full((2, 2), 3.0)), np.full((2, 2), 6.0))
    assert cf.stats()["signatures"] == 2


def test_nan_and_inf_inputs_follow_ieee():
    """No exception unless asked: NaN and inf propagate through a replay as IEEE says."""
    cf = tg.compile(lambda x: (x * x).sum())
    value, grad = cf.value_and_grad(np.array([np.nan, 1.0]))
    assert math.isnan(value) and math.isnan(grad[0]) and grad[1] == 2.0
    value, grad = tg.compile(lambda x: tnp.exp(tnp.asarray(x)).sum()).value_and_grad(np.array([np.inf, 0.0]))
    assert value == math.inf and grad[0] == math.inf and grad[1] == 1.0
    _still_correct()


def test_loading_reads_the_side_table_in_place():
    """Loading checks each array row against the side table from its entry on: without copying
    the rest of the table per row (quadratic in the tape), read as the list slice would be."""
    items = list(range(100, 120))
    for start in (0, 7, 20):
        entry, copy = _Entry(items, start), items[start:]
        assert len(entry) == len(copy) and bool(entry) == bool(copy)
        assert [entry[k] for k in range(len(copy))] == copy
        for lo, hi in ((0, 3), (2, 9), (5, 50)):
            assert entry[lo:hi] == copy[lo:hi] and entry[:hi] == copy[:hi]
            assert list(entry[lo:]) == copy[lo:] and list(entry[lo:][1:4]) == copy[lo:][1:4]
        with pytest.raises(IndexError):
            entry[len(copy)]
