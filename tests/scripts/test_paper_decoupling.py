"""The paper-reproduction scripts (experiments 1 and 3 of docs/paper.md) run at --quick size with a fixed seed
and show the direction of the paper's effects that reproduce robustly at that size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, out: Path, *extra: str) -> dict:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--quick", "--seed", "0", "--out", str(out), *extra],
        check=False, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / script.replace("paper_", "").replace(".py", ".json")).read_text())


@pytest.mark.slow
def test_decoupling_quick(tmp_path):
    res = _run("paper_decoupling.py", tmp_path)
    mse = res["mse"]["summary"]
    rich, lazy = mse["all_layers"], mse["last_layer_only"]
    # both networks fit the (leaked) training data
    assert rich["train_acc_leaked"]["mean"] > 0.95 and lazy["train_acc_leaked"]["mean"] > 0.95
    # the paper's claim: training all layers gives richer dynamics (lower D_LR) than training the last layer only,
    # measured on held-out inputs of the training distribution (with the label code). Seeds 0-2 at this size:
    # 0.021-0.025 against 0.240-0.257. (On clean inputs the two are close at this size, 0.33-0.35 against
    # 0.31-0.33, and not asserted: see docs/paper.md.)
    assert rich["dlr_leaked"]["mean"] <= lazy["dlr_leaked"]["mean"] - 0.1
    assert rich["dlr_leaked"]["mean"] < 0.1  # near neural collapse onto the label code
    assert "ce" in res and set(res["ce"]["summary"]) == {"init", "all_layers", "last_layer_only"}
    for name in ("decoupling_spectrum_leaked.png", "decoupling_spectrum_clean.png"):
        assert (tmp_path / name).stat().st_size > 10_000


@pytest.mark.paper  # 40-90 s of four trainings: outside the default run (python -m pytest -m paper)
def test_factors_quick(tmp_path):
    res = _run("paper_factors.py", tmp_path)
    table = {(e["bn"], e["lr"]): e for e in res["table"]}
    assert set(table) == {(False, 0.01), (False, 0.1), (True, 0.01), (True, 0.1)}
    assert not any(e["diverged"] for e in table.values())
    # Robust over seeds 0-2 at this size: batch normalization is more accurate at the same learning rate, and the
    # larger learning rate gives lower D_LR with and without it. The paper's "batch normalization lowers D_LR" did
    # NOT reproduce here (at lr 0.1 D_LR is higher with it), so it is not asserted: see docs/paper.md.
    for lr in (0.01, 0.1):
        assert table[(True, lr)]["test_acc"] >= table[(False, lr)]["test_acc"] + 0.02
    for bn in (False, True):
        assert table[(bn, 0.1)]["dlr"] <= table[(bn, 0.01)]["dlr"] - 0.05
    assert (tmp_path / "factors.png").stat().st_size > 10_000
