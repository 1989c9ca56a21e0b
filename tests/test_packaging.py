"""Cheap checks that the README, CI, metadata and public face agree."""

import ast
import configparser
import re
import tomllib
from pathlib import Path

import keras_initkit

ROOT = Path(__file__).resolve().parents[1]


def _section(markdown, title):
    """The text of the `## title` section, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _fenced_commands(markdown):
    """Non-empty, non-comment lines of the fenced code blocks in `markdown`."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.M | re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_one():
    quick_start = _section((ROOT / "README.md").read_text(), "Quick start")
    commands = _fenced_commands(quick_start)
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("tox -e demo"), demo
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines, f"{tests!r} is not a line of .ci/run"


def test_version_and_public_names():
    tree = ast.parse((ROOT / "keras_initkit" / "version.py").read_text())
    literal = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "__version__"
    )
    assert keras_initkit.__version__ == literal
    assert keras_initkit.__all__, "keras_initkit.__all__ is empty"
    missing = [name for name in keras_initkit.__all__ if not hasattr(keras_initkit, name)]
    assert not missing, f"keras_initkit.__all__ names missing attributes: {missing}"


def test_setup_cfg_is_the_metadata_source():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "project" not in pyproject, "pyproject.toml must not have a [project] table"
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(ROOT / "setup.cfg")
    assert setup_cfg["metadata"]["version"] == "attr: keras_initkit.version.__version__"
