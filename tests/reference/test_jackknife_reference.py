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
