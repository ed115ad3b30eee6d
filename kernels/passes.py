"""Numba kernels of the tape passes (:mod:`tapegrad.tape_passes`): the few steps that are sequential.

Each one walks the rows once, in order or in reverse, because what it computes for a row depends
on what it computed for the rows before (or after) it: liveness flows from readers back to
operands, constancy and levels flow from operands forward, and a value number is only known once
the operands' numbers are. Done with NumPy, each would take one pass per level of the tape's DAG
(thousands for a loop that accumulates a sum). The rows' operands come as a CSR list:
``operands[starts[i] : starts[i + 1]]`` are the rows that row i reads.
"""

from __future__ import annotations

import numpy as np

from .jit import compiled


@compiled()
def live_rows(starts, operands, roots):
    """The rows that some root row reads, directly or through other rows (roots included)."""
    live = roots.copy()
    for k in range(live.shape[0]):
        i = live.shape[0] - 1 - k
        if live[i]:
            for r in operands[starts[i] : starts[i + 1]]:
                live[r] = True
    return live


@compiled()
def constant_rows(starts, operands, seeds, foldable):
    """The seed rows, and the foldable rows all of whose operand rows are constant."""
    constant = seeds.copy()
    for i in range(constant.shape[0]):
        if foldable[i] and starts[i + 1] > starts[i]:
            constant[i] = True
            for r in operands[starts[i] : starts[i + 1]]:
                constant[i] &= constant[r]
    return constant


@compiled()
def levels(starts, operands):
    """Each row's level: 0 for a row that reads no row, else one more than its operands' highest."""
    level = np.zeros(starts.shape[0] - 1, dtype=np.int64)
    for i in range(level.shape[0]):
        for r in operands[starts[i] : starts[i + 1]]:
            level[i] = max(level[i], level[r] + 1)
    return level


@compiled()
def value_numbers(key_op, key_a, key_b, key_c, slot_a, slot_b, commutative, eligible):
    """Value numbering: for each row the first row computing the same value (itself if none).

    Row i's key is (key_op, A, B, key_c), where A is key_a[i] or, when slot_a[i], the number of
    row key_a[i] (likewise B); a commutative row orders A <= B. Keys live in an open-addressing
    hash table of rows."""
    n = key_op.shape[0]
    number = np.arange(n)
    canon_a = key_a.copy()
    canon_b = key_b.copy()
    capacity = 16
    while capacity < 2 * n:
        capacity *= 2
    mask = np.uint64(capacity - 1)
    table = np.full(capacity, -1, dtype=np.int64)
    for i in range(n):
        if not eligible[i]:
            continue
        ka = number[key_a[i]] if slot_a[i] else key_a[i]
        kb = number[key_b[i]] if slot_b[i] else key_b[i]
        if commutative[i] and ka > kb:
            ka, kb = kb, ka
        canon_a[i] = ka
        canon_b[i] = kb
        h = np.uint64(key_op[i]) * np.uint64(0x9E3779B97F4A7C15)
        for part in (ka, kb, key_c[i]):
            h = (h ^ np.uint64(part)) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
        h &= mask
        while True:
            j = table[h]
            if j < 0:
                table[h] = i
                break
            if key_op[j] == key_op[i] and canon_a[j] == ka and canon_b[j] == kb and key_c[j] == key_c[i]:
                number[i] = j
                break
            h = (h + np.uint64(1)) & mask
    return number


@compiled()
def grouped_order(order, level, op, first, constant):
    """`order` (rows sorted by level, then opcode) with each group of one level and one opcode
    sorted by their constant operand (constant[r], a pool index; -1: none), then by where their
    first operand rows went (first[r] < 0: none), ties kept in order. Levels are taken in order,
    so an operand's place is known before its readers are sorted."""
    n = order.shape[0]
    out = order.copy()
    place = np.empty(n, dtype=np.int64)
    g = 0
    while g < n:
        h = g + 1
        while h < n and level[order[h]] == level[order[g]] and op[order[h]] == op[order[g]]:
            h += 1
        keys = np.empty(h - g, dtype=np.int64)
        for t in range(g, h):
            r = first[order[t]]
            keys[t - g] = (constant[order[t]] + 1) * (n + 1) + (place[r] + 1 if r >= 0 else 0)
        for t, k in enumerate(np.argsort(keys, kind="mergesort")):
            out[g + t] = order[g + k]
            place[out[g + t]] = g + t
        g = h
    return out
