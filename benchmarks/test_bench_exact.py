"""Exact D_LR: the cases of bench_exact.py as pytest-benchmark groups, one per size.

Members, on the same float32 data (``bench_exact.make_data``): the cost floor (one ``ssyrk`` Gram of
``[features, outputs]``), dlrcore streamed (``DLRStats.update`` over 10 000-row batches) and one-shot
(``dlrcore.dlr``), the naive NumPy route on the float32 arrays and on float64 copies. Accuracy against
``bench_exact.reference_dlr`` (float64 centering, ``scipy.linalg.qr``, float64 Gram) in each test.
"""

from __future__ import annotations

import math

import _suite
import bench_exact as be
import pytest

BATCH_ROWS = 10_000  # the script's default --batch-rows
NAIVE64 = "numpy naive float64"
IDS = {
    be.FLOOR: "floor",
    "dlrcore stream": "dlrcore-stream",
    "dlrcore one-shot": "dlrcore-oneshot",
    "numpy naive": "numpy-naive-float32",
    NAIVE64: "numpy-naive-float64",
}
SIZES = _suite.sizes(be.SIZES, default=["small"])


def group(size: str) -> str:
    n, p, C = be.SIZES[size]
    return f"exact {size} (n={n}, p={p}, C={C})"


PARAMS = [
    pytest.param(size, label, id=f"{size}-{IDS[label]}", marks=pytest.mark.benchmark(group=group(size)))
    for size in SIZES
    for label in IDS
]


def tolerance(label: str, n: int) -> float:
    if label.startswith("dlrcore"):
        return _suite.DLRCORE_EXACT_TOL  # float32 products folded into float64 (docs/dlr.md, "Precision")
    if label == NAIVE64:
        return _suite.tol_float64(n)  # float64 products of length n, against a float64 reference
    return _suite.tol_float32(n)  # "numpy naive": centering, QR and Gram of length-n products in float32


def setup(size: str) -> dict:
    n, p, C = be.SIZES[size]
    x, f = be.make_data(n, p, C)
    calls = be.build_methods(x, f, BATCH_ROWS)
    calls[NAIVE64] = lambda: be.naive_numpy_float64(x, f)
    return {"n": n, "p": p, "C": C, "calls": calls, "reference": be.reference_dlr(x, f)}


@pytest.mark.parametrize(("size", "label"), PARAMS)
def test_exact(benchmark, measure, case_cache, size, label):
    case = case_cache.get(("exact", size), lambda: setup(size))
    value = measure(case["calls"][label])
    role = "floor" if label == be.FLOOR else "dlrcore" if label.startswith("dlrcore") else "numpy"
    _suite.record(benchmark, n=case["n"], p=case["p"], C=case["C"], method=label, role=role,
                  reference=case["reference"])
    if label == be.FLOOR:
        assert math.isnan(value)  # the floor computes no D_LR
        return
    err = abs(value - case["reference"])
    tol = tolerance(label, case["n"])
    _suite.record(benchmark, value=value, abs_error=err, tolerance=tol)
    assert err <= tol, (label, value, case["reference"], err, tol)
