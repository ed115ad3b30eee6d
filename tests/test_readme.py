"""The README's Python examples run."""

import pathlib
import re

import pytest

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})


def test_readme_quickstart_prints_the_seeds_numbers(capsys):
    exec(compile(BLOCKS[0], "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["tensor(2.) tensor(0.3536)", "(tensor(26.),)", "8.0"]


def test_readme_lists_every_op():
    from tapegrad.kernels.table import OPS

    table = README[README.index("### Supported ops") :]
    missing = [s.name for s in OPS if f"`{s.name}`" not in table]
    assert not missing


def test_readme_op_page_is_generated_from_the_table():
    from tapegrad.kernels.table import OPS

    from tapegrad import ops_page

    page = ops_page.render()
    assert page in README, "README's op page is stale: run python -m tapegrad.ops_page --write"
    assert all(f"| `{s.name}` |" in page for s in OPS) and page.count("\n| `") == len(OPS)


def test_type_stubs_are_generated_from_the_table():
    """functions.pyi and _op_methods.pyi declare what the op table installs at runtime."""
    from pathlib import Path

    import tapegrad
    from tapegrad import stubs

    here = Path(tapegrad.__file__).parent
    for name, make in stubs.STUBS.items():
        assert (here / name).read_text() == make(), f"{name} is stale: run python -m tapegrad.stubs --write"
    import tapegrad.functions as functions

    assert sorted(functions.__all__) == sorted(stubs.functions_stub().split("__all__ = [")[1].replace("'", "")
                                               .replace(",", "").split()[:-1])


def test_typed_usage_runs():
    """tests/typed_api.py, which mypy checks in .ci/run, also runs."""
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).with_name("typed_api.py")), run_name="__main__")


def test_every_public_name_has_a_docstring():
    import inspect

    import tapegrad as tg

    missing = []
    modules = (tg, tg.nn, tg.nn.functional, tg.optim, tg.viz, tg.optimize, tg.autograd)
    for module in modules:
        for name in getattr(module, "__all__", [n for n in dir(module) if not n.startswith("_")]):
            obj = getattr(module, name)
            if not (callable(obj) and (getattr(obj, "__module__", None) or "").startswith("tapegrad")):
                continue
            if not (obj.__doc__ or "").strip():
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj):
                missing += [f"{name}.{m}" for m, f in vars(obj).items()
                            if not m.startswith("_") and callable(f) and not (f.__doc__ or "").strip()]
    assert not missing, missing
