"""tg.detect_anomaly(): the first op that makes a NaN or an infinity, forward or backward, is named
with its operands and the line that recorded it; values that only propagate one are not blamed."""

import math

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.numpy as tnp


def test_forward_scalar_names_the_op_and_line():
    x = tg.tensor(0.0, requires_grad=True)
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError) as info:
        tg.log(x) * 2.0  # the anomaly
    message = str(info.value)
    assert "log" in message and "-inf" in message and "0.0" in message
    assert "test_anomaly.py" in message and "tg.log(x) * 2.0  # the anomaly" in message


def test_forward_array_names_the_element():
    b = tg.tensor(np.array([1.0, -1.0, 2.0]), requires_grad=True)
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError) as info:
        tnp.log(b).sum()
    assert "log" in str(info.value) and "flat index 1" in str(info.value) and "shape (3,)" in str(info.value)


def test_a_propagated_nan_is_not_blamed():
    """Only the op that makes the NaN from finite operands is reported: a NaN in the data flows."""
    x = tg.tensor(np.array([np.nan, 1.0]), requires_grad=True)
    s = tg.tensor(math.inf, requires_grad=True)
    with tg.detect_anomaly():
        y = (tnp.exp(x) * 2.0).sum() + s * 1.0
    assert math.isnan(y.item())


def test_backward_names_the_reverse_rule():
    a = tg.tensor(np.array([1.0, 0.0, 4.0]), requires_grad=True)
    with tg.detect_anomaly():
        z = tnp.sqrt(a)  # finite values, an infinite derivative at 0
        with pytest.raises(tg.AnomalyError) as info:
            z.sum().backward()
    message = str(info.value)
    assert "sqrt" in message and "z = tnp.sqrt(a)" in message and "an input of the tape" in message
    s = tg.tensor(0.0, requires_grad=True)
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError, match=r"sqrt .*y = tg.sqrt"):
        y = tg.sqrt(s) * 3.0
        y.backward()


def test_a_nan_seed_is_named():
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError, match="seed"):
        (x * 2.0).backward(gradient=np.array([np.nan, 1.0]))


def test_outside_the_mode_nothing_is_checked_and_nesting_counts():
    x = tg.tensor(0.0, requires_grad=True)
    assert tg.log(x).item() == -math.inf
    (tg.sqrt(x) * 1.0).backward()
    assert x.grad.item() == math.inf
    with tg.detect_anomaly():
        with tg.detect_anomaly():
            assert tg.is_anomaly_enabled()
        assert tg.is_anomaly_enabled()
    assert not tg.is_anomaly_enabled()
    assert tg.log(tg.tensor(0.0, requires_grad=True)).item() == -math.inf


def test_the_library_works_after_an_anomaly():
    with tg.detect_anomaly():
        with pytest.raises(tg.AnomalyError):
            tg.log(tg.tensor(-1.0, requires_grad=True))
        x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
        (x * x).sum().backward()  # finite everywhere: no error
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])
    assert tg.autograd.detect_anomaly is tg.detect_anomaly


def test_compiled_replays_are_checked_when_asked():
    """Outside the mode a replay's NaN flows (IEEE); inside, the op that made it is named, with
    the line that recorded it when the recording ran in the mode too."""
    f = lambda x: tg.log(x[0]) * x[1] + tg.sqrt(x[1])  # noqa: E731
    cf = tg.compile(f)
    value, grad = cf.value_and_grad(np.array([-1.0, 3.0]))
    assert math.isnan(value) and grad[0] == -3.0  # x1 / x0: the NaN is the value's alone
    with tg.detect_anomaly():
        with pytest.raises(tg.AnomalyError, match=r"replaying row \d+, log"):
            cf.value_and_grad(np.array([-1.0, 3.0]))
        with pytest.raises(tg.AnomalyError, match=r"adjoint .* sqrt"):
            cf.grad(np.array([2.0, 0.0]))
        with pytest.raises(tg.AnomalyError, match=r"replaying row \d+, log"):
            cf(np.array([0.0, 1.0]))
        traced = tg.compile(lambda x: tg.log(x[0]) * x[1])  # recorded in the mode: lines kept
        traced(np.array([1.0, 2.0]))
        with pytest.raises(tg.AnomalyError, match=r"test_anomaly.py:\d+: traced = tg.compile"):
            traced(np.array([-1.0, 2.0]))
        np.testing.assert_allclose(cf.grad(np.array([2.0, 3.0])), [1.5, math.log(2.0) + 0.5 / math.sqrt(3.0)])
