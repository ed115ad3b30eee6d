"""Sparse Jacobians and Hessians: patterns from the tape, colorings, compressed sweeps."""

import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tapegrad as tg
import tapegrad.numpy as tnp
from tapegrad.recorder import APPLY

from .test_properties import programs


def objects(values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def banded(x, width=1):
    """A residual whose row i reads x[i - width : i + width + 1]: bandwidth `width`."""
    n = len(x)
    out = []
    for i in range(n):
        r = 3.0 * x[i] + tg.sin(x[i]) * x[i]
        for d in range(1, width + 1):
            if i - d >= 0:
                r = r - x[i - d] * tg.exp(0.1 * x[i])
            if i + d < n:
                r = r - x[i + d] ** 2
        out.append(r)
    return objects(out)


def chain_energy(x):
    """A scalar whose Hessian is tridiagonal."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + (x[i + 1] - x[i] ** 2) ** 2 * tg.cos(x[i]) + tg.log1p(x[i] ** 2)
    return s


def nonzero_pattern(matrix):
    return {tuple(ij) for ij in np.argwhere(matrix != 0)}


def sparse_pattern(pattern):
    return set(zip(pattern.rows.tolist(), pattern.cols.tolist()))


@pytest.mark.parametrize("width", [1, 2, 3])
def test_banded_jacobian_equals_dense_with_as_many_colors_as_the_widest_row(rng, width):
    cf = tg.compile(lambda x: banded(x, width))
    x = rng.uniform(-1, 1, 40)
    jac = cf.sparse_jacobian(x)
    assert isinstance(jac, scipy.sparse.csr_matrix) and jac.shape == (40, 40)
    dense = cf.jacobian(x)
    np.testing.assert_allclose(jac.toarray(), dense, rtol=1e-13, atol=0)
    pattern = cf.jacobian_sparsity(x)
    assert sparse_pattern(pattern) == nonzero_pattern(dense)
    assert pattern.max_row_degree == 2 * width + 1
    assert pattern.n_colors == pattern.max_row_degree == pattern.sweeps
    assert pattern.mode == "forward"
    assert cf.stats()["jacobian_sweeps"] == 2 * width + 1


def test_two_dimensional_stencil_jacobian(rng):
    from tapegrad.examples.bratu import residual

    n = 12
    cf = tg.compile(lambda u: residual(u, 6.0))
    u = rng.uniform(0, 1, n * n)
    pattern = cf.jacobian_sparsity(u)
    np.testing.assert_allclose(cf.sparse_jacobian(u).toarray(), cf.jacobian(u), rtol=1e-13)
    assert pattern.max_row_degree == 5
    assert 5 <= pattern.n_colors <= 8  # greedy in natural order: 7 on a large grid, 5 is optimal
    assert pattern.nnz == 5 * n * n - 4 * n


def test_the_bratu_example_converges_quadratically():
    from tapegrad.examples.bratu import solve

    result = solve(n=30, report=False)
    assert result["steps"] == 4 and result["residual"] < 1e-6
    assert 0.78 < result["u"].max() < 0.80  # max u of the lambda = 6 solution (0.797 on fine grids)
    assert result["pattern"].n_colors <= 8 and len(result["jacobian_seconds"]) == 4


def test_a_dense_row_makes_reverse_sweeps_the_cheaper_way(rng):
    def arrow(x):  # one output reads every input; the others one each
        return objects([sum(x[1:], x[0])] + [x[i] ** 2 for i in range(1, len(x))])

    cf = tg.compile(arrow)
    x = rng.uniform(-1, 1, 30)
    pattern = cf.jacobian_sparsity(x)
    assert pattern.mode == "reverse" and pattern.n_colors == 2
    np.testing.assert_array_equal(cf.sparse_jacobian(x).toarray(), cf.jacobian(x))
    rows, cols = pattern.structure()
    values = cf.jacobian_values(x)
    np.testing.assert_array_equal(values, cf.jacobian(x)[rows, cols])


def test_structure_and_values_line_up_for_solvers_that_take_them_apart(rng):
    cf = tg.compile(lambda x: banded(x, 1))
    x = rng.uniform(-1, 1, 10)
    rows, cols = cf.jacobian_sparsity(x).structure()
    assert np.all(np.diff(rows) >= 0) and len(rows) == 28
    np.testing.assert_allclose(cf.jacobian_values(x), cf.jacobian(x)[rows, cols], rtol=1e-13)


def test_argnums_other_arguments_and_captured_tensors_are_not_columns(rng):
    w = tg.tensor(rng.uniform(1, 2, 6), requires_grad=True)

    def f(x, y):
        return objects([x[i] * y[i] + w[i] * x[i] ** 2 for i in range(6)])

    cf = tg.compile(f)
    x, y = rng.uniform(-1, 1, 6), rng.uniform(-1, 1, 6)
    for argnums in (0, 1):
        jac = cf.sparse_jacobian(x, y, argnums=argnums)
        assert jac.shape == (6, 6)
        np.testing.assert_allclose(jac.toarray(), cf.jacobian(x, y, argnums=argnums), rtol=1e-13)
        assert cf.jacobian_sparsity(x, y, argnums=argnums).nnz == 6
    with pytest.raises(ValueError, match="argnums"):
        cf.sparse_jacobian(x, y, argnums=2)


def test_hessian_in_one_argument_of_several(rng):
    def f(x, y):
        return sum(x[i] * y[i] ** 2 + tg.sin(x[i] * x[(i + 1) % 5]) for i in range(5))

    cf = tg.compile(f)
    x, y = rng.uniform(-1, 1, 5), rng.uniform(-1, 1, 5)
    hy = cf.sparse_hessian(x, y, argnums=1).toarray()
    np.testing.assert_allclose(hy, np.diag(2 * x), rtol=1e-14)
    assert cf.hessian_sparsity(x, y, argnums=1).n_colors == 1
    hx = cf.sparse_hessian(x, y, argnums=0).toarray()
    dense = tg.compile(lambda x: f(x, y)).hessian(x)
    np.testing.assert_allclose(hx, dense, rtol=1e-13, atol=1e-15)
    assert cf.hessian_sparsity(x, y, argnums=0).nnz == 15  # a cyclic tridiagonal pattern


def test_outputs_that_read_no_input_have_empty_rows(rng):
    cf = tg.compile(lambda x: objects([x[0] * x[1], tg.tensor(2.0) * 3.0, 4.0, x[2]]))
    x = rng.uniform(-1, 1, 3)
    jac = cf.sparse_jacobian(x)
    np.testing.assert_array_equal(jac.toarray(), cf.jacobian(x))
    assert jac.nnz == 3 and np.all(jac.toarray()[1:3] == 0)


def test_array_rows_are_tracked_as_blocks_conservatively_and_correctly(rng):
    def f(x):  # records array rows: a pack of the traced scalars, then array ops
        v = tnp.asarray(list(x))
        return tnp.sin(v) * v[::-1] + tnp.sum(v**2)

    cf = tg.compile(f)
    x = rng.uniform(-1, 1, 5)
    pattern = cf.jacobian_sparsity(x)
    assert sparse_pattern(pattern) >= nonzero_pattern(cf.jacobian(x))
    np.testing.assert_allclose(cf.sparse_jacobian(x).toarray(), cf.jacobian(x), rtol=1e-13)

    ce = tg.compile(lambda x: tnp.sum(tnp.asarray(list(x)) ** 3) + x[0] * x[1])
    np.testing.assert_allclose(ce.sparse_hessian(x).toarray(), ce.hessian(x), rtol=1e-13)


def test_tridiagonal_hessian_three_hessian_vector_products(rng):
    cf = tg.compile(chain_energy)
    x = rng.uniform(-1, 1, 50)
    hess = cf.sparse_hessian(x)
    dense = cf.hessian(x)
    np.testing.assert_allclose(hess.toarray(), dense, rtol=1e-12, atol=1e-14)
    pattern = cf.hessian_sparsity(x)
    assert sparse_pattern(pattern) == nonzero_pattern(dense)
    assert pattern.n_colors == pattern.max_row_degree == 3
    lower = cf.hessian_sparsity(x, lower=True)
    assert lower.nnz == 50 + 49 and np.all(lower.rows >= lower.cols)
    np.testing.assert_allclose(cf.hessian_values(x, lower=True), dense[lower.rows, lower.cols], rtol=1e-12)


def test_hessian_patterns_follow_each_ops_second_partials(rng):
    x = rng.uniform(0.5, 1.5, 6)
    cases = {  # f, the entries the Hessian can have
        "linear": (lambda x: 2.0 * x[0] - x[1] + x[2] / 3.0, set()),
        "relu is piecewise linear": (lambda x: tg.relu(x[0] - x[1]) + abs(x[2]), set()),
        "product": (lambda x: x[0] * x[1], {(0, 1), (1, 0)}),
        "quotient": (lambda x: x[0] / x[1], {(0, 1), (1, 0), (1, 1)}),
        "constant over x": (lambda x: 2.0 / x[3], {(3, 3)}),
        "power": (lambda x: x[4] ** x[5], {(4, 4), (4, 5), (5, 4), (5, 5)}),
        "square of a sum": (lambda x: (x[0] + x[1]) ** 2, {(0, 0), (0, 1), (1, 0), (1, 1)}),
        "unreached": (lambda x: x[0] + 0.0 * tg.stop_gradient(x[1] * x[2]), set()),
    }
    for name, (f, expected) in cases.items():
        cf = tg.compile(f)
        pattern = cf.hessian_sparsity(x)
        assert sparse_pattern(pattern) == expected, name
        np.testing.assert_allclose(cf.sparse_hessian(x).toarray(), cf.hessian(x), rtol=1e-12, err_msg=name)


def test_errors_name_the_method():
    cf = tg.compile(lambda x: objects([x[0], x[1]]))
    with pytest.raises(ValueError, match="sparse_hessian.*shape"):
        cf.sparse_hessian(np.ones(2))


def test_the_pattern_is_of_the_branch_taken(rng):
    def f(x):
        return objects([x[0] * x[1] if x[0] > 0 else x[2], x[1]])

    cf = tg.compile(f)
    assert cf.jacobian_sparsity(np.array([1.0, 2.0, 3.0])).nnz == 3
    assert cf.jacobian_sparsity(np.array([-1.0, 2.0, 3.0])).nnz == 2
    np.testing.assert_array_equal(cf.sparse_jacobian(np.array([-1.0, 2.0, 3.0])).toarray(),
                                  [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def program_function(steps, n_inputs, n_outputs):
    def f(x):
        values = list(x)
        for spec, args, params in steps:
            ops = [values[a] if isinstance(a, int) else a for a in args]
            values.append(APPLY[spec.name](*ops, *params))
        return objects(values[-n_outputs:])

    return f


def dense_like(cf, x, pattern):
    """The dense Jacobian in the sweeps' own mode: a tangent sweep per input or a reverse sweep
    per output (with infinite intermediates the two modes may differ)."""
    n, m = len(x), pattern.shape[0]
    if pattern.mode == "forward":
        return np.array([np.ravel(cf.jvp((x,), (np.eye(n)[j],))[1]) for j in range(n)]).reshape(n, m).T
    return np.array([cf.vjp((x,), np.eye(m)[i])[1][0] for i in range(m)]).reshape(m, n)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(programs(), st.integers(1, 5))
def test_random_programs_sparse_equals_dense(program, n_outputs):
    inputs, steps = program
    x = np.array(inputs)
    cf = tg.compile(program_function(steps, len(inputs), n_outputs))
    pattern = cf.jacobian_sparsity(x)
    dense = dense_like(cf, x, pattern)
    if np.all(np.isfinite(dense)):
        assert sparse_pattern(pattern) >= nonzero_pattern(dense)
    # one compressed sweep gives each entry what a sweep seeded for it alone gives
    np.testing.assert_array_equal(cf.sparse_jacobian(x).toarray(), dense)
    scalar = tg.compile(lambda x: program_function(steps, len(inputs), n_outputs)(x).sum())
    hess = scalar.hessian(x)
    if np.all(np.isfinite(hess)):
        assert sparse_pattern(scalar.hessian_sparsity(x)) >= nonzero_pattern(hess)
    np.testing.assert_array_equal(scalar.sparse_hessian(x).toarray(), hess)


def test_sparse_hessian_of_array_data_larger_than_the_tape(rng):
    """Array data's rows read no row: their operand fields hold offsets into the constant pool,
    which the dependency sweep once took for rows (read out of bounds once the pool outgrew the
    tape: garbage set sizes, then a failed allocation or a wrong pattern)."""
    C1, C2 = rng.normal(size=(1000, 4)), rng.normal(size=4)

    def f(x):
        v = tnp.asarray(x)
        return (v + tg.tensor(C1)).sum() + (v * tg.tensor(C2) * v).sum()

    cf = tg.compile(f)
    for _ in range(20):
        H = cf.sparse_hessian(rng.normal(size=4)).toarray()
        np.testing.assert_allclose(H, np.diag(2.0 * C2), rtol=1e-14)
        cf.__dict__.pop("_patterns")  # (the pattern again, not from the cache)
