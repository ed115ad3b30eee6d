"""tapegrad's back end: the op table and the Numba sweeps generated from it.

Knows nothing of the front end. ``sweeps()`` returns the compiled module with ``forward``,
``reverse``, ``reverse_tracked`` and ``tangent`` (see :mod:`kernels.codegen`).
"""

from __future__ import annotations

import threading
import types

import numpy as np

from .table import CODE, OPCODES, OPS, BY_NAME, OpSpec, Opcode

_lock = threading.Lock()
_module: types.ModuleType | None = None

# Per-opcode facts the tracked reverse sweep reads: which operands are slots, whether it saves values.
OPERAND_MASK = np.array([int(o.reads_a) | (int(o.reads_b) << 1) for o in OPCODES], dtype=np.uint8)
SAVES = np.array([o.spec.differentiable and o.spec.saves for o in OPCODES], dtype=np.uint8)


def sweeps() -> types.ModuleType:
    """The compiled sweeps (generated and loaded on first use)."""
    global _module
    if _module is None:
        with _lock:
            if _module is None:
                from .loader import load

                _module = load()
    return _module


__all__ = ["CODE", "OPCODES", "OPS", "BY_NAME", "OpSpec", "Opcode", "OPERAND_MASK", "SAVES", "sweeps"]
