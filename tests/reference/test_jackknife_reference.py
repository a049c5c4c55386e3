"""Block-jackknife standard errors and biases against the dense references of tests/references/.

The reference jackknife knows nothing of dlrcore's blocks or merges: it deletes the rows ``k mod B == i`` from
the arrays (row k of the whole stream), recomputes the measure from n x n matrices (``ref_dlr``, ``ref_dhalf``,
``ref_cka``, ``ref_nc1``) and applies the textbook formulas written out here. dlrcore gets the same rows in
batches and shards merged in order, so both see the same blocks.

Tolerances: each leave-one-out value agrees with its reference to about 1e-12 (float64 moments against n x n
float64 matrices, well-conditioned Gaussian data); the SE is a sum of squared differences of such values of size
about SE / sqrt(B), so 1e-7 relative on the SE and 1e-9 absolute on the bias are far above rounding.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

import dlrcore

from ..references.dlr import ref_dhalf, ref_dlr
from ..references.measures import ref_cka, ref_nc1

N, B = 240, 7


def _reference_jackknife(stat, arrays, blocks: int = B) -> tuple[float, float]:
    """(SE, bias) of ``stat(*arrays)`` with the rows ``k mod blocks == i`` left out in turn."""
    n = arrays[0].shape[0]
    full = stat(*arrays)
    loo = np.array([stat(*(a[np.arange(n) % blocks != i] for a in arrays)) for i in range(blocks)])
    se = np.sqrt((blocks - 1) / blocks * np.sum((loo - loo.mean()) ** 2))
    return float(se), float((blocks - 1) * (loo.mean() - full))


def _problem(seed: int):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(N, 6)) * np.linspace(2.0, 0.3, 6) + rng.normal(size=6)
    out = phi[:, :3] @ rng.normal(size=(3, 3)) + 0.8 * rng.normal(size=(N, 3)) + 1.0
    labels = rng.integers(0, 3, size=N)
    phi = phi + 1.5 * np.eye(3)[labels] @ rng.normal(size=(3, 6))  # class structure for NC1
    return phi, out, labels


def _streamed(cls, arrays, cuts, **kw):
    """Shards cut at ``cuts``, each streamed in two batches, merged in order."""
    bounds = [0, *cuts, N]
    shards = []
    for a, b in pairwise(bounds):
        st = cls(blocks=B, **kw)
        mid = (a + b) // 2
        for lo, hi in ((a, mid), (mid, b)):
            if hi > lo:
                st.update(*(x[lo:hi] for x in arrays[:2]), **({"labels": arrays[2][lo:hi]} if len(arrays) > 2 else {}))
        shards.append(st)
    return sum(shards)


@pytest.mark.parametrize("seed, cuts", [(0, []), (1, [5, 6, 100]), (2, [31, 200])])
def test_dlr_and_dhalf_standard_errors_match_the_dense_reference(seed, cuts):
    phi, out, labels = _problem(seed)
    st = _streamed(dlrcore.DLRStats, (phi, out, labels), cuts)
    res = st.result()
    for kind, stat, se, bias in (
        ("span", lambda p, f: ref_dlr(p, f).value, res.stderr_span, res.bias_span),
        ("sqrt", lambda p, f: ref_dhalf(p, f).value, res.stderr_sqrt, res.bias_sqrt),
    ):
        ref_se, ref_bias = _reference_jackknife(stat, (phi, out))
        assert se == pytest.approx(ref_se, rel=1e-7), kind
        assert bias == pytest.approx(ref_bias, abs=1e-9), kind
    nc1 = st.nc1()
    ref_se, ref_bias = _reference_jackknife(lambda p, y: ref_nc1(p, y), (phi, labels))
    assert nc1.stderr == pytest.approx(ref_se, rel=1e-7)
    assert nc1.bias == pytest.approx(ref_bias, abs=1e-9 * max(1.0, abs(nc1.value)))


@pytest.mark.parametrize("cuts", [[], [1, 2, 3, 150]])
def test_cka_standard_error_matches_the_dense_reference(cuts):
    phi, out, _ = _problem(3)
    res = _streamed(dlrcore.CKAStats, (phi, out), cuts).result()
    ref_se, ref_bias = _reference_jackknife(ref_cka, (phi, out))
    assert res.stderr == pytest.approx(ref_se, rel=1e-7)
    assert res.bias == pytest.approx(ref_bias, abs=1e-9)


def _ref_effective_rank(phi: np.ndarray, *_: np.ndarray) -> float:
    """Roy-Vetterli effective rank of the centered features, straight from the data (singular values)."""
    s = np.linalg.svd(phi - phi.mean(0), compute_uv=False)
    w = s[s > 1e-10 * s[0]] / s[s > 1e-10 * s[0]].sum()
    return float(np.exp(-(w * np.log(w)).sum()))


def _ref_participation_ratio(phi: np.ndarray, *_: np.ndarray) -> float:
    ev = np.linalg.eigvalsh(np.cov(phi.T))
    return float(ev.sum() ** 2 / (ev**2).sum())


def _ref_utilization_at(k: int):
    def stat(phi: np.ndarray, out: np.ndarray) -> float:
        """Share of ||Fc||_F^2 on the top-k left singular vectors of the centered features."""
        pc, fc = phi - phi.mean(0), out - out.mean(0)
        u = np.linalg.svd(pc, full_matrices=False)[0][:, :k]
        return float(np.linalg.norm(u.T @ fc) ** 2 / np.linalg.norm(fc) ** 2)
    return stat


def test_spectrum_jackknife_matches_leave_rows_out_references():
    """Standard errors of the spectrum's summary numbers and of its utilization curve against a dense NumPy
    leave-rows-out jackknife (rows k mod B left out). Tolerance: the two compute the same float64 quantities by
    different factorisations, 1e-7 relative."""
    phi, out, labels = _problem(3)
    sp = dlrcore.DLRStats(blocks=B).update(phi, out, labels=labels).spectrum()
    assert sp.blocks == B
    se, _ = _reference_jackknife(_ref_effective_rank, (phi, out))
    assert sp.stderr_effective_rank == pytest.approx(se, rel=1e-7)
    se, _ = _reference_jackknife(_ref_participation_ratio, (phi, out))
    assert sp.stderr_participation_ratio == pytest.approx(se, rel=1e-7)
    for k in (1, 3):
        se, _ = _reference_jackknife(_ref_utilization_at(k), (phi, out))
        assert sp.stderr_cumulative_utilization[k - 1] == pytest.approx(se, rel=1e-6, abs=1e-12)
    plain = dlrcore.DLRStats().update(phi, out, labels=labels).spectrum()
    assert plain.blocks is None and plain.stderr_cumulative_quality is None
