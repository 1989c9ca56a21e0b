"""The snippets of docs/choosing.md, docs/suggest.md and the README's Usage run, in order,
as documented."""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).parents[1] / "docs"


def _blocks(page):
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("page", ["choosing.md", "suggest.md"])
def test_every_python_block_runs(page, capsys):
    blocks = _blocks(page)
    assert len(blocks) >= 3
    namespace = {"__name__": f"docs_{page}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page} block {i + 1}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"{page}, python block {i + 1} failed:\n{code}") from error
    out = capsys.readouterr().out
    if page == "choosing.md":
        # the zero-initialization section: symmetric before and after training
        assert "[1.0, 1.0, 1.0]" in out
        assert "symmetric" in str(namespace["health"])
        assert namespace["suggestion"].best is not None


@pytest.mark.backend_agnostic
def test_the_readme_usage_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's Usage blocks used data they never defined, and Keras' TensorBoard
    callback, which failed on JAX and torch without TensorFlow."""
    readme = (DOCS.parent / "README.md").read_text()
    usage = readme[readme.index("## Usage") : readme.index("\n## ", readme.index("## Usage") + 1)]
    blocks = re.findall(r"^```python\n(.*?)^```", usage, re.S | re.M)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # its log_dir="logs"
    namespace = {"__name__": "readme"}
    for i, code in enumerate(blocks):
        code = code.replace("epochs=10", "epochs=2")  # the same fit, shorter
        try:
            exec(compile(code, f"README block {i + 1}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"README, python block {i + 1} failed:\n{code}") from error
    assert (tmp_path / "logs" / "train").is_dir() and (tmp_path / "logs" / "initkit").is_dir()
    assert "LSUV" in capsys.readouterr().out
