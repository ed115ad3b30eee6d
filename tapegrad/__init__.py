"""tapegrad: reverse-mode automatic differentiation on a flat Wengert tape with Numba sweeps.

Eager, torch-like::

    import tapegrad as tg
    a = tg.tensor(1.0, requires_grad=True)
    c = a ** 2 + tg.sqrt(a)
    c.backward()
    a.grad        # tensor(2.5000)

micrograd-like: ``tg.Value``. See the README for the rest.
"""

from __future__ import annotations

from . import autograd, nn, optim, optimize, viz
from .anomaly import AnomalyError, detect_anomaly, is_anomaly_enabled
from .checkpoint import Checkpointed, checkpoint
from .compiled import CompiledFunction, ReplayTape, compile, load
from .custom import CustomOp, custom_op
from .functional import grad, hessian, jacobian, jvp, value_and_grad, vjp
from .functions import *  # noqa: F403  (one function per op of the table)
from .functions import __all__ as _op_names
from .gradcheck import GradcheckError, gradcheck
from .kernels import sweeps
from .linalg import dot, matmul, outer
from .node import TracingError, current_tape, recording
from .reductions import log_softmax, logsumexp, softmax
from .shapes import broadcast_to, concatenate, stack
from .state import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tape import Tape
from .tensor import Tensor, backward, tensor
from .value import Value

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Value", "Tape", "tensor", "backward", "autograd", "nn", "optim", "optimize", "viz",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "gradcheck", "GradcheckError",
    "current_tape", "recording", "compile", "load", "CompiledFunction", "ReplayTape", "TracingError",
    "custom_op", "CustomOp", "checkpoint", "Checkpointed",
    "sweeps", "grad", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "detect_anomaly",
    "AnomalyError", "is_anomaly_enabled", "broadcast_to", "concatenate", "dot", "log_softmax", "logsumexp",
    "matmul", "outer", "softmax", "stack",
    *_op_names,
]
