"""D_half beside the literal value: the cases of bench_output_kernel.py as pytest-benchmark groups, one per size.

Members, on the same float32 data (``bench_output_kernel.make_data``, anisotropic outputs), from
``bench_output_kernel.build_methods``: ``dlrcore.dlr`` (both values), the finishing step for both kernels and for
the literal value alone (on moments accumulated once), and the NumPy SVD route a user would write; beside them the
exact path's cost floor (``bench_exact``'s ``ssyrk`` of ``[features, outputs]``) and the same SVD route in float64
(the reference's own formula, the naive float64 member). D_half is checked against ``svd_d_half(..., float64)``,
the literal value against ``bench_exact.reference_dlr``.
"""

from __future__ import annotations

import math

import _suite
import bench_exact as be
import bench_output_kernel as bok
import numpy as np
import pytest

SVD64 = "numpy svd float64"
IDS = {
    be.FLOOR: "floor",
    "dlrcore dlr()": "dlrcore-dlr",
    "finish, both kernels": "finish-both-kernels",
    bok.LITERAL_ONLY: "finish-literal-only",
    "numpy svd": "numpy-svd-float32",
    SVD64: "numpy-svd-float64",
}
SIZES = _suite.sizes(bok.SIZES, default=["small"])


def group(size: str) -> str:
    n, p, C = bok.SIZES[size]
    return f"output kernel {size} (n={n}, p={p}, C={C})"


PARAMS = [
    pytest.param(size, label, id=f"{size}-{IDS[label]}", marks=pytest.mark.benchmark(group=group(size)))
    for size in SIZES
    for label in IDS
]


def setup(size: str) -> dict:
    n, p, C = bok.SIZES[size]
    x, f = bok.make_data(n, p, C)
    calls = {be.FLOOR: be.build_methods(x, f, n)[be.FLOOR], **bok.build_methods(x, f)}
    calls[SVD64] = lambda: bok.svd_d_half(x, f, np.float64)
    return {"n": n, "p": p, "C": C, "calls": calls, "reference_half": bok.svd_d_half(x, f, np.float64),
            "reference_literal": be.reference_dlr(x, f)}


def tolerance(label: str, n: int) -> float:
    if label == "numpy svd":
        return _suite.tol_float32(n)  # centering, SVD and products of length n in float32
    if label == SVD64:
        return _suite.tol_float64(n)  # the reference's own formula: float64 rounding on both sides
    return _suite.DLRCORE_EXACT_TOL  # dlrcore's moments from float32 products (docs/dlr.md, "Precision")


@pytest.mark.parametrize(("size", "label"), PARAMS)
def test_output_kernel(benchmark, measure, case_cache, size, label):
    case = case_cache.get(("output kernel", size), lambda: setup(size))
    value = measure(case["calls"][label])
    role = "floor" if label == be.FLOOR else "numpy" if label.startswith("numpy") else "dlrcore"
    _suite.record(benchmark, n=case["n"], p=case["p"], C=case["C"], method=label, role=role)
    if label == be.FLOOR:
        assert math.isnan(value)  # the floor computes no D_LR
        return
    ref = case["reference_literal"] if label == bok.LITERAL_ONLY else case["reference_half"]
    err = abs(value - ref)
    tol = tolerance(label, case["n"])
    _suite.record(benchmark, value=value, reference=ref, abs_error=err, tolerance=tol,
                  quantity="literal D_LR" if label == bok.LITERAL_ONLY else "D_half")
    assert err <= tol, (label, value, ref, err, tol)
