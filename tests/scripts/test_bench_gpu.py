"""benchmarks/bench_gpu.py: the GPU benchmark's code path runs end to end on the host (--backend numpy)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_host_backend_tiny(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--backend", "numpy", "--sizes", "tiny", "--repeats", "1",
                          "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["environment"]["backend"] == "numpy"
    rows = data["rows"]
    assert {r["spectrum"] for r in rows} == {"flat", "decaying"}
    for spectrum in ("flat", "decaying"):
        sub = {r["method"]: r for r in rows if r["spectrum"] == spectrum}
        dev, host = sub["device exact"], sub["host exact"]
        # the exact path matches the independent float64 reference, on the "device" arrays and on the host
        assert dev["abs_error"] < 1e-5 and host["abs_error"] < 1e-5
        assert dev["result_method"] == "exact" and dev["error_estimate"] is None
        approx = [r for m, r in sub.items() if "sketch" in m or "randomized" in m]
        assert len(approx) == 4
        for r in approx:
            assert r["result_method"] in ("sketch", "randomized")
            assert r["error_estimate"] is not None and r["abs_error"] < 0.1, r
        assert all(r["gpu_pool_mb"] is None for r in sub.values())  # no device pool on the host


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed: the GPU run is real")
def test_bench_gpu_without_cupy_says_so():
    run = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "tiny"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode != 0
    assert "no usable CuPy GPU" in run.stderr and "--backend numpy" in run.stderr
