"""The benchmark script runs end to end (at a tiny size) and its dlrcore rows are accurate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_exact_tiny(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_exact.py"), "--sizes", "tiny", "--repeats", "1",
         "--batch-rows", "300", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"floor (ssyrk of [X, F])", "dlrcore stream", "dlrcore one-shot", "numpy naive"}
    for name in ("dlrcore stream", "dlrcore one-shot"):
        assert rows[name]["abs_error"] < 1e-5 and rows[name]["median_s"] > 0
    assert "x floor" in run.stdout


def test_bench_output_kernel_tiny(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_output_kernel.py"), "--sizes", "tiny", "--repeats", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"dlrcore dlr()", "finish, both kernels", "finish, literal only", "numpy svd"}
    # dlrcore's float64 moments against the float64 SVD reference (relative accuracy of the alignment ~1e-12)
    assert rows["dlrcore dlr()"]["abs_error"] < 1e-9 and rows["finish, both kernels"]["abs_error"] < 1e-9
    assert rows["numpy svd"]["abs_error"] < 1e-4  # float32 products
