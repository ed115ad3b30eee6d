"""GradBench's tool protocol: JSON lines on stdin, one JSON reply line per message on stdout.

The eval sends ``start``, ``define`` (the eval's module), then ``evaluate`` (a function of that
module and its input, with ``min_runs`` and ``min_seconds``) and ``analysis`` messages; every reply
echoes the message's ``id``. An evaluation runs the function until it has run ``min_runs`` times and
for ``min_seconds`` in total, one ``evaluate`` timing per run, and replies with the last output.
Preparing the input (parsing, and recording the tape for ``tapegrad-replay``) is timed apart as
``prepare``. A failure is a reply with ``success: false`` and the error: the tool keeps serving.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TextIO

# an eval's module -> prepare(function, input, replay) -> (the timed call, its result -> JSON-ready
# output: converted after the timing, as GradBench leaves encoding out of the timings)
Prepare = Callable[[str, dict, bool], tuple[Callable[[], Any], Callable[[Any], Any]]]


def _run(prepare: Prepare, message: dict, replay: bool) -> dict:
    inputs = message["input"]
    runs = inputs.get("runs")  # older evals: exactly this many runs
    min_runs = int(runs if runs is not None else inputs.get("min_runs", 1))
    min_seconds = 0.0 if runs is not None else float(inputs.get("min_seconds", 0.0))
    start = time.perf_counter_ns()
    call, output_of = prepare(message["function"], inputs, replay)
    timings = [{"name": "prepare", "nanoseconds": time.perf_counter_ns() - start}]
    elapsed = 0
    while True:
        start = time.perf_counter_ns()
        output = call()
        ns = time.perf_counter_ns() - start
        timings.append({"name": "evaluate", "nanoseconds": ns})
        elapsed += ns
        if len(timings) - 1 >= min_runs and elapsed >= min_seconds * 1e9:
            return {"success": True, "output": output_of(output), "timings": timings}


def reply(message: dict, modules: dict[str, Prepare], tool: str, replay: bool) -> dict:
    """The reply to one message of the eval."""
    out: dict[str, Any] = {"id": message.get("id")}
    kind = message.get("kind")
    if kind == "start":
        out["tool"] = tool
    elif kind == "define":
        module = message.get("module")
        out["success"] = module in modules
        if not out["success"]:
            out["error"] = f"{tool} does not implement the eval {module!r} (it has: {', '.join(modules)})"
    elif kind == "evaluate":
        module = message.get("module")
        try:
            if module not in modules:
                raise ValueError(f"unknown eval {module!r}")
            out.update(_run(modules[module], message, replay))
        except Exception as err:  # reported to the eval; the tool serves the next message
            out.update(success=False, error=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}")
    return out


def serve(lines: Iterable[str], write: TextIO, modules: dict[str, Prepare], tool: str, replay: bool) -> None:
    """Answer every message of `lines` on `write`, one flushed line each, until the input ends."""
    for line in lines:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError as err:
            message = {"kind": "invalid", "id": None}
            print(f"{tool}: a line that is not JSON ({err}): {line[:80]!r}", file=sys.stderr)
        write.write(json.dumps(reply(message, modules, tool, replay)) + "\n")
        write.flush()
