"""Packaging: the command line installs as `vocabshift_cli` (never a top-level `cli`), and every
subpackage of vocabshift is in pyproject's hand-written package list."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_subpackage_is_listed_and_cli_installs_as_vocabshift_cli():
    config = _setuptools()
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vocabshift").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "cli" not in listed and "vocabshift_cli" in listed
    assert config["tool"]["setuptools"]["package-dir"] == {"vocabshift_cli": "cli"}
    assert config["project"]["scripts"]["vocabshift"] == "vocabshift_cli.main:main"


def test_cli_modules_import_each_other_relatively():
    # `from cli.x import` would work in the source tree and fail once installed as vocabshift_cli
    for path in (REPO / "cli").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from cli\b|import cli\b)", text, re.M), path.name
