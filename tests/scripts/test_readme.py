"""The README's quick start runs as written (issue 14): from a model to a number to a figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the quick start holds one python block"
    return blocks[0]


def test_the_quick_start_runs_and_draws_the_figure(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    run = subprocess.run([sys.executable, "-c", quick_start()], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                        "MPLBACKEND": "Agg", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "D_half" in run.stdout and "D_LR" in run.stdout
    assert (tmp_path / "spectrum.png").stat().st_size > 10_000
