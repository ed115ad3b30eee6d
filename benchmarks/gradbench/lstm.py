"""GradBench's ``lstm``: ADBench's diagonal LSTM, l layers over a sequence of c one-hot-ish b-bit vectors.

Per step t < c - 1: the input x = sequence[t] * in_weight goes through the layers (layer i: forget
= s(x Wf + bf), ingate = s(h Wi + bi) with the layer's old hidden h, outgate = s(x Wo + bo), change
= tanh(h Wc + bc); cell = cell forget + ingate change; h = outgate tanh(cell); x = h), then
ypred = x out_weight + out_bias and total += sequence[t+1] . (ypred - log(sum(exp(ypred)) + 2))
(ADBench's "+ 2"); the loss is -total / ((c - 1) b). The gradient is taken with respect to
main_params (2l x 4b: per layer a row of weights, a row of biases, each [forget, ingate, outgate,
change]) and extra_params (3 x b: in_weight, out_weight, out_bias), flat in that order.

:func:`lstm_objective` is scalar code (one tape row per scalar op), compiled by ``@numba.njit`` as
the primal; :func:`lstm_vec` is the same loss with whole-array ops for the peers. GradBench draws the
sequence from the bits of a text's characters (b = 7); :func:`make_input` draws random bits.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba.extending import overload

import tapegrad as tg

from . import differences, inputs, programs

FUNCTIONS = ("objective", "jacobian")
SIZES = sorted(((l, c) for l in (2, 4, 6) for c in (1024, 4096, 8192)), key=lambda w: w[0] * w[1])
BITS = 7


def sigmoid(v):
    """The logistic function: tapegrad's own op on a traced scalar (one tape row)."""
    return tg.sigmoid(v)


@overload(sigmoid)
def _sigmoid_njit(v):
    return lambda v: 1.0 / (1.0 + np.exp(-v))


def lstm_objective(params, state, sequence, l, b):
    """The loss of the flat parameters (main then extra); state (2l b) and sequence (c b) flat."""
    extra = 8 * l * b
    hc = np.zeros_like(params[: 2 * l * b])  # hidden (row 2i) and cell (row 2i + 1) of each layer
    for i in range(2 * l * b):
        hc[i] = state[i]
    x, ypred = np.zeros_like(params[:b]), np.zeros_like(params[:b])
    total = 0.0
    steps = len(sequence) // b - 1
    for t in range(steps):
        for j in range(b):
            x[j] = sequence[t * b + j] * params[extra + j]
        for i in range(l):
            w, bias, h, c = 8 * i * b, (8 * i + 4) * b, 2 * i * b, (2 * i + 1) * b
            for j in range(b):
                forget = sigmoid(x[j] * params[w + j] + params[bias + j])
                ingate = sigmoid(hc[h + j] * params[w + b + j] + params[bias + b + j])
                outgate = sigmoid(x[j] * params[w + 2 * b + j] + params[bias + 2 * b + j])
                change = np.tanh(hc[h + j] * params[w + 3 * b + j] + params[bias + 3 * b + j])
                hc[c + j] = hc[c + j] * forget + ingate * change
                hc[h + j] = outgate * np.tanh(hc[c + j])
                x[j] = hc[h + j]
        sum_exp = 0.0
        for j in range(b):
            ypred[j] = x[j] * params[extra + b + j] + params[extra + 2 * b + j]
            sum_exp = sum_exp + np.exp(ypred[j])
        lse = np.log(sum_exp + 2.0)
        for j in range(b):
            total = total + sequence[(t + 1) * b + j] * (ypred[j] - lse)
    return -total / (steps * b)


lstm_njit = numba.njit(lstm_objective)


def lstm_vec(params, xp, state, sequence, l, b):
    """The same loss with whole-array ops (one op per gate per layer and step)."""
    main, extra = params[: 8 * l * b].reshape(2 * l, 4 * b), params[8 * l * b:].reshape(3, b)
    sig = xp.sigmoid if hasattr(xp, "sigmoid") else (lambda v: 1.0 / (1.0 + xp.exp(-v)))
    seq = xp.asarray(sequence.reshape(-1, b))
    hidden = [xp.asarray(state[2 * i * b:(2 * i + 1) * b]) for i in range(l)]
    cell = [xp.asarray(state[(2 * i + 1) * b:(2 * i + 2) * b]) for i in range(l)]
    total = 0.0
    for t in range(seq.shape[0] - 1):
        x = seq[t] * extra[0]
        for i in range(l):
            w, bias = main[2 * i], main[2 * i + 1]
            gates = sig(xp.concatenate([x, hidden[i], x]) * w[: 3 * b] + bias[: 3 * b])
            change = xp.tanh(hidden[i] * w[3 * b:] + bias[3 * b:])
            cell[i] = cell[i] * gates[:b] + gates[b: 2 * b] * change
            hidden[i] = gates[2 * b:] * xp.tanh(cell[i])
            x = hidden[i]
        ypred = x * extra[1] + extra[2]
        total = total + (seq[t + 1] * (ypred - xp.log(xp.exp(ypred).sum() + 2.0))).sum()
    return -total / ((seq.shape[0] - 1) * b)


def make_input(size: tuple[int, int], b: int = BITS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat params, flat state, flat sequence) for (l, c): uniform parameters and state, random bits."""
    l, c = size
    rng = np.random.RandomState(31337 + 10 * l + c)
    sequence = rng.randint(0, 2, c * b).astype(np.float64)
    state = rng.rand(2 * l * b)
    return np.concatenate([rng.rand(8 * l * b), rng.rand(3 * b)]), state, sequence


def message(size: tuple[int, int], b: int = BITS) -> dict:
    """The evaluate input for (l, c), from :func:`make_input`."""
    params, state, sequence = make_input(size, b)
    l = size[0]
    return {"main_params": params[: 8 * l * b].reshape(2 * l, 4 * b).tolist(),
            "extra_params": params[8 * l * b:].reshape(3, b).tolist(),
            "state": state.reshape(2 * l, b).tolist(), "sequence": sequence.reshape(-1, b).tolist()}


def from_message(message: dict) -> tuple[np.ndarray, dict]:
    """(the flat parameters, the other arguments of lstm_objective) of an evaluate message."""
    main, extra = inputs.vector(message, "main_params"), inputs.vector(message, "extra_params")
    l, b = main.shape[0] // 2, main.shape[1] // 4
    rest = {"state": inputs.vector(message, "state").ravel(), "l": l, "b": b,
            "sequence": inputs.vector(message, "sequence").ravel()}
    return np.concatenate([main.ravel(), extra.ravel()]), rest


def expected(function: str, message: dict):
    """The output GradBench accepts, computed without tapegrad (njit; central differences of it)."""
    params, rest = from_message(message)
    f = functools.partial(lstm_njit, **rest)
    return f(params) if function == "objective" else differences.central(f, params).tolist()


def prepare(function: str, message: dict, replay: bool):
    params, rest = from_message(message)
    f = functools.partial(lstm_objective, **rest)
    return programs.value_then_gradient("lstm", function, FUNCTIONS, f, params, arrays=False, replay=replay)
