"""Randomized and sketch estimators: the cases of bench_sketch.py as pytest-benchmark groups, one per (size,
spectrum).

Members, on the same float32 data (``bench_sketch.make_data``), built by ``bench_sketch.method_specs`` from the
script's size configuration with one setting of each kind (the first randomized and the first sketch setting, the
latter also streamed; the middle rank of the libraries' sweep): the one-pass floor, the output floor (float64
``Fc^T Fc`` + ``eigh``), dlrcore exact, randomized, sketch and sketch-stream, the naive NumPy route on float64
copies (``bench_exact.naive_numpy_float64``), and scikit-learn, fbpca and torch (top-k SVD of the centered
features; skipped when not installed). Accuracy against ``bench_exact.reference_dlr`` in each test.
"""

from __future__ import annotations

import _suite
import bench_exact as be
import bench_sketch as bs
import numpy as np
import pytest

SEED = 0
BATCH_ROWS = 10_000  # the script's default --batch-rows
NAIVE64 = "numpy naive float64"
FAMILIES = ["floor", "output-floor", "exact", NAIVE64, "randomized", "sketch", "sketch-stream", *bs.LIBRARIES]
MODULES = {"sklearn": "sklearn", "fbpca": "fbpca", "torch": "torch"}
ROLES = {"floor": "floor", "output-floor": "output floor", NAIVE64: "numpy", **dict.fromkeys(MODULES, "library")}
# sizes with a float64 reference (the wide ones have none, and their exact path is out of reach)
SIZES = _suite.sizes(bs.SIZES, default=["small"], allowed=[s for s, c in bs.SIZES.items() if c["p"] <= 4096])


def suite_cfg(size: str) -> dict:
    """The script's configuration of this size, one setting of each kind."""
    cfg = dict(bs.SIZES[size])
    cfg["ranks"] = [cfg["ranks"][len(cfg["ranks"]) // 2]]
    cfg["randomized"] = cfg["randomized"][:1]
    cfg["sketch"] = cfg["sketch"][:1]  # the streamed setting is the last one: the same
    return cfg


def specs(size: str) -> dict:
    """label -> (family, params, make(x, f)), in FAMILIES order, the naive NumPy member included."""
    cfg = suite_cfg(size)
    script = bs.method_specs(cfg, [f for f in FAMILIES if f != NAIVE64], BATCH_ROWS, SEED, skipped=None)
    out = {}
    for fam in FAMILIES:
        if fam == NAIVE64:
            out[NAIVE64] = (NAIVE64, {}, lambda x, f: lambda: {"value": be.naive_numpy_float64(x, f)})
        out.update({label: spec for label, spec in script.items() if spec[0] == fam})
    return out


SPECS = {size: specs(size) for size in SIZES}
SHORT_IDS = {"floor": "floor", "output-floor": "output-floor"}


def member_id(size: str, spectrum: str, label: str) -> str:
    family = SPECS[size][label][0]
    return f"{size}-{spectrum}-{SHORT_IDS.get(family) or _suite.slug(label)}"


PARAMS = [
    pytest.param(size, spectrum, label, id=member_id(size, spectrum, label),
                 marks=pytest.mark.benchmark(group=f"sketch {size} {spectrum} (n={bs.SIZES[size]['n']}, "
                                                   f"p={bs.SIZES[size]['p']}, C={bs.SIZES[size]['C']})"))
    for size in SIZES
    for spectrum in bs.SPECTRA
    for label in SPECS[size]
]


class Case:
    def __init__(self, size: str, spectrum: str) -> None:
        cfg = bs.SIZES[size]
        self.n, self.p, self.C = cfg["n"], cfg["p"], cfg["C"]
        self.x, self.f = bs.make_data(self.n, self.p, self.C, spectrum, SEED)
        self.reference = be.reference_dlr(self.x, self.f, block=bs.block_rows(self.p))
        self._truncated: dict[int, float] = {}

    def truncated(self, k: int) -> float:
        """The float64 D_LR of the exact rank-k truncation (computed once, on the first library member)."""
        if k not in self._truncated:
            self._truncated.update(bs.truncated_reference(self.x, self.f, [k]))
        return self._truncated[k]


@pytest.mark.parametrize(("size", "spectrum", "label"), PARAMS)
def test_sketch(benchmark, measure, case_cache, size, spectrum, label):
    family, params, make = SPECS[size][label]
    if family in MODULES:
        pytest.importorskip(MODULES[family])  # pip install ".[bench]" torch
    case = case_cache.get(("sketch", size, spectrum), lambda: Case(size, spectrum))
    out = measure(make(case.x, case.f))
    value = out["value"]
    _suite.record(benchmark, n=case.n, p=case.p, C=case.C, spectrum=spectrum, method=label, family=family,
                  params=dict(params), role=ROLES.get(family, "dlrcore"), reference=case.reference)
    if family in ("floor", "output-floor"):
        assert value is None  # floors compute no D_LR
        return
    err = abs(value - case.reference)
    est = out.get("error_estimate")
    if family == "exact":
        tol = _suite.DLRCORE_EXACT_TOL  # float32 products folded into float64 (docs/dlr.md, "Precision")
    elif family == NAIVE64:
        tol = _suite.tol_float64(case.n)  # float64 products of length n, against a float64 reference
    elif family in ("randomized", "sketch", "sketch-stream"):
        # dlrcore's own 99.73 % interval (docs/sketch.md); seed and data fixed, so the check is deterministic
        assert est is not None and np.isfinite(est) and est > 0, out
        tol = est
    else:
        # A library's top-k SVD approximates the rank-k truncation: its error is the truncation's own (exact
        # float64 top-k eigenvectors: |trunc - ref|) plus the range finder's error in the top-k subspace, which is
        # driven by the same spectral tail (Halko, Martinsson and Tropp 2011), so at most about as large again; and
        # its float32 products. A flat spectrum makes both large: that is what these rows show, not a failure.
        trunc = case.truncated(params["rank"])
        tol = 2 * abs(trunc - case.reference) + _suite.tol_float32(case.n)
        _suite.record(benchmark, truncated_reference=trunc, truncation_error=abs(trunc - case.reference))
    _suite.record(benchmark, value=value, abs_error=err, tolerance=tol, error_estimate=est)
    assert err <= tol, (label, value, case.reference, err, tol)
