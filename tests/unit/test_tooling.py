"""Lint, types and packaging facts, checked in the default test run (so `.ci/run`, which runs the README's test
command, checks them too): ruff with the rule selection pinned in pyproject.toml, mypy on the whole package
(strict on the algebra), one source for the version, and the py.typed marker shipped with the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dlrcore

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          check=False)


def test_ruff_finds_nothing():
    done = run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_finds_nothing_in_the_package():
    done = run("mypy")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["files"] == ["dlrcore"], "mypy checks the whole package"
    strict = config["overrides"][0]
    assert strict["disallow_untyped_defs"] and {"dlrcore.exact", "dlrcore.result"} <= set(strict["module"])


def test_the_version_has_one_source_and_types_ship():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and meta["project"]["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dlrcore.__version__"}
    assert (Path(dlrcore.__file__).parent / "py.typed").is_file()
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["dlrcore"]
