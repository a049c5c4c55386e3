"""Out-of-core streaming of ``.npy`` files: bench_outofcore.py's runs as a pytest-benchmark group.

The files are written once per session by ``bench_outofcore.make_data`` (n = 2e4, the first ``--quick`` size, at
the script's default p = 1024 and C = 10) into a temporary folder, and read in ``dlr compute``'s row blocks. Members
are the script's child runs, called in this process for their time (the script runs each in a fresh process for
its peak memory): the read floor (positioned reads, a float64 sum per block), the same over memory maps, ``dlr
compute`` exact and ``--method sketch``; beside them the naive route, ``np.load`` of both files and the NumPy
formula on float64 copies. The files were just written, so this is a warm page cache, not the disk.
"""

from __future__ import annotations

import _suite
import bench_exact as be
import bench_outofcore as bo
import numpy as np
import pytest

from dlrcore.arrayfiles import batch_rows_for

N = bo.parse_sizes(bo.QUICK_SIZES)[0]
P, C = 1024, 10  # the script's defaults (--p, --C)
NAIVE64 = "numpy naive float64 (np.load)"
LABELS = {**{kind: kind for kind in bo.RUNS}, NAIVE64: "numpy-naive-float64"}
GROUP = f"outofcore .npy n={N} p={P} C={C} (warm page cache)"
PARAMS = [pytest.param(label, id=ident, marks=pytest.mark.benchmark(group=GROUP)) for label, ident in LABELS.items()]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outofcore")
    feats, outs = bo.make_data(folder, N, P, C)
    x, f = np.load(feats), np.load(outs)
    yield {
        "features": str(feats),
        "outputs": str(outs),
        "batch_rows": batch_rows_for(4 * (P + C)),
        "reference": be.reference_dlr(x, f),
        "checksum": float(x.sum(dtype=np.float64) + f.sum(dtype=np.float64)),
        "abs_sum": float(np.abs(x).sum(dtype=np.float64) + np.abs(f).sum(dtype=np.float64)),
    }
    for path in (feats, outs):
        path.unlink()


def naive(features: str, outputs: str) -> dict:
    return {"value": be.naive_numpy_float64(np.load(features), np.load(outputs))}


@pytest.mark.parametrize("label", PARAMS)
def test_outofcore(benchmark, measure, files, label):
    feats, outs, rows = files["features"], files["outputs"], files["batch_rows"]
    if label == NAIVE64:
        out = measure(lambda: naive(feats, outs))
    else:
        out = measure(lambda: bo.child(label, feats, outs, rows))
    role = {"floor": "floor", "floor-mmap": "floor (mmap)", NAIVE64: "numpy"}.get(label, "dlrcore")
    _suite.record(benchmark, n=N, p=P, C=C, method=label, role=role, batch_rows=rows, bytes_read=4 * N * (P + C))
    if label.startswith("floor"):
        # float64 sums of all n (p + C) values, in blocks against in one go: at most n (p + C) u64 times the sum of
        # their magnitudes apart on each side (it checks that the floor read everything)
        tol = 2 * N * (P + C) * _suite.U64 * files["abs_sum"]
        assert abs(out["checksum"] - files["checksum"]) <= tol, (out["checksum"], files["checksum"], tol)
        return
    err = abs(out["value"] - files["reference"])
    est = out.get("error_estimate")
    if label == "exact":
        tol = _suite.DLRCORE_EXACT_TOL  # float32 products folded into float64 (docs/dlr.md, "Precision")
    elif label == "sketch":
        assert est is not None and est > 0, out
        tol = est  # dlrcore's own 99.73 % interval, fixed seed and data (docs/sketch.md)
    else:
        tol = _suite.tol_float64(N)  # float64 products of length n, against a float64 reference
    _suite.record(benchmark, value=out["value"], reference=files["reference"], abs_error=err, tolerance=tol,
                  error_estimate=est)
    assert err <= tol, (label, out["value"], files["reference"], err, tol)
