"""tg.viz: DOT text of a computation (parsed back here), and rendering where Graphviz is installed."""

import re
import shutil

import numpy as np
import pytest

import tapegrad as tg

NODE = re.compile(r'^\s*(\w+) \[shape=(\w+), label="(.*)"\];$')
EDGE = re.compile(r"^\s*(\w+) -> (\w+);$")


def parse(dot: str) -> tuple[dict[str, tuple[str, str]], set[tuple[str, str]]]:
    """(node -> (shape, label), edges) of the DOT text; every other line is the frame."""
    lines = dot.strip().splitlines()
    assert lines[0] == "digraph tape {" and lines[-1] == "}"
    nodes, edges = {}, set()
    for line in lines[1:-1]:
        if m := NODE.match(line):
            nodes[m[1]] = (m[2], m[3])
        elif m := EDGE.match(line):
            edges.add((m[1], m[2]))
        else:
            assert line.strip() in ("rankdir=LR;", 'node [fontname="Helvetica"];'), line
    assert all(a in nodes and b in nodes for a, b in edges)
    return nodes, edges


def micrograd_example():
    """The seeds' and micrograd's example: L = (a * b + c) * f, on a fresh tape."""
    a, b, c, f = (tg.Value(v, label=n) for v, n in ((2.0, "a"), (-3.0, "b"), (10.0, "c"), (-2.0, "f")))
    with tg.recording():
        L = (a * b + c) * f
    return L, (a, b, c, f)


def test_values_ops_and_gradients():
    L, _ = micrograd_example()
    nodes, edges = parse(tg.viz.to_dot(L))
    boxes = {label for shape, label in nodes.values() if shape == "record"}
    ovals = sorted(label for shape, label in nodes.values() if shape == "ellipse")
    assert ovals == ["*", "*", "+"]
    assert "{ a | data 2.0000 }" in boxes and "{ v6 | data -8.0000 }" in boxes
    assert len(edges) == 3 * 3  # each op: two operands in, one result out
    L.backward()
    boxes = {label for shape, label in parse(tg.viz.to_dot(L))[0].values() if shape == "record"}
    for text in ("{ a | data 2.0000 | grad 6.0000 }", "{ b | data -3.0000 | grad -4.0000 }",
                 "{ c | data 10.0000 | grad -2.0000 }", "{ f | data -2.0000 | grad 4.0000 }",
                 "{ v6 | data -8.0000 | grad 1.0000 }"):
        assert text in boxes


def test_only_what_the_output_depends_on():
    x = tg.tensor(1.5, requires_grad=True)
    with tg.recording():
        unused = tg.sin(x) * 3.0
        y = x * x
    nodes, _ = parse(tg.viz.to_dot(y))
    assert sorted(label for shape, label in nodes.values() if shape == "ellipse") == ["*"]
    everything, _ = parse(y.tape.to_dot())
    assert sorted(label for shape, label in everything.values() if shape == "ellipse") == [
        "*",
        "* 3.0000",
        "sin",
    ]
    assert unused.item() != 0.0


def test_arrays_constants_and_a_cap():
    x = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = (tg.tanh(x) * 2.0).sum()
    nodes, edges = parse(tg.viz.to_dot(y))
    ovals = sorted(label for shape, label in nodes.values() if shape == "ellipse")
    assert ovals == ["* 2.0000", "sum", "tanh"]
    assert any("data [0." in label for shape, label in nodes.values() if shape == "record")
    z = tg.tensor(0.5, requires_grad=True)
    for _ in range(100):
        z = z * 1.01
    nodes, _ = parse(tg.viz.to_dot(z, max_nodes=10))
    assert sum(shape == "record" for shape, _ in nodes.values()) == 10


def test_bad_input():
    with pytest.raises(TypeError, match="to_dot: .*float"):
        tg.viz.to_dot(1.0)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_render_png(tmp_path):
    L, _ = micrograd_example()
    path = tg.viz.render(L, str(tmp_path / "graph.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_render_says_how_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    L, _ = micrograd_example()
    with pytest.raises(RuntimeError, match="apt install graphviz"):
        tg.viz.render(L, "graph.svg")
