"""What a tape costs in memory, and the check that refuses one the machine cannot hold.

While recording, a scalar row is four entries of the tape's Python list (opcode, two operands,
the value) and the objects they point to: about RECORD_BYTES_PER_ROW. As arrays, which every
sweep takes, a row is 25 bytes (opcode 1, operands 4 + 4, value 8, adjoint 8), and converting the
list to them passes through about SWEEP_BYTES_PER_ROW at its peak. A tape recorded for
``tg.compile`` is never cut, so the recorder checks every CHECK_ROWS rows that the machine's
available memory still holds the next rows and the tape's arrays, and raises MemoryError, with the
sizes, before it would swap. (Eager tapes are cut at ``TAPE_ROWS_LIMIT`` rows.)
"""

from __future__ import annotations

import os

RECORD_BYTES_PER_ROW = 120  # a bound: 90 measured for `y * 0.5 + x` (tests/test_memory.py)
ARRAY_BYTES_PER_ROW = 25
SWEEP_BYTES_PER_ROW = 90  # converting the list to arrays, at its peak
ARRAY_BYTES_PER_SLOT = 16  # an array block's value and adjoint
CHECK_ROWS = 1 << 20


def available() -> int | None:
    """Bytes of memory available without swapping (Linux's MemAvailable; else free pages), or
    None where neither is known."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def check_recording(rows: int) -> None:
    """Raise MemoryError if recording CHECK_ROWS more rows, and then sweeping, would not fit."""
    free = available()
    if free is None:
        return
    need = CHECK_ROWS * RECORD_BYTES_PER_ROW + (rows + CHECK_ROWS) * SWEEP_BYTES_PER_ROW
    if need > free:
        raise MemoryError(
            f"tg.compile: the tape being recorded has {rows} rows (~{_gb(rows * RECORD_BYTES_PER_ROW)} as "
            f"Python lists); {CHECK_ROWS} more and their conversion for the sweeps need ~{_gb(need)}, but "
            f"{_gb(free)} is available. Record a smaller function (fewer steps, or array ops instead of "
            "scalar loops)."
        )


def check_sweep(rows: int, array_slots: int) -> None:
    """Raise MemoryError if converting a tape of `rows` rows for a sweep would not fit (asked of
    the system only for tapes that need over 256 MB: it costs tens of microseconds)."""
    need = rows * SWEEP_BYTES_PER_ROW + array_slots * ARRAY_BYTES_PER_SLOT
    if need < 1 << 28:
        return
    free = available()
    if free is not None and need > free:
        raise MemoryError(
            f"tapegrad: sweeping a tape of {rows} rows and {array_slots} array slots needs ~{_gb(need)}, "
            f"but {_gb(free)} is available"
        )
