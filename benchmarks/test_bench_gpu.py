"""dlrcore on GPU arrays: bench_gpu.py's rows as pytest-benchmark groups, one per (size, spectrum).

Skipped unless CuPy sees a GPU. ``DLRCORE_BENCH_XP=numpy`` runs the same tests on the host (``bench_gpu.py
--backend numpy``): a check of this file where no GPU is present, not a measurement.

Members, on bench_sketch's data copied to the device once: two device floors (one pass, ``X.sum(axis=0)`` in
float64 and the same for F; and the Gram of ``[X, F]`` by one matrix product, the exact path's floor), and
``bench_gpu.build_methods``: dlrcore exact, sketch and randomized on the device arrays, exact and sketch on the host
copies. Every timed call ends with a device synchronization. Accuracy against ``bench_exact.reference_dlr``.
"""

from __future__ import annotations

import os

import _suite
import bench_exact as be
import bench_gpu as bg
import bench_sketch as bs
import numpy as np
import pytest

XP = os.environ.get("DLRCORE_BENCH_XP", "cupy")
if XP != "numpy":
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install '.[gpu]')")

SEED = 0
HOST_EXACT_MAX_P = 4096  # the script's default --host-exact-max-p
FLOORS = ["device floor (one pass: sum of X and F)", "device floor (Gram of [X, F], one product)"]
SIZES = _suite.sizes(bg.SIZES, default=["small"], allowed=[s for s, (_, p, _) in bg.SIZES.items() if p <= 4096])


def labels(size: str) -> list[str]:
    """The script's rows for this size (``build_methods`` only reads the width of ``x`` to list them)."""
    p = bg.SIZES[size][1]
    return FLOORS + list(bg.build_methods(np.empty((0, p), np.float32), None, None, None, HOST_EXACT_MAX_P, SEED))


def group(size: str, spectrum: str) -> str:
    n, p, C = bg.SIZES[size]
    return f"gpu ({XP}) {size} {spectrum} (n={n}, p={p}, C={C})"


PARAMS = [
    pytest.param(size, spectrum, label, id=f"{size}-{spectrum}-{_suite.slug(label)}",
                 marks=pytest.mark.benchmark(group=group(size, spectrum)))
    for size in SIZES
    for spectrum in bs.SPECTRA
    for label in labels(size)
]


@pytest.fixture(scope="module")
def xp():
    try:
        return bg.backend(XP)
    except SystemExit as exc:  # bench_gpu's message: no usable CuPy GPU here
        pytest.skip(str(exc))


def setup(xp, size: str, spectrum: str) -> dict:
    n, p, C = bg.SIZES[size]
    x, f = bs.make_data(n, p, C, spectrum, SEED)
    xd, fd = xp.asarray(x), xp.asarray(f)
    zd = xp.concatenate([xd, fd], axis=1)
    calls = {label: fn for label, (_, fn) in bg.build_methods(x, f, xd, fd, HOST_EXACT_MAX_P, SEED).items()}

    def one_pass() -> None:
        xd.sum(axis=0, dtype=xp.float64)
        fd.sum(axis=0, dtype=xp.float64)

    def gram() -> None:
        zd.T @ zd

    calls[FLOORS[0]], calls[FLOORS[1]] = one_pass, gram
    bg.warm_up(xp, x, f, xd, fd)
    return {"n": n, "p": p, "C": C, "calls": calls, "reference": be.reference_dlr(x, f, block=bs.block_rows(p))}


@pytest.mark.parametrize(("size", "spectrum", "label"), PARAMS)
def test_gpu(benchmark, measure, case_cache, xp, size, spectrum, label):
    case = case_cache.get(("gpu", size, spectrum), lambda: setup(xp, size, spectrum))
    call = case["calls"][label]

    def synced():
        out = call()
        bg.sync(xp)
        return out

    out = measure(synced)
    role = {FLOORS[0]: "floor", FLOORS[1]: "gram floor"}.get(label, "dlrcore")
    _suite.record(benchmark, n=case["n"], p=case["p"], C=case["C"], spectrum=spectrum, method=label, role=role,
                  backend=xp.__name__)
    if label in FLOORS:
        assert out is None  # floors compute no D_LR
        return
    err = abs(out["value"] - case["reference"])
    est = out["error_estimate"]
    if out["result_method"] == "exact":
        tol = _suite.DLRCORE_EXACT_TOL  # float32 products folded into float64 (docs/dlr.md, "Precision")
    else:
        assert est is not None and est > 0, out
        tol = est  # dlrcore's own 99.73 % interval, fixed seed and data (docs/sketch.md)
    _suite.record(benchmark, value=out["value"], reference=case["reference"], abs_error=err, tolerance=tol,
                  error_estimate=est)
    assert err <= tol, (label, out["value"], case["reference"], err, tol)
