"""The sketch benchmark runs end to end at a tiny size: every available method has a row, the figure is a PNG."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import dlrcore

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = {"sklearn": "sklearn", "fbpca": "fbpca", "torch": "torch"}


def _has_method_argument() -> bool:
    params = inspect.signature(dlrcore.dlr).parameters
    return "method" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_bench_sketch_tiny(tmp_path):
    out = tmp_path / "bench.json"
    fig = tmp_path / "bench.png"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_sketch.py"), "--sizes", "tiny", "--repeats", "1",
         "--batch-rows", "700", "--json", str(out), "--figure", str(fig)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["spectrum"] for r in rows} == {"flat", "decaying"}
    for spectrum in ("flat", "decaying"):
        sub = [r for r in rows if r["spectrum"] == spectrum]
        families = {r["family"] for r in sub}
        assert {"floor", "exact"} <= families
        ref = sub[0]["reference"]
        assert ref is not None and 0.0 < ref < 1.0
        exact = next(r for r in sub if r["family"] == "exact")
        assert exact["abs_error"] < 1e-5 and exact["median_s"] > 0
        floor = next(r for r in sub if r["family"] == "floor")
        assert floor["footprint_ratio_to_floor"] == 1.0
        # the shared output side is timed and reported against exact, and it is part of exact's own work
        ofloor = next(r for r in sub if r["family"] == "output-floor")
        assert ofloor["median_s"] > 0
        t = next(t for t in data["targets"] if t["case"] == "tiny" and t["spectrum"] == spectrum)
        assert t["output_floor_ratio_to_exact"] == ofloor["median_s"] / exact["median_s"]
        assert t["floors_ratio_to_exact"] == (ofloor["median_s"] + floor["median_s"]) / exact["median_s"]

        # a row for each library that is importable here, none for those that are not (and the script says so)
        for family, module in LIBRARIES.items():
            lib_rows = [r for r in sub if r["family"] == family]
            if importlib.util.find_spec(module) is None:
                assert not lib_rows and family in data["skipped"]
                continue
            assert len(lib_rows) >= 2, family
            for r in lib_rows:
                assert "failed" not in r, r
                assert math.isfinite(r["dlr"]) and math.isfinite(r["abs_error"]) and r["median_s"] > 0, r
            # the rank sweep converges towards the exact value
            by_rank = sorted(lib_rows, key=lambda r: r["params"]["rank"])
            assert by_rank[-1]["abs_error"] < by_rank[0]["abs_error"], family

        # dlrcore's randomized and sketch estimators, once this dlrcore has them
        expected = (["randomized", "sketch"] if _has_method_argument() else []) + (
            ["sketch-stream"] if hasattr(dlrcore, "DLRSketch") else [])
        for family in expected:
            mine = [r for r in sub if r["family"] == family]
            assert mine, family
            for r in mine:
                assert "failed" not in r, r
                assert r["abs_error"] < 0.05, r
                assert r["error_estimate"] is None or r["error_estimate"] >= 0, r
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "x floor mem" in run.stdout and "targets" in run.stdout
