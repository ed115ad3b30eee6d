"""The GradBench tool (benchmarks/gradbench): its protocol on a recorded session, and its outputs
against each eval's ``expected`` (computed without tapegrad), compared as GradBench compares them.

``gradbench_session.jsonl`` holds eight sessions, one per eval, as GradBench's evals send them
(start, define, then evaluate and analysis per function and workload) at small sizes.
"""

import functools
import io
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.gradbench import EVALS, MODULES, differences, gmm, kmeans, llsq, lse, ode, programs, protocol

ROOT = pathlib.Path(__file__).resolve().parents[1]
SESSIONS: dict[str, list[dict]] = {}
for _line in (ROOT / "tests" / "gradbench_session.jsonl").read_text().splitlines():
    _message = json.loads(_line)
    if _message["kind"] == "start":
        _current = SESSIONS.setdefault(_message["eval"], [])
    _current.append(_message)


def mismatches(expected, actual, path: str = "output") -> list[str]:
    """GradBench's comparison: floats agree when |x - y| / max(1, |x| + |y|) <= 1e-4; lists by
    length and element, dicts by key set and value, other values exactly."""
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        x, y = float(expected), float(actual)
        return [] if abs(x - y) / max(1.0, abs(x) + abs(y)) <= 1e-4 else [f"{path}: {x} != {y}"]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} != {len(actual)}"]
        return [m for k, (e, a) in enumerate(zip(expected, actual)) for m in mismatches(e, a, f"{path}[{k}]")]
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return [f"{path}: keys {sorted(expected)} != {sorted(actual)}"]
        return [m for k in expected for m in mismatches(expected[k], actual[k], f"{path}.{k}")]
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]


def serve(messages: list[dict], replay: bool) -> list[dict]:
    out = io.StringIO()
    protocol.serve([json.dumps(m) for m in messages], out, MODULES, "tapegrad", replay)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_session_covers_every_eval():
    assert sorted(SESSIONS) == sorted(EVALS) == ["ba", "det", "gmm", "kmeans", "llsq", "lse", "lstm", "ode"]


@pytest.mark.parametrize("replay, passes", [(False, False), (True, False), (True, True)],
                         ids=["tapegrad", "tapegrad-replay", "tapegrad-replay-opt"])
@pytest.mark.parametrize("module", sorted(SESSIONS))
def test_session(module, replay, passes, monkeypatch):
    """One reply per message with its id; one evaluate timing per run; outputs GradBench accepts."""
    monkeypatch.setattr(programs, "PASSES", passes)
    messages = SESSIONS[module]
    replies = serve(messages, replay)
    assert [r["id"] for r in replies] == [m["id"] for m in messages]
    evaluated = 0
    for message, reply in zip(messages, replies):
        kind = message["kind"]
        if kind == "start":
            assert reply == {"id": message["id"], "tool": "tapegrad"}
        elif kind == "define":
            assert reply == {"id": message["id"], "success": True}
        elif kind == "analysis":
            assert reply == {"id": message["id"]}
        else:
            assert reply["success"] is True and "error" not in reply, reply.get("error")
            runs = [t for t in reply["timings"] if t["name"] == "evaluate"]
            assert len(runs) == message["input"]["min_runs"]
            assert all(isinstance(t["nanoseconds"], int) and t["nanoseconds"] >= 0 for t in reply["timings"])
            expected = EVALS[module].expected(message["function"], message["input"])
            assert mismatches(expected, reply["output"]) == [], message["description"]
            evaluated += 1
    assert evaluated == 4


def test_min_seconds_repeats_runs():
    message = {"id": 0, "kind": "evaluate", "module": "lse", "function": "primal",
               "input": {"x": [1.0, 2.0], "min_runs": 1, "min_seconds": 0.02}}
    reply = serve([message], replay=True)[0]
    runs = [t["nanoseconds"] for t in reply["timings"] if t["name"] == "evaluate"]
    assert sum(runs) >= 0.02e9 and len(runs) > 1
    old = dict(message, input={"x": [1.0, 2.0], "runs": 3})  # older evals: exactly `runs` runs
    assert len([t for t in serve([old], replay=False)[0]["timings"] if t["name"] == "evaluate"]) == 3


def test_failures_are_replies_and_the_tool_goes_on():
    lse_input = {"x": [0.0, math.log(3.0)], "min_runs": 1, "min_seconds": 0}
    messages = [
        {"id": 0, "kind": "start", "eval": "hello"},
        {"id": 1, "kind": "define", "module": "hello"},
        {"id": 2, "kind": "evaluate", "module": "lse", "function": "hessian", "input": lse_input},
        {"id": 3, "kind": "evaluate", "module": "lse", "function": "gradient", "input": {"min_runs": 1}},
        {"id": 4, "kind": "evaluate", "module": "nope", "function": "primal", "input": lse_input},
        {"id": 5, "kind": "evaluate", "module": "lse", "function": "gradient", "input": lse_input},
        {"id": 6, "kind": "something new"},
    ]
    replies = serve(messages, replay=False)
    assert [r["id"] for r in replies] == list(range(7))
    assert replies[1]["success"] is False and "'hello'" in replies[1]["error"]
    assert replies[2]["success"] is False and "unknown function 'hessian'" in replies[2]["error"]
    assert replies[3]["success"] is False and "'x'" in replies[3]["error"]
    assert replies[4]["success"] is False and "'nope'" in replies[4]["error"]
    assert replies[5]["success"] is True and mismatches([0.25, 0.75], replies[5]["output"]) == []
    assert replies[6] == {"id": 6}
    assert all("output" not in r for r in replies[:5])


@pytest.mark.parametrize("flags, tool", [(["--replay"], "tapegrad-replay"),
                                         (["--replay", "--optimize"], "tapegrad-replay-opt")])
def test_command_line(flags, tool):
    """``python -m benchmarks.gradbench --replay`` from the repo's root, as GradBench runs a tool."""
    session = SESSIONS["llsq"][:4]
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gradbench", *flags],
        cwd=ROOT,
        text=True,
        check=False,
        input="".join(json.dumps(m) + "\n" for m in session),
        capture_output=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    assert replies[0] == {"id": 0, "tool": tool}
    assert mismatches(llsq.expected("primal", session[2]["input"]), replies[2]["output"]) == []


def test_optimize_needs_replay():
    run = subprocess.run([sys.executable, "-m", "benchmarks.gradbench", "--optimize"], cwd=ROOT, text=True,
                         check=False, input="", capture_output=True, timeout=600)
    assert run.returncode == 2 and "--optimize applies to the tape of --replay" in run.stderr


def test_mismatches_follows_gradbench():
    assert mismatches(1000.0, 1000.1) == []  # relative above 1
    assert mismatches(1e-6, 5e-5) == []  # absolute below 1
    assert mismatches(0.5, 0.501) != []
    assert mismatches([1.0], [1.0, 2.0]) != [] and mismatches({"a": 1}, {"b": 1}) != []
    assert mismatches({"repeated": 3}, {"repeated": 3.0}) == [] and mismatches([1.0], 1.0) != []


def test_references_against_differences():
    """The hand-written references (gmm, lse, ode, kmeans) agree with central differences of
    their objectives in NumPy, and gmm's gathered Q with GradBench's Qtimesx line by line."""
    theta, p = gmm.make_input(4, 2, 7, seed=1)  # d = 4: column-wise and row-wise orders differ
    x = np.random.default_rng(2).normal(size=5)
    y = 0.5 + np.random.default_rng(3).random(12)
    points = np.random.default_rng(4).random((9, 2))
    cases = [
        (functools.partial(gmm.gmm, xp=np, p=p), lambda t: gmm.reference(t, p), theta),
        (functools.partial(lse.lse, xp=np), lse.reference, x),
        (lambda t: ode.ode_njit(t, 3)[-1], lambda t: ode.reference(t, 3), y),
    ]
    for f, ref, at in cases:
        value, grad = ref(at)
        assert value != 0.0 and np.all(grad != 0.0)
        np.testing.assert_allclose(f(at), value, rtol=1e-12)
        np.testing.assert_allclose(grad, differences.central(f, at), rtol=1e-6, atol=1e-8)
    c = points[-3:].ravel() + 0.01  # kmeans: dir is J / (H 1), H = 2 |S_j| on centroid j
    value, direction = kmeans.reference(points, c.reshape(3, 2))
    J = differences.central(lambda t: kmeans.cost(t, np, points), c)
    counts = np.bincount(((points[:, None] - c.reshape(3, 2)[None]) ** 2).sum(2).argmin(1), minlength=3)
    np.testing.assert_allclose(direction.ravel(), J / np.repeat(2.0 * counts, 2), rtol=1e-6)
    _, mu, q, l = p.unpack(theta)
    Q = np.concatenate([np.exp(q).ravel(), l.ravel(), [0.0]])[p.gather]
    for k in range(p.k):
        xc = p.x[0] - mu[k]
        np.testing.assert_allclose(Q[k] @ xc, gmm.qtimesx(p.d, np.exp(q[k]), l[k], xc), rtol=1e-14)
