import numpy as np
import pytest

try:
    import torch

    torch.set_default_dtype(torch.float64)
except ImportError:  # the oracle tests skip
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)
