"""Recording state: whether gradients are recorded, and the tape being recorded.

The state is one :class:`contextvars.ContextVar` holding a weak reference to the current tape (a
Tape, NONE for "start one at the next recorded op", or PAUSED inside ``no_grad``). On CPython each
thread has its own context, so recording is per thread, and one read tells the recorder both
whether to record and where.

The reference is weak so that a tape lives only as long as the tensors recorded on it: a graph
dropped without a backward (a loss computed for logging, say) frees its saved values at once,
instead of the thread's next ops adding to the same tape.
"""

from __future__ import annotations

import contextvars
import functools
import weakref
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

_current: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "tapegrad_tape", default=weakref.ref(NONE)  # noqa: B039 (a reference to a constant: never mutated)
)
tape_ref = _current.get  # the recorder's read: tape_ref()() is the tape, or None once it is gone
restore_tape = _current.set  # (with a reference tape_ref returned)


def get_tape() -> Any:
    """The thread's current tape: a Tape, or NONE or PAUSED."""
    tape = _current.get()()
    return NONE if tape is None else tape


def set_tape(tape: Any) -> None:
    """Make `tape` (a Tape, NONE or PAUSED) the thread's current tape."""
    _current.set(weakref.ref(tape))


def is_grad_enabled() -> bool:
    """Whether ops on tensors that require grad are being recorded in this thread."""
    return get_tape() is not PAUSED


class set_grad_enabled:
    """Context manager and decorator that turns gradient recording on or off in this thread."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self._prev: list[Any] = []

    def __enter__(self) -> None:
        self._prev.append(tape_ref())  # (weakly: the block's graphs may be dropped in it)
        if not self.mode:
            set_tape(PAUSED)
        elif get_tape() is PAUSED:
            set_tape(NONE)

    def __exit__(self, *exc: object) -> None:
        prev = self._prev.pop()
        tape = prev()
        # a tape that a backward closed inside the block is not resumed (a full one is: it takes
        # the rest of the graph recorded on it)
        if tape is None or (tape is not PAUSED and tape.closed and not tape.full):
            set_tape(NONE)
        else:
            restore_tape(prev)

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
