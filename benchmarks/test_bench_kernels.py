"""The staging pass of Moments: the segments of bench_kernels.py as pytest-benchmark groups, one per shape.

Members, on the same float32 segment (``bench_kernels.make_segment``, a fresh ``default_rng(0)`` per shape, as the
script): the traffic floor (``bench_kernels.copy_floor``: one read of x, one write of the stage), the NumPy staging
dlrcore used before the kernel (``bench_kernels.numpy_staging``: subtract, float32 column sums, BLAS dot) and the
fused kernel ``dlrcore.kernels.shift_into`` (Numba, or its NumPy fallback: the backend is in the group's name).
Checked in each test: the written stage (bitwise equal to ``np.subtract(x, shift)`` in float32, the kernel's
documented semantics) and the column sums and sum of squares against float64 sums of the same values.
"""

from __future__ import annotations

import _suite
import bench_kernels as bk
import numpy as np
import pytest

from dlrcore import kernels

MEMBERS = {"floor (copy x into the stage)": ("floor", bk.copy_floor),
           "numpy staging": ("numpy-staging", bk.numpy_staging),
           "kernel shift_into": ("kernel-shift-into", kernels.shift_into)}
ROLES = {"floor": "floor", "numpy-staging": "numpy", "kernel-shift-into": "dlrcore"}
PARAMS = [
    pytest.param(n, p, label, id=f"{n}x{p}-{ident}",
                 marks=pytest.mark.benchmark(group=f"staging {n} x {p} float32 (kernels backend {kernels.BACKEND})"))
    for n, p in bk.SIZES
    for label, (ident, _) in MEMBERS.items()
]


def setup(n: int, p: int) -> dict:
    x, shift, stage = bk.make_segment(n, p, np.random.default_rng(0))
    ref_stage = np.empty_like(x)
    np.subtract(x, shift, out=ref_stage, casting="unsafe")
    s64 = ref_stage.astype(np.float64)
    return {"x": x, "shift": shift, "stage": stage, "ref_stage": ref_stage,
            "colsum": s64.sum(axis=0), "colabs": np.abs(s64).sum(axis=0), "sumsq": float(np.sum(s64 * s64))}


@pytest.mark.parametrize(("n", "p", "label"), PARAMS)
def test_staging(benchmark, measure, case_cache, n, p, label):
    case = case_cache.get(("staging", n, p), lambda: setup(n, p))
    fn = MEMBERS[label][1]
    x, shift, stage = case["x"], case["shift"], case["stage"]
    stage.fill(np.nan)
    out = measure(lambda: fn(x, shift, stage))
    _suite.record(benchmark, n=n, p=p, method=label, role=ROLES[MEMBERS[label][0]], backend=kernels.BACKEND,
                  bytes_moved=2 * x.nbytes)
    if label.startswith("floor"):
        return  # a copy: nothing to check beyond its traffic
    assert np.array_equal(stage, case["ref_stage"])  # same values written, bitwise
    colsum, sumsq = out
    col_err = float(np.max(np.abs(np.asarray(colsum, dtype=np.float64) - case["colsum"]) / case["colabs"]))
    sq_err = abs(sumsq - case["sumsq"]) / case["sumsq"]
    if label == "numpy staging":
        # float32 column sums, row after row: at most n u32 times sum |values| per column (deterministic bound);
        # float32 BLAS dot of n p terms: the probabilistic bound lam sqrt(n p) u32 (the deterministic n p u32 is
        # vacuous at these sizes)
        col_tol, sq_tol = n * _suite.U32, _suite.LAMBDA * np.sqrt(n * p) * _suite.U32
    else:
        # float64 sums of the written float32 values, in any order: at most n u64 (columns) and n p u64 (sum of
        # squares) relative, on each side of the comparison
        col_tol, sq_tol = 2 * n * _suite.U64, 2 * n * p * _suite.U64
    _suite.record(benchmark, colsum_rel_error=col_err, sumsq_rel_error=sq_err, colsum_tolerance=col_tol,
                  sumsq_tolerance=float(sq_tol))
    assert col_err <= col_tol and sq_err <= sq_tol, (label, col_err, col_tol, sq_err, sq_tol)
