"""Benchmark setup: every peer on one thread, a deep recursion limit, and an ns-per-row report."""

import os
import sys

# Thread pools read these when their library is first imported, so set them before any import.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
# NumPy asks for transparent huge pages on large arrays (madvise). With this VM's THP setting
# (defrag=madvise) a fault in such memory may stall on compaction: first passes over freshly
# allocated 10-MB arrays took 10-40x longer, at random. Every peer's NumPy arrays run without it.
os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"

import pytest  # noqa: E402

try:
    import torch
except ImportError:
    torch = None
else:
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran
        pass

# micrograd's backward sorts the graph recursively: Rosenbrock with n = 1000 is ~9000 nodes deep.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))

_ROWS = pytest.StashKey[list]()


@pytest.fixture
def report_ns_per_row(benchmark, request):
    """``report_ns_per_row(rows)``: after the benchmark ran, store its median time per tape row in
    ``benchmark.extra_info`` (and print it at the end). Does nothing under ``--benchmark-disable``."""

    def report(rows: int) -> None:
        if benchmark.stats is None:
            return
        ns = benchmark.stats.stats.median * 1e9 / rows
        benchmark.extra_info.update(rows=rows, ns_per_row=round(ns, 3))
        request.config.stash.setdefault(_ROWS, []).append((request.node.name, rows, ns))

    return report


def pytest_terminal_summary(terminalreporter, config):
    reports = config.stash.get(_ROWS, [])
    if reports:
        terminalreporter.section("median ns per tape row")
        for name, rows, ns in reports:
            terminalreporter.write_line(f"{name:<45} {rows:>9} rows  {ns:8.2f} ns/row")
