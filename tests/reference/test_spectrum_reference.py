"""dlrcore.spectrum / DLRStats.spectrum against the dense references of tests/references/measures.py.

The reference forms Phic = H Phi, Fc = H F, Yc = H Y explicitly, takes the thin SVD of Phic, builds the
sample-space eigenvectors u_k = Phic v_k / sqrt(n rho_k) as n-vectors and sums ||Fc^T u_i||^2 (docs/dlr.md,
"Eigen-visualisation"). Nothing is taken from the library's algebra and no expected value is hard-coded.

Tolerances (stated where used):
- float64 inputs (and float32 inputs with narrow width, which "auto" multiplies in float64): 1e-8 absolute on the
  curves and on relative eigenvalues, 1e-8 * rho_1 on eigenvalues, 1e-8 relative on effective rank,
  participation ratio and the D_LR carried in the spectrum; feature rank exact. The data are Gaussian with
  distinct eigenvalues (no exact degeneracy), so the cumulative sums are well defined and rounding stays ~1e-12.
- float32 products (precision="float32", or "auto" with p + C >= 128 and float32 data): 2e-5 absolute on the
  curves, 2e-6 absolute on relative eigenvalues (and 2e-6 * rho_1 on eigenvalues), 1e-6 relative on effective
  rank and participation ratio. Observed errors are <= 5e-7 on these fixed seeds (float32 eps ~ 1.2e-7 times
  the eigenvalue-gap amplification); the margin is ~25x.
- streaming vs one shot (float64): 1e-10 absolute on the curves.
Runtime: a few seconds on 2 cores.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import dlrcore

from ..references.dlr import ref_dlr
from ..references.measures import onehot, ref_r2, ref_spectrum

TOL64 = 1e-8
TOL32_CURVE = 2e-5
TOL32_EIG = 2e-6
TOL32_SCALAR = 1e-6


def features(rng, n, p, rank=None, offset=True):
    """Gaussian features with anisotropic column scales and a mean offset; exactly rank ``rank`` if given."""
    if rank is None:
        phi = rng.normal(size=(n, p)) * np.geomspace(3.0, 0.3, p)
    else:
        phi = (rng.normal(size=(n, rank)) * np.geomspace(3.0, 0.5, rank)) @ rng.normal(size=(rank, p))
    if offset:
        phi = phi + rng.normal(size=p) * 2.0
    return phi


def linear_outputs(rng, phi, C, noise=0.0):
    out = phi @ rng.normal(size=(phi.shape[1], C)) + rng.normal(size=C)
    if noise:
        out = out + noise * rng.normal(size=out.shape)
    return out


def assert_matches(sp, ref, n, p, tol=TOL64, tol_eig=TOL64, tol_scalar=TOL64, check_rank=True):
    k_lib = min(p, n - 1)
    assert sp.k == k_lib and sp.n == n and sp.p == p
    for name in ("eigenvalues", "relative_eigenvalue", "cumulative_utilization"):
        assert getattr(sp, name).shape == (k_lib,), name
    rho1 = ref.eigenvalues[0]
    err = np.max(np.abs(sp.eigenvalues - ref.eigenvalues[:k_lib]))
    assert err <= tol_eig * rho1, f"eigenvalues: max error {err:.3g} (rho_1 = {rho1:.3g})"
    err = np.max(np.abs(sp.relative_eigenvalue - ref.relative_eigenvalue[:k_lib]))
    assert err <= tol_eig, f"relative eigenvalue: max error {err:.3g}"
    err = np.max(np.abs(sp.cumulative_utilization - ref.cumulative_utilization[:k_lib]))
    assert err <= tol, f"utilization: max error {err:.3g}"
    if ref.cumulative_quality is None:
        assert sp.cumulative_quality is None
    else:
        assert sp.cumulative_quality is not None and sp.cumulative_quality.shape == (k_lib,)
        err = np.max(np.abs(sp.cumulative_quality - ref.cumulative_quality[:k_lib]))
        assert err <= tol, f"quality: max error {err:.3g}"
    assert abs(sp.effective_rank - ref.effective_rank) <= tol_scalar * ref.effective_rank, (
        f"effective rank: library {sp.effective_rank!r} vs reference {ref.effective_rank!r}"
    )
    assert abs(sp.participation_ratio - ref.participation_ratio) <= tol_scalar * ref.participation_ratio, (
        f"participation ratio: library {sp.participation_ratio!r} vs reference {ref.participation_ratio!r}"
    )
    if check_rank:
        assert sp.feature_rank == ref.feature_rank


def assert_curves_valid(sp):
    curves = [sp.cumulative_utilization] + ([sp.cumulative_quality] if sp.cumulative_quality is not None else [])
    for c in curves:
        assert np.all(np.isfinite(c))
        assert np.all(c >= 0.0) and np.all(c <= 1.0), c
        assert np.all(np.diff(c) >= 0.0), "cumulative curve decreases"
    assert np.all(np.diff(sp.eigenvalues) <= 0.0), "eigenvalues not descending"
    assert sp.relative_eigenvalue[0] == pytest.approx(1.0, abs=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# The reference itself: Nystrom vectors are the unit left singular vectors of Phic
# ---------------------------------------------------------------------------------------------------------------


def test_reference_nystrom_vectors_are_orthonormal_eigenvectors():
    rng = np.random.default_rng(1)
    n, p = 50, 7
    phi = features(rng, n, p)
    ref = ref_spectrum(phi, linear_outputs(rng, phi, 2))
    phic = phi - phi.mean(axis=0)
    K = phic @ phic.T / n  # n x n sample-space kernel: K u_k = rho_k u_k
    assert np.allclose(ref.u.T @ ref.u, np.eye(ref.feature_rank), atol=1e-12)
    assert np.allclose(K @ ref.u, ref.u * ref.eigenvalues[: ref.feature_rank], atol=1e-12)
    assert np.allclose(ref.u.sum(axis=0), 0.0, atol=1e-12)  # centered
    cov = phic.T @ phic / n
    assert np.allclose(cov @ ref.v, ref.v * ref.eigenvalues[: ref.feature_rank], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Agreement with the reference, float64
# ---------------------------------------------------------------------------------------------------------------

CASES = [
    # n, p, C, labels kind, num_classes
    (60, 8, 3, None, None),
    (120, 15, 4, "ids", None),  # integer labels, num_classes defaults to C
    (90, 10, 1, "ids", 3),  # C = 1 needs num_classes
    (80, 12, 2, "targets", None),  # n x C_y target matrix with C_y != C
    (40, 6, 5, "onehot", None),  # one-hot targets given as a matrix
    (25, 40, 3, "ids", None),  # p > n - 1: n - 1 modes
    (30, 29, 2, "targets1d", None),  # p = n - 1, 1-D targets
]


@pytest.mark.parametrize("n,p,C,kind,num_classes", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_spectrum_matches_reference(n, p, C, kind, num_classes, seed):
    rng = np.random.default_rng(100 * seed + n + p)
    phi = features(rng, n, p)
    out = linear_outputs(rng, phi, C, noise=0.5)
    K = num_classes or C
    labels, Y = None, None
    if kind in ("ids", "onehot"):
        ids = rng.integers(0, K, size=n)
        Y = onehot(ids, K)
        labels = ids if kind == "ids" else Y
    elif kind == "targets":
        labels = Y = rng.normal(size=(n, C + 1)) + phi[:, :1]
    elif kind == "targets1d":
        labels = Y = phi[:, 0] ** 2 + rng.normal(size=n)
    sp = dlrcore.spectrum(phi, out, labels, num_classes=num_classes)
    ref = ref_spectrum(phi, out, Y)
    assert_matches(sp, ref, n, p)
    assert_curves_valid(sp)
    assert sp.C == C
    d = ref_dlr(phi, out).value
    assert abs(sp.dlr - d) <= TOL64 * max(d, 1e-3), f"D_LR in spectrum {sp.dlr!r} vs dense reference {d!r}"


def test_rank_deficient_features_match_reference():
    """Exactly rank-r features (r < p): eigenvalues beyond r are numerically zero, effective rank counts r modes."""
    rng = np.random.default_rng(7)
    n, p, r = 200, 20, 5
    phi = features(rng, n, p, rank=r)
    out = linear_outputs(rng, phi, 3)
    ref = ref_spectrum(phi, out)
    assert ref.feature_rank == r
    sp = dlrcore.spectrum(phi, out)
    assert sp.feature_rank == r
    assert_matches(sp, ref, n, p)


def test_zero_padded_features_do_not_change_the_spectrum():
    rng = np.random.default_rng(8)
    phi = features(rng, 70, 6)
    out = linear_outputs(rng, phi, 2, noise=0.3)
    a = dlrcore.spectrum(phi, out)
    b = dlrcore.spectrum(np.hstack([phi, np.zeros((70, 4))]), out)
    assert b.feature_rank == a.feature_rank == 6
    assert np.allclose(b.eigenvalues[:6], a.eigenvalues, rtol=1e-12, atol=0)
    assert np.allclose(b.cumulative_utilization[:6], a.cumulative_utilization, atol=1e-12)
    assert np.all(b.cumulative_utilization[6:] == b.cumulative_utilization[5])
    assert abs(b.effective_rank - a.effective_rank) <= 1e-10 * a.effective_rank
    assert abs(b.participation_ratio - a.participation_ratio) <= 1e-10 * a.participation_ratio


def test_k_truncates_the_curves():
    rng = np.random.default_rng(9)
    phi = features(rng, 60, 10)
    out = linear_outputs(rng, phi, 3, noise=0.2)
    ids = rng.integers(0, 3, size=60)
    full = dlrcore.spectrum(phi, out, ids)
    for k in (1, 3, 10):
        sp = dlrcore.spectrum(phi, out, ids, k=k)
        assert sp.k == k and len(sp.modes) == k
        for name in ("eigenvalues", "relative_eigenvalue", "cumulative_utilization", "cumulative_quality"):
            assert np.allclose(getattr(sp, name), getattr(full, name)[:k], rtol=0, atol=1e-14), name
        assert sp.effective_rank == pytest.approx(full.effective_rank, rel=1e-14)
    for bad in (0, 11, -1):
        with pytest.raises(ValueError):
            dlrcore.spectrum(phi, out, k=bad)


# ---------------------------------------------------------------------------------------------------------------
# Weights mode
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,p,C,with_labels", [(80, 9, 3, False), (60, 6, 20, True), (30, 45, 4, True)])
def test_weights_mode_matches_reference(n, p, C, with_labels):
    rng = np.random.default_rng(n * C + p)
    phi = features(rng, n, p)
    W = rng.normal(size=(C, p))
    b = rng.normal(size=C)
    out = phi @ W.T + b
    ids = rng.integers(0, C, size=n) if with_labels else None
    st = dlrcore.DLRStats(weight=W, bias=b, num_classes=C if with_labels else None)
    st.update(phi, labels=ids)
    sp = st.spectrum()
    ref = ref_spectrum(phi, out, None if ids is None else onehot(ids, C))
    assert_matches(sp, ref, n, p)
    assert_curves_valid(sp)
    explicit = dlrcore.spectrum(phi, out, ids)
    assert np.max(np.abs(explicit.cumulative_utilization - sp.cumulative_utilization)) <= TOL64
    # outputs are linear in the features: utilization reaches 1 at the feature rank
    r = sp.feature_rank
    assert r == min(p, n - 1)
    assert abs(sp.cumulative_utilization[r - 1] - 1.0) <= TOL64


# ---------------------------------------------------------------------------------------------------------------
# float32 inputs
# ---------------------------------------------------------------------------------------------------------------


def test_float32_narrow_inputs_match_reference_of_their_values():
    """Narrow float32 data: "auto" multiplies in float64, so the reference of the same (float32) values matches
    to the float64 tolerance."""
    rng = np.random.default_rng(11)
    n, p, C = 100, 12, 3
    phi = features(rng, n, p).astype(np.float32)
    out = linear_outputs(rng, phi.astype(np.float64), C, noise=0.3).astype(np.float32)
    ids = rng.integers(0, C, size=n)
    sp = dlrcore.spectrum(phi, out, ids)
    ref = ref_spectrum(phi.astype(np.float64), out.astype(np.float64), onehot(ids, C))
    assert_matches(sp, ref, n, p)


@pytest.mark.parametrize("how", ["forced", "auto-wide"])
def test_float32_products_match_reference_loosely(how):
    rng = np.random.default_rng(12)
    if how == "forced":
        n, p, C = 150, 12, 3
        kw = dict(precision="float32")
    else:
        n, p, C = 300, 120, 10  # p + C >= 128: auto uses float32 products for float32 data
        kw = {}
    phi = features(rng, n, p).astype(np.float32)
    out = linear_outputs(rng, phi.astype(np.float64), C, noise=0.3).astype(np.float32)
    ids = rng.integers(0, C, size=n)
    sp = dlrcore.spectrum(phi, out, ids, **kw)
    ref = ref_spectrum(phi.astype(np.float64), out.astype(np.float64), onehot(ids, C))
    assert_matches(
        sp, ref, n, p, tol=TOL32_CURVE, tol_eig=TOL32_EIG, tol_scalar=TOL32_SCALAR, check_rank=False
    )
    assert_curves_valid(sp)


# ---------------------------------------------------------------------------------------------------------------
# Properties of the curves
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,p,r,C", [(150, 12, 4, 3), (100, 8, 8, 2), (60, 30, 6, 5), (40, 10, 1, 1)])
def test_utilization_reaches_one_at_the_feature_rank(n, p, r, C):
    rng = np.random.default_rng(n + p + r)
    phi = features(rng, n, p, rank=None if r == p else r)
    out = linear_outputs(rng, phi, C)
    sp = dlrcore.spectrum(phi, out)
    assert sp.feature_rank == r
    u = sp.cumulative_utilization
    assert abs(u[r - 1] - 1.0) <= TOL64, f"utilization at k = rank {r}: {u[r - 1]!r}"
    assert np.all(np.abs(u[r - 1 :] - 1.0) <= TOL64)
    if r > 1:
        assert u[r - 2] < 1.0 - 1e-6, "generic random readout should need every live mode"
    assert_curves_valid(sp)


def test_utilization_limit_is_r2_of_outputs_when_not_linear_in_features():
    """Outputs with a component outside the feature span: utilization's limit is their R^2 on the features."""
    rng = np.random.default_rng(13)
    n, p, C = 120, 6, 3
    phi = features(rng, n, p)
    out = linear_outputs(rng, phi, C, noise=4.0)
    sp = dlrcore.spectrum(phi, out)
    r2 = ref_r2(phi, out)
    assert 0.05 < r2 < 0.95
    assert abs(sp.cumulative_utilization[-1] - r2) <= TOL64


@pytest.mark.parametrize(
    "n,p,kind",
    [(200, 10, "ids"), (150, 7, "targets"), (60, 20, "targets1d"), (20, 25, "ids"), (25, 24, "targets")],
)
def test_quality_limit_is_r2_of_best_linear_readout(n, p, kind):
    rng = np.random.default_rng(n * p)
    phi = features(rng, n, p)
    out = linear_outputs(rng, phi, 3, noise=0.2)
    if kind == "ids":
        ids = rng.integers(0, 3, size=n)
        ids[np.argmax(phi[:, 0])] = 0  # some signal
        labels, Y = ids, onehot(ids, 3)
    elif kind == "targets":
        labels = Y = np.tanh(phi[:, :2]) + 0.5 * rng.normal(size=(n, 2))
    else:
        labels = Y = np.sin(phi[:, 0]) + 0.3 * rng.normal(size=n)
    sp = dlrcore.spectrum(phi, out, labels)
    r2 = ref_r2(phi, Y)
    assert abs(sp.cumulative_quality[-1] - r2) <= TOL64, f"quality limit {sp.cumulative_quality[-1]!r} vs R^2 {r2!r}"
    if n - 1 <= p:
        assert abs(r2 - 1.0) <= 1e-9  # interpolation regime
    else:
        assert r2 < 0.99
    assert_curves_valid(sp)


@pytest.mark.parametrize("seed", range(6))
def test_curves_monotone_and_bounded_on_random_problems(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(3, 60))
    p = int(rng.integers(1, 25))
    C = int(rng.integers(1, 6))
    phi = features(rng, n, p, offset=bool(seed % 2))
    out = rng.normal(size=(n, C)) if seed % 3 == 0 else linear_outputs(rng, phi, C, noise=0.5)
    Y = rng.normal(size=(n, 2))
    sp = dlrcore.spectrum(phi, out, Y)
    assert_curves_valid(sp)
    assert_matches(sp, ref_spectrum(phi, out, Y), n, p)


# ---------------------------------------------------------------------------------------------------------------
# Streaming == one shot
# ---------------------------------------------------------------------------------------------------------------


def _random_splits(rng, n, parts):
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    return np.split(np.arange(n), cuts)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("labels_kind", ["ids", "targets", None])
def test_streaming_and_merging_equal_one_shot(seed, labels_kind):
    rng = np.random.default_rng(seed)
    n, p, C = 157, 9, 4
    phi = features(rng, n, p)
    out = linear_outputs(rng, phi, C, noise=0.5)
    if labels_kind == "ids":
        labels = rng.integers(0, C, size=n)
    elif labels_kind == "targets":
        labels = rng.normal(size=(n, 3))
    else:
        labels = None
    one = dlrcore.spectrum(phi, out, labels)
    pieces = _random_splits(rng, n, int(rng.integers(2, 9)))
    parts = []
    for idx in pieces:
        st = dlrcore.DLRStats(chunk_bytes=int(rng.choice([256 * 8 * 14, 1 << 20])))
        # sub-batches inside one object, then objects merged in random order
        for sub in np.array_split(idx, int(rng.integers(1, 4))):
            if sub.size:
                st.update(phi[sub], out[sub], labels=None if labels is None else labels[sub])
        parts.append(st)
    order = rng.permutation(len(parts))
    merged = dlrcore.DLRStats()
    for i in order:
        merged.merge(parts[i])
    summed = sum(parts[i] for i in order[::-1])
    for stream in (merged.spectrum(), summed.spectrum()):
        for name in ("cumulative_utilization", "cumulative_quality", "relative_eigenvalue"):
            a, b = getattr(stream, name), getattr(one, name)
            if b is None:
                assert a is None
                continue
            assert np.max(np.abs(a - b)) <= 1e-10, name
        assert np.allclose(stream.eigenvalues, one.eigenvalues, rtol=1e-10, atol=1e-10 * one.eigenvalues[0])
        assert stream.effective_rank == pytest.approx(one.effective_rank, rel=1e-10)
        assert stream.participation_ratio == pytest.approx(one.participation_ratio, rel=1e-10)
        assert stream.feature_rank == one.feature_rank and stream.n == n
        assert stream.dlr == pytest.approx(one.dlr, rel=1e-10, abs=1e-12)


def test_streaming_weights_mode_equals_one_shot():
    rng = np.random.default_rng(21)
    n, p, C = 140, 7, 12
    phi = features(rng, n, p)
    W, b = rng.normal(size=(C, p)), rng.normal(size=C)
    ids = rng.integers(0, C, size=n)
    one = dlrcore.DLRStats(weight=W, bias=b, num_classes=C).update(phi, labels=ids).spectrum()
    parts = []
    for idx in _random_splits(rng, n, 5):
        parts.append(dlrcore.DLRStats(weight=W, bias=b, num_classes=C).update(phi[idx], labels=ids[idx]))
    st = parts[3].copy()
    for i in (0, 4, 1, 2):
        st.merge(parts[i])
    sp = st.spectrum()
    assert np.max(np.abs(sp.cumulative_utilization - one.cumulative_utilization)) <= 1e-10
    assert np.max(np.abs(sp.cumulative_quality - one.cumulative_quality)) <= 1e-10
    ref = ref_spectrum(phi, phi @ W.T + b, onehot(ids, C))
    assert_matches(sp, ref, n, p)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------


def test_spectrum_errors():
    rng = np.random.default_rng(31)
    phi = rng.normal(size=(30, 4))
    out = rng.normal(size=(30, 2))
    with pytest.raises(dlrcore.DLRInputError, match="rows"):
        dlrcore.spectrum(phi, out[:-1])
    with pytest.raises(dlrcore.DLRInputError, match="rows"):
        dlrcore.spectrum(phi, out, np.arange(29) % 2)
    with pytest.raises(dlrcore.DLRInputError, match="rows"):
        dlrcore.spectrum(phi, out, rng.normal(size=(31, 2)))
    with pytest.raises(dlrcore.DLRInputError, match="num_classes"):
        dlrcore.spectrum(phi, out[:, 0], np.arange(30) % 2)  # C = 1, integer ids, no num_classes
    with pytest.raises(dlrcore.DLRInputError, match="class ids"):
        dlrcore.spectrum(phi, out, np.arange(30) % 3)  # ids beyond num_classes = C = 2
    with pytest.raises(dlrcore.DLRInputError):
        dlrcore.DLRStats().spectrum()  # no samples


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["features", "outputs", "labels"])
def test_spectrum_rejects_non_finite_input_cleanly(bad, where):
    """A clear DLRInputError and no stray RuntimeWarning (the project's pytest config makes those errors)."""
    rng = np.random.default_rng(32)
    arrays = {
        "features": rng.normal(size=(30, 4)),
        "outputs": rng.normal(size=(30, 2)),
        "labels": rng.normal(size=(30, 2)),
    }
    arrays[where][3, 1] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(dlrcore.DLRInputError, match="non-finite"):
            dlrcore.spectrum(arrays["features"], arrays["outputs"], arrays["labels"])


# ---------------------------------------------------------------------------------------------------------------
# method="randomized": the top k modes of the stored Gram (dlrcore.spectral.top_eigh)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("power_iters", [0, 2])
def test_randomized_spectrum_bounds_against_reference(seed, decay, power_iters):
    """Whatever the spectrum and the number of power iterations: every returned eigenvalue lies at or below the
    dense reference's and at most eigenvalue_error below it (a rigorous bound: Cauchy interlacing and Weyl, checked
    to 1e-9 rho_1 for rounding); the participation ratio, taken from tr(G) and ||G||_F, equals the reference's to
    1e-8; the effective rank, which needs every eigenvalue, is NaN; the curves are valid cumulative shares."""
    rng = np.random.default_rng(100 + seed)
    n, p, C, k = 400, 60, 4, 8
    phi = rng.normal(size=(n, p)) * (np.geomspace(3.0, 0.05, p) if decay else np.ones(p)) + 2.0
    out = linear_outputs(rng, phi, C, noise=0.1)
    ids = rng.integers(0, C, size=n)
    st = dlrcore.DLRStats(num_classes=C).update(phi, out, labels=ids)
    sp = st.spectrum(k, method="randomized", oversample=4, power_iters=power_iters, seed=seed)
    ref = ref_spectrum(phi, out, onehot(ids, C))
    assert sp.method == "randomized" and sp.k == k and sp.eigenvalues.shape == (k,)
    rho1 = ref.eigenvalues[0]
    below = ref.eigenvalues[:k] - sp.eigenvalues
    assert np.all(below >= -1e-9 * rho1), below
    assert np.all(below <= sp.eigenvalue_error + 1e-9 * rho1), (below.max(), sp.eigenvalue_error)
    assert abs(sp.participation_ratio - ref.participation_ratio) <= TOL64 * ref.participation_ratio
    assert np.isnan(sp.effective_rank)
    assert sp.dlr == pytest.approx(st.result().value, abs=1e-12)
    assert_curves_valid(sp)


def test_randomized_spectrum_converges_on_a_decaying_spectrum():
    """Well separated leading eigenvalues (ratio ~0.7) and five power iterations: the top 6 modes (eigenvalues,
    utilization, quality) match the dense reference to 1e-8 (relative to rho_1 for eigenvalues)."""
    rng = np.random.default_rng(7)
    n, p, C, k = 600, 80, 5, 6
    phi = rng.normal(size=(n, p)) * np.geomspace(20.0, 1e-4, p)  # eigenvalue ratio ~0.7 per mode
    out = linear_outputs(rng, phi, C)
    ids = rng.integers(0, C, size=n)
    st = dlrcore.DLRStats(num_classes=C).update(phi, out, labels=ids)
    sp = st.spectrum(k, method="randomized", oversample=10, power_iters=5)
    ref = ref_spectrum(phi, out, onehot(ids, C))
    rho1 = ref.eigenvalues[0]
    assert np.max(np.abs(sp.eigenvalues - ref.eigenvalues[:k])) <= TOL64 * rho1
    assert np.max(np.abs(sp.cumulative_utilization - ref.cumulative_utilization[:k])) <= TOL64
    assert np.max(np.abs(sp.cumulative_quality - ref.cumulative_quality[:k])) <= TOL64


def test_randomized_spectrum_weights_mode_and_errors():
    rng = np.random.default_rng(3)
    n, p, C = 200, 30, 3
    phi = rng.normal(size=(n, p)) * np.geomspace(20.0, 1e-4, p) + 1.0
    W, b = rng.normal(size=(C, p)), rng.normal(size=C)
    st = dlrcore.DLRStats(weight=W, bias=b).update(phi)
    sp = st.spectrum(5, method="randomized", power_iters=3, oversample=10)
    full = st.spectrum()
    assert sp.method == "randomized" and full.method == "exact" and full.eigenvalue_error is None
    assert np.max(np.abs(sp.cumulative_utilization - full.cumulative_utilization[:5])) <= TOL64
    with pytest.raises(ValueError, match="needs k"):
        st.spectrum(method="randomized")
    # the one-shot function reaches the same code with the same seed
    one = dlrcore.spectrum(phi, phi @ W.T + b, k=5, method="randomized", seed=4)
    two = dlrcore.DLRStats().update(phi, phi @ W.T + b).spectrum(5, method="randomized", seed=4)
    assert one.method == "randomized" and np.array_equal(one.eigenvalues, two.eigenvalues)
    with pytest.raises(ValueError, match="method must be"):
        st.spectrum(5, method="sketch")
    with pytest.raises(ValueError, match="oversample and power_iters"):
        st.spectrum(5, method="randomized", oversample=-1)
    with pytest.raises(ValueError, match="k must be"):
        st.spectrum(p + 1, method="randomized")


@pytest.mark.parametrize("seed", range(40))
def test_top_eigh_bound_holds_for_tiny_trailing_eigenvalues(seed):
    """Eigenvalues of 1, 2e-9 and 1e-9 (then zeros) with no oversampling or power iteration: the subspace misses
    part of the small ones, and the bound, summed from the residual itself, still covers every shortfall (a
    difference of squares ||M||_F^2 - ||Q^T M Q||_F^2 would cancel to 0 here)."""
    from dlrcore.spectral import top_eigh

    rng = np.random.default_rng(seed)
    p = 30
    u, _ = np.linalg.qr(rng.normal(size=(p, p)))
    lam = np.zeros(p)
    lam[:3] = [1.0, 2e-9, 1e-9]
    m = (u * lam) @ u.T
    m = (m + m.T) / 2
    theta, v, bound = top_eigh(m, 2, oversample=0, power_iters=0, seed=seed)
    exact = np.sort(np.linalg.eigvalsh(m))[::-1][:2]
    below = exact - theta
    assert np.all(below >= -1e-14) and np.all(below <= bound), (below, bound)
    np.testing.assert_allclose(v.T @ v, np.eye(2), atol=1e-12)
