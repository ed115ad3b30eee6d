"""Compile the generated sweeps, cached on disk where possible.

The generated module is written to the first writable cache folder (so Numba's ``cache=True``
keeps the machine code beside it and a second process does not recompile): ``$TAPEGRAD_CACHE_DIR``,
then ``__pycache__`` inside this package, then the user's cache folder, then the temp folder.
Where nothing is writable the module is compiled in memory, uncached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

from .codegen import generate

_OWN_CACHE = Path(__file__).resolve().parent / "__pycache__" / "tapegrad"  # this install's own


def cache_dirs() -> list[Path]:
    """Candidate folders for the generated module and its Numba cache, in order of preference."""
    dirs = []
    if os.environ.get("TAPEGRAD_CACHE_DIR"):
        dirs.append(Path(os.environ["TAPEGRAD_CACHE_DIR"]))
    dirs.append(_OWN_CACHE)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(xdg) / "tapegrad")
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    dirs.append(Path(tempfile.gettempdir()) / f"tapegrad-{uid}")
    return dirs


def prune(folder: Path, name: str, keep: str) -> None:
    """Delete the generated modules `name`_* in `folder` other than `keep`, with their Numba
    caches (about 12 MB per version: earlier versions of the op table or of tapegrad)."""
    stale = [p for p in folder.glob(f"{name}_*.py") if p.stem != keep]
    for module in stale:
        for path in [module, *(folder / "__pycache__").glob(f"{module.stem}.*")]:
            try:
                path.unlink()
            except OSError:  # gone already (another process pruned it), or not ours to delete
                pass


def _writable(folder: Path) -> bool:
    try:
        (folder / "__pycache__").mkdir(parents=True, exist_ok=True)
        probe = folder / "__pycache__" / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def _import_file(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _say_compiling(folder: Path | None) -> None:
    """Tell the user why the first gradient takes a while (once per install, not a hang)."""
    where = (
        f"; later runs load them from {folder}"
        if folder
        else " (no writable cache folder: every run compiles)"
    )
    print(f"tapegrad: compiling its Numba sweeps for this machine, once: about a minute (and another "
          f"for the first tape with vector runs, optimize=True){where}", file=sys.stderr, flush=True)


def load(name: str = "tapegrad_sweeps") -> types.ModuleType:
    """The compiled sweeps module (cached on disk if any cache folder is writable)."""
    source = generate(cache=True)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    modname = f"{name}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    for folder in cache_dirs():
        if not _writable(folder):
            continue
        path = folder / f"{modname}.py"
        try:
            if not path.exists() or path.read_text() != source:
                tmp = folder / f".{modname}.{os.getpid()}.tmp"
                tmp.write_text(source)
                os.replace(tmp, path)
            if not any((folder / "__pycache__").glob(f"{modname}.*.nbi")):  # Numba's cache index
                _say_compiling(folder)
                if folder == _OWN_CACHE:  # only this install writes there: older versions are stale
                    prune(folder, name, modname)
            return _import_file(path, modname)
        except (OSError, RuntimeError):  # RuntimeError: Numba found no cache locator
            continue
    _say_compiling(None)
    module = types.ModuleType(modname)
    module.__file__ = f"<{modname}>"
    exec(compile(generate(cache=False), module.__file__, "exec"), module.__dict__)
    sys.modules[modname] = module
    return module
