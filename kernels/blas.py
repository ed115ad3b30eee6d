"""The BLAS the compiled sweeps call for matrix products: SciPy's, through scipy.linalg.cython_blas.

NumPy's wheels and SciPy's each bundle an OpenBLAS with its own pool of threads, which wait for
work actively. An eager training step runs its forward products in NumPy's and its backward ones
in SciPy's, so each pool spins on the cores while the other works: on 2 cores, an MLP step
(64-128-128-10, batch 256) took 8-12 ms with both pools at 2 threads, 2.0 ms with SciPy's at one
(1.4 ms with both at one). The sweeps run on the calling thread (``batch_grad`` runs its own
threads), so SciPy's bundled OpenBLAS is set to one thread when they load.
"""

from __future__ import annotations

import ctypes


def one_thread() -> None:
    """Set SciPy's bundled OpenBLAS (``scipy_openblas``: used by SciPy alone, never NumPy's) to
    one thread. Any other BLAS SciPy uses (one shared with NumPy, MKL) is left as configured."""
    try:
        import scipy.linalg.cython_blas as cython_blas

        library = ctypes.CDLL(cython_blas.__file__)  # its symbols' lookup reaches its OpenBLAS
        library.scipy_openblas_set_num_threads(ctypes.c_int(1))
    except (ImportError, OSError, AttributeError):
        pass
