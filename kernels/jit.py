"""njit for the kernels written as plain Python modules (not generated): cached on disk where
Numba finds a writable place, else compiled in memory (a read-only install with no writable
cache folder, where cache=True would fail at import)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numba import njit


def compiled(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """A decorator: ``njit(cache=True, nogil=True, **options)``, uncached where nothing is writable."""

    def decorate(function: Callable[..., Any]) -> Any:
        try:
            return njit(cache=True, nogil=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(cache=False, nogil=True, **options)(function)

    return decorate
