"""The snippets of docs/choosing.md and docs/suggest.md run, in order, as documented."""

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
