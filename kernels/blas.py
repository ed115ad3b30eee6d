"""The BLAS the compiled sweeps call for matrix products: Intel MKL's when the ``mkl`` package is
installed (``pip install tapegrad[mkl]``), else SciPy's bundled OpenBLAS.

The sweeps call ``dgemm`` by the symbol name ``tapegrad_dgemm`` (see :mod:`kernels.codegen`), which
:func:`bind` points at one library's function before the sweeps load, so that machine code cached
on disk links to whichever this process chose. ``TAPEGRAD_BLAS=scipy`` (or ``mkl``) chooses.
The kernels' exp of a vector (``tapegrad_vexp``: logsumexp's exps) is MKL's vdExp with MKL, else
the sweeps' own vectorized loop (:func:`bind_exp`).

- **MKL**, sequential and with 32-bit integers (the LP64 interface): on the products of an MLP
  step or of GradBench's kmeans it took 0.5-0.85x OpenBLAS's time on the project's machine (the
  same library torch's CPU wheels use). Its results do not depend on the operands' alignment
  (``MKL_CBWR_AUTO``): replays in different workspaces give the same bits. When MKL was already
  set up otherwise in this process (threaded, or 64-bit integers), SciPy's OpenBLAS is used.
- **SciPy's OpenBLAS**: NumPy's wheels and SciPy's each bundle an OpenBLAS with its own pool of
  threads, which wait for work actively. An eager training step ran its forward products in
  NumPy's and its backward ones in SciPy's, so each pool spun on the cores while the other worked:
  on 2 cores, an MLP step (64-128-128-10, batch 256) took 8-12 ms with both pools at 2 threads,
  2.0 ms with SciPy's at one. The sweeps run on the calling thread (``batch_grad`` runs its own
  threads), so SciPy's OpenBLAS is set to one thread when they load.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from importlib import metadata

_MKL_SEQUENTIAL, _MKL_LP64, _MKL_CBWR_AUTO = 1, 0, 2  # mkl_service.h's constants

NAME = ""  # the BLAS bound: "MKL <version>" or "SciPy's OpenBLAS" (once bind() ran)
_VECTOR_EXP = 0  # the address of MKL's vdExp when MKL is bound


def _mkl_paths() -> list[str]:
    """Where the mkl package's runtime library (mkl_rt) may be: the pip package's files, then the
    environment's lib folder (conda)."""
    try:
        files = metadata.files("mkl") or []
    except metadata.PackageNotFoundError:
        files = []
    found = [str(f.locate()) for f in files if f.name.startswith(("libmkl_rt.", "mkl_rt."))]
    return found + sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))


def _mkl() -> tuple[int, str, int] | None:
    """MKL's dgemm (its address), version and vdExp (its address), set up sequential with 32-bit
    integers, or None."""
    for path in _mkl_paths():
        try:
            library = ctypes.CDLL(path)
            if library.MKL_Set_Threading_Layer(_MKL_SEQUENTIAL) != _MKL_SEQUENTIAL:
                return None
            if library.MKL_Set_Interface_Layer(_MKL_LP64) != _MKL_LP64:
                return None
            library.MKL_CBWR_Set(_MKL_CBWR_AUTO)
            version = ctypes.create_string_buffer(200)
            library.MKL_Get_Version_String(version, len(version))
            words = version.value.decode(errors="replace").split()
            number = next((w for w in words if w[:1].isdigit()), "").split("-")[0]
            address = lambda f: ctypes.cast(f, ctypes.c_void_p).value or 0  # noqa: E731
            return address(library.dgemm), f"MKL {number}".strip(), address(library.vdExp)
        except (OSError, AttributeError):
            continue
    return None


def _scipy() -> int:
    """SciPy's dgemm (its address), its OpenBLAS set to one thread."""
    from numba.core.extending import get_cython_function_address

    one_thread()
    return get_cython_function_address("scipy.linalg.cython_blas", "dgemm")


def one_thread() -> None:
    """Set SciPy's bundled OpenBLAS (``scipy_openblas``: used by SciPy alone, never NumPy's) to
    one thread. Any other BLAS SciPy uses (one shared with NumPy, MKL) is left as configured."""
    try:
        import scipy.linalg.cython_blas as cython_blas

        library = ctypes.CDLL(cython_blas.__file__)  # its symbols' lookup reaches its OpenBLAS
        library.scipy_openblas_set_num_threads(ctypes.c_int(1))
    except (ImportError, OSError, AttributeError):
        pass


def bind() -> str:
    """Point the symbol ``tapegrad_dgemm`` at the chosen BLAS's dgemm; return its name."""
    global NAME, _VECTOR_EXP
    from llvmlite import binding as llvm_binding

    choice = os.environ.get("TAPEGRAD_BLAS", "").lower()
    if choice not in ("", "mkl", "scipy"):
        raise ValueError(f"TAPEGRAD_BLAS={choice!r}: expected 'mkl' or 'scipy'")
    mkl = _mkl() if choice != "scipy" else None
    if choice == "mkl" and mkl is None:
        raise RuntimeError("TAPEGRAD_BLAS=mkl, but MKL could not be loaded sequential with 32-bit "
                           "integers (pip install mkl, and leave MKL_THREADING_LAYER unset)")
    address, NAME, _VECTOR_EXP = mkl if mkl else (_scipy(), "SciPy's OpenBLAS", 0)
    llvm_binding.add_symbol("tapegrad_dgemm", address)
    return NAME


def bind_exp(own: int) -> None:
    """Point the symbol ``tapegrad_vexp`` (the kernels' exp of a vector) at MKL's vdExp when MKL is
    bound (its high-accuracy mode, within 1 ulp), else at the sweeps' own loop at address `own`."""
    from llvmlite import binding as llvm_binding

    llvm_binding.add_symbol("tapegrad_vexp", _VECTOR_EXP or own)
