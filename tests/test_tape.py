"""The tape as data: rows, listing, stats, gradcheck, and where the compiled sweeps are cached."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tapegrad.kernels import OPCODES

import tapegrad as tg


def test_rows_are_flat_arrays_with_constants_in_the_pool():
    x = tg.tensor(2.0, requires_grad=True)
    with tg.recording():
        y = 3.0 * x**2 + tg.clamp(x, 0.0, 1.0)
    arrays = y.tape.arrays()
    assert arrays.op.dtype == np.uint8 and arrays.a.dtype == np.uint32 and arrays.b.dtype == np.uint32
    assert arrays.vals.dtype == np.float64 and arrays.vals.flags.c_contiguous
    names = [f"{OPCODES[c].spec.name} {OPCODES[c].kind}".strip() for c in arrays.op]
    assert names == ["input", "pow vc", "mul cv", "clamp v", "add vv"]
    assert sorted(arrays.consts[:-1]) == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_array_equal(arrays.vals, [2.0, 4.0, 12.0, 1.0, 13.0])


def test_array_rows_are_read_at_their_values_address():
    from tapegrad.tape import address

    data = np.arange(24.0).reshape(4, 6)
    for view in (data, data[1:], data[:, 2:].T, data.reshape(-1)[5:], np.zeros(0)):
        assert address(view) == view.__array_interface__["data"][0]
    x = tg.tensor(data, requires_grad=True)
    y = tg.exp(x[1:]) * x[1:]  # held: the exp's result and the gather's (a view of x)
    held = [v for v in y.tape.block_vals if v.__class__ is np.ndarray]
    assert sorted(y.tape.arrays().vaddr[y.tape.arrays().vaddr != 0]) == sorted(address(v) for v in held)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy()[1:], np.exp(data[1:]) * (1 + data[1:]))


def test_listing_shows_rows_values_and_adjoints():
    a = tg.tensor(2.0, requires_grad=True)
    b = tg.tensor(4.0, requires_grad=True)
    with tg.recording() as tape:
        e = (a + b) * (tg.log(a) * tg.log(b))
    assert e.tape is tape
    e.backward(retain_graph=True)
    lines = tape.listing().splitlines()
    assert "adjoint" in lines[0]
    assert lines[3].split()[:3] == ["v2", "=", "add(v0,"]
    assert lines[-1].startswith("v6 = mul(v2, v5)") and lines[-1].split()[-2:] == ["5.76544", "1"]
    assert str(e.tape).startswith("<Tape #")


def test_listing_of_a_long_tape_is_abridged():
    x = tg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100):
        y = y * 1.01
    text = y.tape.listing(limit=10)
    assert "rows ..." in text and len(text.splitlines()) == 12


def test_stats():
    x = tg.tensor(1.0, requires_grad=True)
    with tg.recording():
        y = x * x + x * 2.0
        if y > 0:
            pass
    stats = y.tape.stats()
    assert stats["rows"] == len(y.tape) == 6
    assert stats["by_op"] == {"input": 1, "mul": 2, "add": 1, "gt": 1, "guard": 1}
    assert stats["guards"] == 1 and stats["inputs"] == 1
    assert stats["bytes"] == 6 * 17 + 8 * 0


def test_gradcheck_passes_and_catches_a_wrong_gradient():
    assert tg.gradcheck(lambda x, y: tg.sin(x) * tg.exp(y) / (1.0 + x * x), (0.3, -0.7))
    assert tg.gradcheck(lambda x: tg.atan2(x, 2.0) + tg.erf(x), 0.4)

    def wrong(x):
        # x.detach() hides a dependence from the tape: the gradient is wrong
        return x * x.detach()

    assert not tg.gradcheck(wrong, 1.5, raise_exception=False)
    with pytest.raises(tg.GradcheckError, match="central differences"):
        tg.gradcheck(wrong, 1.5)


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env},
        capture_output=True, text=True, timeout=600, cwd=env.get("PYTHONPATH", os.getcwd()),
    )


PROGRAM = """
    import tapegrad as tg
    from tapegrad import kernels
    x = tg.tensor(3.0, requires_grad=True)
    (x ** 2).backward()
    print(x.grad.item(), kernels.sweeps().__file__)
"""


def test_cache_goes_to_the_configured_folder(tmp_path):
    done = _run(PROGRAM, {"TAPEGRAD_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    value, path = done.stdout.split()
    assert value == "6.0" and path.startswith(str(tmp_path))
    assert any(p.suffix in (".nbi", ".nbc") for p in (tmp_path / "__pycache__").iterdir())
    assert "compiling its Numba sweeps for this machine, once: about a minute" in done.stderr  # why it waits
    assert f"later runs load them from {tmp_path}" in done.stderr
    again = _run(PROGRAM, {"TAPEGRAD_CACHE_DIR": str(tmp_path)})
    assert again.returncode == 0 and again.stdout.split()[0] == "6.0" and "compiling" not in again.stderr


def test_a_new_version_of_the_sweeps_prunes_the_stale_ones(tmp_path):
    """The package's own cache folder keeps one version of the generated sweeps: compiling a new
    one deletes the others' modules and Numba caches (about 12 MB each), nothing else."""
    from tapegrad.kernels.loader import prune

    cache = tmp_path / "__pycache__"
    cache.mkdir()
    files = ["tapegrad_sweeps_old1.py", "tapegrad_sweeps_old2.py", "tapegrad_sweeps_new.py", "other.py"]
    numba_files = ["tapegrad_sweeps_old1.forward-12.py311.nbi", "tapegrad_sweeps_old1.forward-12.py311.1.nbc",
                   "tapegrad_sweeps_new.forward-12.py311.nbi", "other.f-1.py311.nbi"]
    for name in files:
        (tmp_path / name).write_text("")
    for name in numba_files:
        (cache / name).write_text("")
    prune(tmp_path, "tapegrad_sweeps", "tapegrad_sweeps_new")
    assert sorted(p.name for p in tmp_path.glob("*.py")) == ["other.py", "tapegrad_sweeps_new.py"]
    assert sorted(p.name for p in cache.iterdir()) == [
        "other.f-1.py311.nbi", "tapegrad_sweeps_new.forward-12.py311.nbi"
    ]


def _unwritable_package(tmp_path):
    """A copy of the package whose own cache folder cannot be created (tests run as root, so
    permissions cannot make a folder read-only: a regular file stands where the folder would be)."""
    import shutil

    import tapegrad

    root = tmp_path / "site"
    shutil.copytree(os.path.dirname(tapegrad.__file__), root / "tapegrad",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(root / "tapegrad" / "kernels", ignore_errors=True)
    shutil.copytree(os.path.dirname(tapegrad.kernels.__file__), root / "tapegrad" / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tapegrad" / "kernels" / "__pycache__").write_text("")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    return root, blocker


def test_read_only_package_caches_in_the_user_folder(tmp_path):
    root, blocker = _unwritable_package(tmp_path)
    env = {"PYTHONPATH": str(root), "XDG_CACHE_HOME": str(tmp_path / "user-cache"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    done = _run(PROGRAM, env)
    assert done.returncode == 0, done.stderr
    value, path = done.stdout.split()
    assert value == "6.0" and path.startswith(str(tmp_path / "user-cache"))


def test_runs_uncached_when_nothing_is_writable(tmp_path):
    root, blocker = _unwritable_package(tmp_path)
    temp = tmp_path / "temp"
    temp.mkdir()
    (temp / f"tapegrad-{os.getuid()}").write_text("")  # the temp-folder candidate, blocked
    env = {"PYTHONPATH": str(root), "XDG_CACHE_HOME": str(blocker / "b"), "HOME": str(blocker / "c"),
           "TMPDIR": str(temp), "NUMBA_CACHE_DIR": str(blocker / "e"), "PYTHONDONTWRITEBYTECODE": "1"}
    done = _run(PROGRAM, env)
    assert done.returncode == 0, done.stderr
    value, path = done.stdout.split()
    assert value == "6.0" and path.startswith("<")
    # the kernels written as modules (sparsity patterns, tape passes) compile in memory too
    done = _run("""
        import numpy as np
        import tapegrad as tg
        cf = tg.compile(lambda x: x[0] * x[1] + x[1] * x[0], optimize=True)
        print(cf.sparse_hessian(np.ones(2)).toarray().tolist())
    """, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "[[0.0, 2.0], [2.0, 0.0]]"


def test_kernels_is_not_a_top_level_package():
    import importlib.util

    import tapegrad.kernels

    assert tapegrad.kernels.__name__ == "tapegrad.kernels"
    found = importlib.util.find_spec("kernels")
    assert found is None or "site-packages" not in (found.origin or "")


def test_scipys_own_openblas_runs_on_one_thread_once_the_sweeps_load():
    """With SciPy's bundled OpenBLAS for the sweeps' products, next to NumPy's: two pools of
    threads that wait actively, and fight over the cores (see kernels.blas)."""
    done = _run("""
        import ctypes
        import scipy.linalg.cython_blas as cython_blas
        try:
            count = ctypes.CDLL(cython_blas.__file__).scipy_openblas_get_num_threads
        except AttributeError:  # SciPy with another BLAS: left alone
            print("other")
            raise SystemExit
        from tapegrad import kernels
        before = count()
        kernels.sweeps()
        print(before, count())
    """, {"OPENBLAS_NUM_THREADS": "2", "TAPEGRAD_BLAS": "scipy"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() in (["2", "1"], ["other"])


BLAS_PROGRAM = """
    import numpy as np
    import tapegrad as tg
    from tapegrad.kernels import blas
    rng = np.random.default_rng(3)
    X, W = rng.normal(size=(7, 33)), rng.normal(size=(33, 5))
    x = tg.tensor(X, requires_grad=True)
    y = x @ tg.tensor(W)
    y.sum().backward()
    v = tg.tensor(np.linspace(-3.0, 4.0, 1100), requires_grad=True)  # exps past a 512-element chunk
    tg.logsumexp(v).backward()
    print(blas.NAME)
    numbers = [y.detach().numpy().ravel(), x.grad.numpy().ravel(), [tg.logsumexp(v).item()], v.grad.numpy()]
    print(" ".join(map(repr, np.concatenate(numbers).tolist())))
"""


def test_the_sweeps_multiply_and_exponentiate_with_mkl_when_installed_and_without_when_asked():
    """Products in MKL's dgemm and exps in its vdExp when the mkl package is installed, else in
    SciPy's OpenBLAS and the sweeps' own vexp loop (TAPEGRAD_BLAS=scipy): the same numbers."""
    from importlib import metadata

    try:
        has_mkl = bool(metadata.files("mkl"))
    except metadata.PackageNotFoundError:
        has_mkl = False
    runs = {}
    for choice in ("", "scipy"):
        done = _run(BLAS_PROGRAM, {"TAPEGRAD_BLAS": choice})
        assert done.returncode == 0, done.stderr
        name, numbers = done.stdout.splitlines()[-2:]
        runs[choice] = np.array(numbers.split(), dtype=float)
        assert name.startswith("MKL") if choice == "" and has_mkl else name == "SciPy's OpenBLAS"
    rng = np.random.default_rng(3)
    X, W = rng.normal(size=(7, 33)), rng.normal(size=(33, 5))
    v = np.linspace(-3.0, 4.0, 1100)
    lse = np.log(np.exp(v - v.max()).sum()) + v.max()
    expected = np.concatenate([(X @ W).ravel(), np.tile(W.sum(1), 7), [lse], np.exp(v - lse)])
    for got in runs.values():
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    wrong = _run(BLAS_PROGRAM, {"TAPEGRAD_BLAS": "atlas"})
    assert wrong.returncode != 0 and "TAPEGRAD_BLAS='atlas'" in wrong.stderr
