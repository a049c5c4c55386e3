"""examples/output_kernel_digits.py at its quick size: rich and lazy digits MLPs under cross-entropy and MSE.

Margins come from seeds 0, 1 and 2 at the quick size (docs/output-kernel.md): under cross-entropy D_half read
0.019-0.030 (rich) against 0.51-0.61 (lazy), the lazy hidden weights moved 2.5e-3 of their norm and the rich ones
17 times it; under MSE the literal D_LR read 0.13-0.15 against 0.64-0.71. The asserted margins are a third to a
half of those gaps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "output_kernel_digits.py"


@pytest.mark.slow
def test_quick_run_separates_rich_from_lazy_under_both_losses(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], check=False,
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "output_kernel_digits.json").read_text())
    runs = {(r["loss"], r["regime"]): r for r in doc["runs"]}
    assert set(runs) == {("ce", "rich"), ("ce", "lazy"), ("mse", "rich"), ("mse", "lazy")}
    for r in runs.values():
        assert r["test_acc"] >= 0.9, r  # every network learned the task
    for loss in ("ce", "mse"):
        rich, lazy = runs[(loss, "rich")], runs[(loss, "lazy")]
        # the regimes are what they claim to be: lazy hidden weights barely move, rich ones travel far
        assert lazy["hidden_weight_change"] < 1e-2 and rich["hidden_weight_change"] > 1.0, (rich, lazy)
    ce_rich, ce_lazy = runs[("ce", "rich")], runs[("ce", "lazy")]
    # cross-entropy: D_half separates the regimes with a wide margin, and the rich value is far below what random
    # readouts of the same features score
    assert ce_rich["dlr_sqrt"] <= 0.1 and ce_lazy["dlr_sqrt"] >= ce_rich["dlr_sqrt"] + 0.3, (ce_rich, ce_lazy)
    assert ce_rich["dlr_sqrt"] <= ce_rich["baseline_sqrt"] - 0.05
    # the literal value is reported beside it, and reads far higher than D_half on the rich cross-entropy logits
    assert ce_rich["dlr_span"] >= ce_rich["dlr_sqrt"] + 0.15
    assert "anisotropic outputs" in ce_rich["warnings"]  # the warning that names D_half
    mse_rich, mse_lazy = runs[("mse", "rich")], runs[("mse", "lazy")]
    assert mse_lazy["dlr_span"] >= mse_rich["dlr_span"] + 0.25, (mse_rich, mse_lazy)
    assert abs(mse_rich["dlr_span"] - mse_rich["dlr_sqrt"]) <= 0.05  # near-isotropic MSE outputs: the two agree
    # untrained features read out by random layers of growing width: D_half falls with C although nothing was
    # trained, while the literal value does not (docs/output-kernel.md, "Failure modes"), and wide heads warn
    wide = doc["untrained"]
    assert [w["C"] for w in wide] == sorted(w["C"] for w in wide) and wide[-1]["C"] > wide[-1]["p"]
    assert wide[-1]["dlr_sqrt"] <= 0.3 and wide[0]["dlr_sqrt"] >= wide[-1]["dlr_sqrt"] + 0.2
    assert wide[-1]["dlr_span"] >= wide[0]["dlr_span"] - 0.05
    assert "wide outputs" in wide[-1]["warnings"] and "wide outputs" not in wide[0]["warnings"]
