"""The framework example scripts run at their quick size and show D_LR falling as the network trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torch_example_quick(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "torch_mlp_trajectory.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    records = json.loads((tmp_path / "torch_records.json").read_text())
    assert len(records) >= 3 and records[0]["step"] == 0
    assert records[-1]["dlr"] < records[0]["dlr"] - 0.2  # training with MSE on one-hot targets makes it richer
    assert (tmp_path / "torch_trajectory.png").stat().st_size > 10_000
    assert (tmp_path / "torch_spectrum.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("framework, module", [("jax", "flax"), ("keras", "tensorflow")])
def test_jax_and_keras_examples_quick(tmp_path, framework, module):
    pytest.importorskip(module)
    pytest.importorskip("matplotlib")
    script = ROOT / "examples" / f"{framework}_mlp_trajectory.py"
    run = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    records = json.loads((tmp_path / f"{framework}_records.json").read_text())
    assert len(records) >= 3
    assert records[-1]["dlr"] < records[0]["dlr"] - 0.1  # MSE training towards one-hot targets: richer
    assert (tmp_path / f"{framework}_trajectory.png").stat().st_size > 10_000
