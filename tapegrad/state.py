"""Recording state: whether gradients are recorded, and the tape being recorded.

The state is one :class:`contextvars.ContextVar` holding the current tape (a Tape, NONE for
"start one at the next recorded op", or PAUSED inside ``no_grad``). On CPython each thread has its
own context, so recording is per thread, and one read (about 10 ns) tells the recorder both
whether to record and where.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# Rows after which a thread starts a fresh tape for new graphs, so a loop that records without
# ever calling backward does not hold one ever-growing tape (a tape traced for tg.compile is
# never cut: it must hold the whole function).
TAPE_ROWS_LIMIT = 1 << 20


class _NoTape:
    """Stands in for the current tape: NONE before the first recorded op (or after a backward
    closed the tape), PAUSED inside ``no_grad``. Both are closed, so the recorder's one check
    ``tape.closed`` sends it to the slow path."""

    closed = True
    full = False

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NONE = _NoTape("NONE")
PAUSED = _NoTape("PAUSED")

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("tapegrad_tape", default=NONE)
get_tape = _current.get
set_tape = _current.set


def is_grad_enabled() -> bool:
    """Whether ops on tensors that require grad are being recorded in this thread."""
    return get_tape() is not PAUSED


class set_grad_enabled:
    """Context manager and decorator that turns gradient recording on or off in this thread."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self._prev: list[Any] = []

    def __enter__(self) -> None:
        prev = get_tape()
        self._prev.append(prev)
        if not self.mode:
            set_tape(PAUSED)
        elif prev is PAUSED:
            set_tape(NONE)

    def __exit__(self, *exc: object) -> None:
        prev = self._prev.pop()
        # a tape that a backward closed inside the block is not resumed (a full one is: it takes
        # the rest of the graph recorded on it)
        set_tape(NONE if (prev is not PAUSED and prev.closed and not prev.full) else prev)

    def __call__(self, func: F) -> F:
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class no_grad(set_grad_enabled):
    """``with tg.no_grad():`` (or ``@tg.no_grad()``): compute without recording."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """``with tg.enable_grad():`` (or ``@tg.enable_grad()``): record again inside ``no_grad``."""

    def __init__(self) -> None:
        super().__init__(True)
