"""Run the benchmark suite and report it as a markdown table: ``python benchmarks/report.py``.

Every group (a workload) gets one row per system: its median, the ratio to tapegrad's median in
the group (``tapegrad-replay`` where there is one) and the ratio to the group's primal (``@njit``
or NumPy: the derivative / primal ratio GradBench reports), plus GradBench's published ADOL-C
ratio where there is one. The table starts with the machine, the package versions, the date and
the command; it is printed and written to ``--output``.

    python benchmarks/report.py                      # the whole suite, GradBench evals at medium size
    python benchmarks/report.py --size small -k "det or llsq"
    python benchmarks/report.py --from-json run.json # a table from an earlier run's JSON
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRIMALS = ("primal", "njit-primal")
# GradBench's ADOL-C tool, gradient / primal time (evals/*/summary.json at commit 0003df3e)
ADOLC = {"det-5": 6.1, "det-7": 4.3, "det-9": 8.8, "det-10": 8.8, "llsq-1024": 17.0, "llsq-4096": 20.2,
         "llsq-16392": 20.6, "ode-1000x10": 116.7, "ode-1000x100": 173.0, "ode-10000x10": 84.8}
PACKAGES = ("tapegrad", "numpy", "numba", "mkl", "torch", "jax", "micrograd", "autograd")


def machine() -> str:
    """CPU model and core count, OS, Python."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def blas() -> str:
    """The BLAS tapegrad's sweeps call in this environment (see kernels.blas)."""
    from tapegrad import kernels

    kernels.sweeps()
    return kernels.blas.NAME


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def medians(run: dict) -> dict[str, dict[str, float]]:
    """group -> system -> median seconds, from pytest-benchmark's JSON."""
    out: dict[str, dict[str, float]] = {}
    for bench in run["benchmarks"]:
        params = bench.get("params") or {}
        system = params.get("system") or params.get("name") or bench["name"]
        out.setdefault(bench["group"] or bench["name"], {})[system] = bench["stats"]["median"]
    return out


def table(groups: dict[str, dict[str, float]]) -> str:
    lines = ["| workload | system | median | / tapegrad | / primal |", "|---|---|---:|---:|---:|"]
    for group, systems in groups.items():
        ours = [s for s in systems if s.startswith("tapegrad")]
        base = systems.get("tapegrad-replay") or (systems[ours[0]] if ours else None)
        primal = next((systems[p] for p in PRIMALS if p in systems), None)
        for k, (system, median) in enumerate(systems.items()):
            to_base = f"{median / base:.2f}" if base else ""
            to_primal = f"{median / primal:.1f}" if primal and system not in PRIMALS else ""
            lines.append(
                f"| {group if k == 0 else ''} | {system} | {_time(median)} | {to_base} | {to_primal} |"
            )
        if group.split(" ")[0] in ADOLC:
            lines.append(f"| | ADOL-C (GradBench's) | | | {ADOLC[group.split(' ')[0]]} |")
    return "\n".join(lines)


def report(run: dict, command: str) -> str:
    date = run.get("datetime", datetime.datetime.now().isoformat())[:10]
    head = (f"Benchmarks of {date}: `{command}`\n\nMachine: {machine()}. Packages: {versions()}; "
            f"tapegrad's BLAS: {blas()}. "
            "Every system on one thread. Ratios are of medians of the same run; `/ tapegrad` is to "
            "`tapegrad-replay` where the group has it.\n")
    return head + "\n" + table(medians(run)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=("small", "medium", "large"), default="medium",
                        help="sizes of the GradBench evals (benchmarks/test_gradbench.py)")
    parser.add_argument("-k", default=None, help="pytest's -k: the benchmarks to run")
    parser.add_argument("--output", default=str(HERE / "REPORT.md"), help="where to write the table")
    parser.add_argument(
        "--from-json", default=None, help="report this pytest-benchmark JSON instead of running"
    )
    args = parser.parse_args()
    command = "python benchmarks/report.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.from_json:
        run = json.loads(Path(args.from_json).read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.json"
            cmd = [sys.executable, "-m", "pytest", str(HERE), "--benchmark-only", f"--benchmark-json={out}",
                   "--benchmark-group-by=group", "--benchmark-columns=median,iqr,rounds", "-q"]
            if args.k:
                cmd += ["-k", args.k]
            env = dict(os.environ, TAPEGRAD_BENCH_SIZE=args.size)
            subprocess.run(cmd, cwd=HERE.parent, env=env, check=False)
            if not out.exists():
                sys.exit("report: the benchmark run wrote no results")
            run = json.loads(out.read_text())
    text = report(run, command)
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
