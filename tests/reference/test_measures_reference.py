"""Linear CKA, S_init and NC1 against the dense references of tests/references/measures.py, plus properties.

References (no dlrcore algebra): CKA from n x n centered Gram matrices HKH, HLH exactly as Kornblith et al.
(2019); NC1 = tr(Sigma_W Sigma_B^+) / C from explicit class means and scatter matrices with numpy.linalg.pinv
(Papyan et al. 2020: Sigma_B averages (mu_c - mu_G)(mu_c - mu_G)^T over the C classes, mu_G the global sample
mean; Sigma_W averages (phi_i - mu_c(i))(...)^T over the n samples).

Tolerances (stated where used):
- float64 (and narrow float32 data, which "auto" multiplies in float64): 1e-8 absolute on CKA (a number in
  [0, 1]); 1e-8 relative on NC1 (floor 1e-12). The data are Gaussian, so nothing is ill conditioned.
- float32 products (precision="float32", or "auto" with p_x + p_y >= 128 and float32 data): 1e-5 absolute on
  CKA, 1e-4 relative on NC1.
- invariances and streaming: 1e-9 absolute on CKA, 1e-9 relative on NC1.
- collapsed features (class mean + 1e-6 noise, means of size ~1): NC1 < 1e-9 (true value ~1e-12; the
  statistics route has a rounding floor ~eps * ||Sigma_T|| / ||Sigma_B|| ~ 1e-16).
Hypothesis tests: max_examples 25-40 each, deadline None, n <= 40: a few seconds in all.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import dlrcore

from ..references.measures import ref_cka, ref_nc1

TOL64 = 1e-8
TOL32_CKA = 1e-5
TOL32_NC1 = 1e-4
TOL_INV = 1e-9

# No shrink phase: a failing example is reported as found (seeded, so reproducible), which keeps a failing run
# within the time budget (shrinking a failure takes ~30 s here).
SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def orthogonal(rng, k):
    q, r = np.linalg.qr(rng.normal(size=(k, k)))
    return q * np.sign(np.diag(r))


def gaussian(rng, n, p):
    return rng.normal(size=(n, p)) * rng.uniform(0.3, 3.0, size=p) + rng.normal(size=p)


def related_pair(rng, n, px, py, noise=1.0):
    """x Gaussian; y a noisy nonlinear function of x (so that CKA is strictly between 0 and 1)."""
    x = gaussian(rng, n, px)
    y = np.tanh(x @ rng.normal(size=(px, py))) + noise * rng.normal(size=(n, py)) + rng.normal(size=py)
    return x, y


def close_rel(a, b, rel, floor=1e-12):
    return abs(a - b) <= rel * max(abs(a), abs(b)) + floor


# ---------------------------------------------------------------------------------------------------------------
# CKA against the reference
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,px,py",
    [(50, 5, 3), (120, 10, 10), (30, 1, 4), (20, 35, 8), (12, 3, 40), (2, 2, 3), (200, 20, 1)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_cka_matches_reference(n, px, py, seed):
    rng = np.random.default_rng(seed * 1000 + n + px + py)
    x, y = related_pair(rng, n, px, py, noise=0.5)
    res = dlrcore.cka(x, y)
    ref = ref_cka(x, y)
    assert abs(res.value - ref) <= TOL64, f"CKA {res.value!r} vs reference {ref!r}"
    assert (res.n, res.p_x, res.p_y) == (n, px, py)
    assert res.precision == "float64"
    assert 0.0 <= res.value <= 1.0
    assert float(res) == res.value


def test_cka_one_dimensional_inputs():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=40), rng.normal(size=40)
    b = b + 0.7 * a
    ref = ref_cka(a, b)  # for 1-D, linear CKA is the squared Pearson correlation
    assert abs(ref - np.corrcoef(a, b)[0, 1] ** 2) <= 1e-12
    assert abs(dlrcore.cka(a, b).value - ref) <= TOL64


def test_cka_float32_narrow_inputs_match_reference_of_their_values():
    rng = np.random.default_rng(4)
    x, y = related_pair(rng, 80, 6, 4)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    res = dlrcore.cka(x32, y32)
    assert res.precision == "float64"
    assert abs(res.value - ref_cka(x32.astype(np.float64), y32.astype(np.float64))) <= TOL64


@pytest.mark.parametrize("how", ["forced", "auto-wide"])
def test_cka_float32_products_match_reference_loosely(how):
    rng = np.random.default_rng(5)
    if how == "forced":
        n, px, py, kw = 100, 6, 5, dict(precision="float32")
    else:
        n, px, py, kw = 150, 90, 60, {}  # p_x + p_y >= 128, float32 data: auto multiplies in float32
    x, y = related_pair(rng, n, px, py, noise=0.5)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    res = dlrcore.cka(x32, y32, **kw)
    assert res.precision == "float32"
    ref = ref_cka(x32.astype(np.float64), y32.astype(np.float64))
    assert abs(res.value - ref) <= TOL32_CKA, f"CKA {res.value!r} vs reference {ref!r}"


# ---------------------------------------------------------------------------------------------------------------
# CKA properties (hypothesis)
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def pairs(draw, max_n=40, max_p=8):
    n = draw(st.integers(3, max_n))
    px = draw(st.integers(1, max_p))
    py = draw(st.integers(1, max_p))
    rng = np.random.default_rng(draw(seeds))
    noise = draw(st.sampled_from([0.0, 0.3, 3.0]))
    x, y = related_pair(rng, n, px, py, noise=noise)
    return x, y, rng


@settings(max_examples=40, **SETTINGS)
@given(pair=pairs())
def test_cka_bounds_self_and_symmetry(pair):
    x, y, _ = pair
    v = dlrcore.cka(x, y).value
    assert 0.0 <= v <= 1.0
    assert abs(v - ref_cka(x, y)) <= TOL64
    assert abs(dlrcore.cka(y, x).value - v) <= 1e-12
    assert abs(dlrcore.cka(x, x).value - 1.0) <= 1e-12
    assert abs(dlrcore.cka(y, y).value - 1.0) <= 1e-12


@settings(max_examples=40, **SETTINGS)
@given(
    pair=pairs(),
    side=st.sampled_from(["x", "y", "both"]),
    log_scale=st.floats(-3, 3),
    negative=st.booleans(),
    log_shift=st.floats(-2, 3),
)
def test_cka_invariant_to_orthogonal_maps_scaling_and_translation(pair, side, log_scale, negative, log_shift):
    x, y, rng = pair
    v0 = dlrcore.cka(x, y).value

    def transform(a):
        c = (-1.0 if negative else 1.0) * 10.0**log_scale
        t = 10.0**log_shift * rng.normal(size=a.shape[1])
        return c * a @ orthogonal(rng, a.shape[1]) + t

    x1 = transform(x) if side in ("x", "both") else x
    y1 = transform(y) if side in ("y", "both") else y
    v1 = dlrcore.cka(x1, y1).value
    assert abs(v1 - v0) <= TOL_INV, f"{side}: {v0!r} -> {v1!r}"
    # orthogonal maps separately from scaling and translation
    if side == "x":
        assert abs(dlrcore.cka(x @ orthogonal(rng, x.shape[1]), y).value - v0) <= TOL_INV
        assert abs(dlrcore.cka(x + 10.0**log_shift, y).value - v0) <= TOL_INV
        assert abs(dlrcore.cka(10.0**log_scale * x, y).value - v0) <= TOL_INV


@settings(max_examples=25, **SETTINGS)
@given(pair=pairs(), extra=st.integers(1, 4))
def test_cka_orthogonal_map_into_wider_space(pair, extra):
    """x -> x Q with Q (p x (p + extra)) orthonormal rows keeps the Gram matrix, hence CKA."""
    x, y, rng = pair
    p = x.shape[1]
    q = orthogonal(rng, p + extra)[:p]
    assert abs(dlrcore.cka(x @ q, y).value - dlrcore.cka(x, y).value) <= TOL_INV


def test_cka_is_not_invariant_to_anisotropic_scaling():
    """Guard against a degenerate implementation: a non-isotropic rescaling changes CKA (and the reference agrees)."""
    rng = np.random.default_rng(6)
    x, y = related_pair(rng, 60, 4, 3, noise=0.3)
    d = np.array([10.0, 1.0, 0.1, 1.0])
    v0, v1 = dlrcore.cka(x, y).value, dlrcore.cka(x * d, y).value
    r0, r1 = ref_cka(x, y), ref_cka(x * d, y)
    assert abs(r1 - r0) > 1e-3
    assert abs(v1 - r1) <= TOL64 and abs(v0 - r0) <= TOL64


# ---------------------------------------------------------------------------------------------------------------
# CKA streaming and persistence
# ---------------------------------------------------------------------------------------------------------------


def _random_splits(rng, n, parts):
    cuts = np.sort(rng.choice(np.arange(1, n), size=parts - 1, replace=False))
    return np.split(np.arange(n), cuts)


@pytest.mark.parametrize("seed", range(5))
def test_cka_streaming_and_merging_equal_one_shot(seed):
    rng = np.random.default_rng(seed)
    n = 311
    x, y = related_pair(rng, n, 7, 5)
    x = x + 1e3  # a large common offset: the streaming centering must not lose it
    one = dlrcore.cka(x, y).value
    parts = []
    for idx in _random_splits(rng, n, int(rng.integers(2, 10))):
        s = dlrcore.CKAStats(chunk_bytes=int(rng.choice([256 * 8 * 12, 1 << 20])))
        for sub in np.array_split(idx, int(rng.integers(1, 4))):
            if sub.size:
                s.update(x[sub], y[sub])
        parts.append(s)
    order = rng.permutation(len(parts))
    sizes = [q.n for q in parts]
    merged = dlrcore.CKAStats()
    for i in order:
        merged.merge(parts[i])
    added = parts[order[0]]
    for i in order[1:]:
        added = added + parts[i]
    for s in (merged, added):
        assert s.n == n
        assert abs(s.result().value - one) <= 1e-10
    assert abs(one - ref_cka(x, y)) <= TOL64
    # neither merge() of another object nor "+" modifies its operands
    assert [q.n for q in parts] == sizes


def test_cka_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    x, y = related_pair(rng, 200, 6, 3)
    a = dlrcore.CKAStats().update(x[:120], y[:120])
    path = a.save(tmp_path / "cka")
    assert path.exists()
    b = dlrcore.CKAStats.load(path)
    assert b.n == 120
    assert b.result().value == a.result().value
    assert b.result() == a.result()
    # the loaded statistics keep accumulating and merging exactly
    b.update(x[120:160], y[120:160])
    c = dlrcore.CKAStats().update(x[160:], y[160:])
    b.merge(c)
    assert b.n == 200
    assert abs(b.result().value - dlrcore.cka(x, y).value) <= 1e-12
    # save after more data, reload, same
    path2 = b.save(tmp_path / "cka2.npz")
    assert abs(dlrcore.CKAStats.load(path2).result().value - b.result().value) <= 0.0


def test_cka_load_rejects_other_files(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(dlrcore.DLRInputError):
        dlrcore.CKAStats.load(bad)
    rng = np.random.default_rng(9)
    st_path = dlrcore.DLRStats().update(rng.normal(size=(20, 3)), rng.normal(size=(20, 2))).save(tmp_path / "d")
    with pytest.raises(dlrcore.DLRInputError):
        dlrcore.CKAStats.load(st_path)
    # an empty object saves and loads back empty, like every estimator (tests/unit/test_conformance.py)
    assert dlrcore.CKAStats.load(dlrcore.CKAStats().save(tmp_path / "empty")).n == 0


def test_cka_errors():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    with pytest.raises(dlrcore.DLRInputError, match="rows"):
        dlrcore.cka(x, y[:-1])
    with pytest.raises(dlrcore.DLRInputError, match="constant"):
        dlrcore.cka(np.full((30, 4), 0.1), y)
    with pytest.raises(dlrcore.DLRInputError, match="constant"):
        dlrcore.cka(x, np.full((30, 2), 7.3) + np.zeros((30, 1)))
    with pytest.raises(dlrcore.DLRInputError, match="constant"):
        # constant after streaming: each batch differs from the others only by nothing
        dlrcore.CKAStats().update(np.ones((10, 2)), y[:10]).update(np.ones((5, 2)), y[10:15]).result()
    with pytest.raises(dlrcore.DLRInputError):
        dlrcore.cka(x[:1], y[:1])  # one sample
    with pytest.raises(dlrcore.DLRInputError):
        dlrcore.CKAStats().result()
    s = dlrcore.CKAStats().update(x, y)
    with pytest.raises(dlrcore.DLRInputError, match="widths"):
        s.update(x[:, :3], y)
    with pytest.raises(dlrcore.DLRInputError):
        s.merge(dlrcore.CKAStats().update(x, x))
    assert s.n == 30 and abs(s.result().value - ref_cka(x, y)) <= TOL64  # unchanged by the rejected calls


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_cka_and_nc1_reject_non_finite_input_cleanly(bad):
    """A clear DLRInputError and no stray RuntimeWarning (the project's pytest config makes those errors)."""
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    x[5, 0] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(dlrcore.DLRInputError, match="non-finite"):
            dlrcore.cka(x, y)
        with pytest.raises(dlrcore.DLRInputError, match="non-finite"):
            dlrcore.cka(y, x)
        with pytest.raises(dlrcore.DLRInputError, match="non-finite"):
            dlrcore.nc1(x, np.arange(30) % 3)


# ---------------------------------------------------------------------------------------------------------------
# S_init
# ---------------------------------------------------------------------------------------------------------------


def test_s_init_one_for_unchanged_and_rigidly_moved_features():
    rng = np.random.default_rng(11)
    phi0 = gaussian(rng, 100, 8)
    assert abs(dlrcore.s_init(phi0, phi0).value - 1.0) <= 1e-12
    moved = -2.5 * phi0 @ orthogonal(rng, 8) + 4.0  # the kernel is unchanged up to scale
    assert abs(dlrcore.s_init(phi0, moved).value - 1.0) <= 1e-10


@pytest.mark.parametrize("seed", range(3))
def test_s_init_drops_after_a_change_and_matches_reference(seed):
    rng = np.random.default_rng(20 + seed)
    n, p = 120, 10
    phi0 = gaussian(rng, n, p)
    values = []
    for step in (0.3, 3.0):
        # training moves the features: a data-dependent nonlinear change plus new directions
        phi1 = phi0 + step * (np.tanh(phi0 @ rng.normal(size=(p, p))) + rng.normal(size=(n, p)))
        s = dlrcore.s_init(phi0, phi1)
        ref = ref_cka(phi0, phi1)
        assert abs(s.value - ref) <= TOL64
        assert s.value < 1.0 - 1e-4
        values.append(s.value)
    assert values[1] < values[0], "a larger change should lower S_init here"
    # wider current features than initial ones are allowed (different widths, same samples)
    wide = np.hstack([phi0, np.tanh(phi0)])
    assert abs(dlrcore.s_init(phi0, wide).value - ref_cka(phi0, wide)) <= TOL64


# ---------------------------------------------------------------------------------------------------------------
# NC1 against the reference
# ---------------------------------------------------------------------------------------------------------------


def class_problem(rng, n, p, K, spread=1.0, balanced=True, means_scale=1.0):
    if balanced:
        ids = rng.permutation(np.arange(n) % K)
    else:
        probs = rng.dirichlet(np.ones(K)) * 0.7 + 0.3 / K
        ids = rng.choice(K, size=n, p=probs)
        ids[:K] = np.arange(K)  # every class present
        ids = rng.permutation(ids)
    means = means_scale * rng.normal(size=(K, p)) + rng.normal(size=p)
    x = means[ids] + spread * rng.normal(size=(n, p)) * rng.uniform(0.5, 2.0, size=p)
    return x, ids


ROUTES = ["function", "stats"]


def nc1_via(route, x, ids, num_classes=None):
    """NC1 through dlrcore.nc1 or through DLRStats(num_classes=K).update(x, f, labels=ids).nc1()."""
    if route == "function":
        return dlrcore.nc1(x, ids, num_classes=num_classes)
    K = num_classes or int(np.max(ids)) + 1
    return dlrcore.DLRStats(num_classes=K).update(x, x[:, :1], labels=ids).nc1()


NC1_CASES = [
    # n, p, K, balanced
    (300, 10, 4, True),
    (257, 6, 3, False),
    (100, 2, 5, True),  # p < K - 1: Sigma_B has rank p
    (90, 20, 10, False),
    (40, 30, 3, True),  # p > n/2
    (50, 5, 2, True),
    (1000, 8, 6, False),
]


@pytest.mark.parametrize("n,p,K,balanced", NC1_CASES)
def test_nc1_function_matches_reference(n, p, K, balanced):
    rng = np.random.default_rng(n + p + K)
    x, ids = class_problem(rng, n, p, K, balanced=balanced)
    res = dlrcore.nc1(x, ids)
    ref = ref_nc1(x, ids)
    assert close_rel(res.value, ref, TOL64), f"NC1 {res.value!r} vs reference {ref!r}"
    assert (res.n, res.p, res.num_classes, res.classes_present) == (n, p, K, K)
    assert res.between_rank == min(K - 1, p)
    assert res.value > 0


@pytest.mark.parametrize("n,p,K,balanced", NC1_CASES)
def test_nc1_from_stats_matches_reference(n, p, K, balanced):
    rng = np.random.default_rng(n + p + K)
    x, ids = class_problem(rng, n, p, K, balanced=balanced)
    out = x @ rng.normal(size=(p, K)) + rng.normal(size=K)
    res = dlrcore.DLRStats(num_classes=K).update(x, out, labels=ids).nc1()
    ref = ref_nc1(x, ids)
    assert close_rel(res.value, ref, TOL64), f"NC1 {res.value!r} vs reference {ref!r}"
    assert (res.n, res.p, res.classes_present) == (n, p, K)


def test_nc1_weights_mode_matches_reference():
    rng = np.random.default_rng(30)
    n, p, K = 200, 7, 5
    x, ids = class_problem(rng, n, p, K, balanced=False)
    W, b = rng.normal(size=(K, p)), rng.normal(size=K)
    res = dlrcore.DLRStats(weight=W, bias=b).update(x, labels=ids).nc1()  # num_classes defaults to C = K
    assert close_rel(res.value, ref_nc1(x, ids), TOL64)
    assert res.between_rank == K - 1


def test_nc1_float32_narrow_inputs_match_reference_of_their_values():
    rng = np.random.default_rng(31)
    n, p, K = 300, 7, 5
    x, ids = class_problem(rng, n, p, K, balanced=False)
    x32 = x.astype(np.float32)
    ref32 = ref_nc1(x32.astype(np.float64), ids)
    res = dlrcore.DLRStats(num_classes=K).update(x32, x32[:, :2], labels=ids).nc1()
    assert close_rel(res.value, ref32, TOL64)


@pytest.mark.parametrize("how", ["forced", "auto-wide"])
def test_nc1_float32_products_match_reference_loosely(how):
    rng = np.random.default_rng(32)
    if how == "forced":
        n, p, K, kw = 300, 6, 3, dict(precision="float32")
    else:
        n, p, K, kw = 300, 130, 4, {}  # float32 data, p + C + K >= 128: auto multiplies in float32
    x, ids = class_problem(rng, n, p, K)
    x32 = x.astype(np.float32)
    ref = ref_nc1(x32.astype(np.float64), ids)
    res = dlrcore.DLRStats(num_classes=K, **kw).update(x32, x32[:, :3], labels=ids).nc1()
    assert close_rel(res.value, ref, TOL32_NC1), f"NC1 {res.value!r} vs reference {ref!r}"
    assert res.between_rank == min(K - 1, p)
    fn = dlrcore.nc1(x32, ids, **kw)
    assert close_rel(fn.value, ref, TOL32_NC1), f"nc1(): {fn.value!r} vs reference {ref!r}"


@pytest.mark.parametrize("route", ROUTES)
def test_nc1_absent_class_is_left_out(route):
    rng = np.random.default_rng(33)
    x, ids = class_problem(rng, 120, 5, 3)
    ids4 = np.where(ids == 2, 3, ids)  # class 2 of 4 has no sample
    res = nc1_via(route, x, ids4, num_classes=4)
    assert res.num_classes == 4 and res.classes_present == 3
    assert close_rel(res.value, ref_nc1(x, ids4), TOL64)  # the reference averages over classes present
    assert close_rel(res.value, nc1_via(route, x, ids).value, 1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_nc1_streaming_equals_one_shot(seed):
    rng = np.random.default_rng(40 + seed)
    n, p, K = 233, 6, 4
    x, ids = class_problem(rng, n, p, K, balanced=bool(seed % 2))
    out = rng.normal(size=(n, K))
    one = dlrcore.DLRStats(num_classes=K).update(x, out, labels=ids).nc1().value
    parts = [
        dlrcore.DLRStats(num_classes=K).update(x[idx], out[idx], labels=ids[idx])
        for idx in _random_splits(rng, n, int(rng.integers(2, 8)))
    ]
    order = rng.permutation(len(parts))
    merged = sum(parts[i] for i in order)
    assert close_rel(merged.nc1().value, one, TOL_INV)
    assert close_rel(one, ref_nc1(x, ids), TOL64)


# ---------------------------------------------------------------------------------------------------------------
# NC1 properties
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("K,p", [(3, 5), (5, 4), (10, 12), (4, 2)])
def test_nc1_vanishes_for_collapsed_features(K, p, route):
    rng = np.random.default_rng(50 + K)
    n = 40 * K
    x, ids = class_problem(rng, n, p, K, spread=1e-6)
    v = nc1_via(route, x, ids).value
    ref = ref_nc1(x, ids)
    assert 0.0 < ref < 1e-9
    assert abs(v) < 1e-9
    # and it grows with the within-class spread
    spreads = (1e-3, 1e-1, 1.0)
    vals = []
    for s in spreads:
        rng_s = np.random.default_rng(50 + K)
        xs, ids_s = class_problem(rng_s, n, p, K, spread=s)
        vals.append(nc1_via(route, xs, ids_s).value)
        assert close_rel(vals[-1], ref_nc1(xs, ids_s), TOL64)
    assert vals[0] < vals[1] < vals[2]
    assert vals[2] > 1e-2


@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=25, **SETTINGS)
@given(
    seed=seeds,
    K=st.integers(2, 6),
    p=st.integers(1, 8),
    log_scale=st.floats(-3, 3),
    negative=st.booleans(),
    shift=st.floats(-100, 100),
)
def test_nc1_invariant_to_scaling_rotation_translation(route, seed, K, p, log_scale, negative, shift):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3 * K, 12 * K))
    x, ids = class_problem(rng, n, p, K)
    v0 = nc1_via(route, x, ids).value
    assert v0 > 0
    assert close_rel(v0, ref_nc1(x, ids), TOL64)
    c = (-1.0 if negative else 1.0) * 10.0**log_scale
    assert close_rel(nc1_via(route, c * x, ids).value, v0, TOL_INV)
    assert close_rel(nc1_via(route, x @ orthogonal(rng, p) + shift, ids).value, v0, TOL_INV)


@pytest.mark.parametrize("route", ROUTES)
def test_nc1_not_invariant_to_relabelling(route):
    """Guard: NC1 depends on the labels (shuffled labels look far less collapsed than the true ones)."""
    rng = np.random.default_rng(60)
    x, ids = class_problem(rng, 200, 5, 4, spread=0.2, means_scale=3.0)
    true = nc1_via(route, x, ids).value
    shuffled_ids = rng.permutation(ids)
    shuffled = nc1_via(route, x, shuffled_ids).value
    assert close_rel(shuffled, ref_nc1(x, shuffled_ids), TOL64)
    assert shuffled > 100 * true


# ---------------------------------------------------------------------------------------------------------------
# NC1 errors
# ---------------------------------------------------------------------------------------------------------------


def test_nc1_errors():
    rng = np.random.default_rng(70)
    x = rng.normal(size=(30, 4))
    ids = np.arange(30) % 3
    with pytest.raises(dlrcore.DLRInputError, match="rows"):
        dlrcore.nc1(x, ids[:-1])
    with pytest.raises(dlrcore.DLRInputError, match="2 classes"):
        dlrcore.nc1(x, np.zeros(30, dtype=int))
    with pytest.raises(dlrcore.DLRInputError, match="2 classes"):
        dlrcore.nc1(x, np.full(30, 2), num_classes=5)  # one class present of five
    with pytest.raises(dlrcore.DLRInputError, match="integer"):
        dlrcore.nc1(x, ids.astype(float))
    with pytest.raises(dlrcore.DLRInputError, match="class ids"):
        dlrcore.nc1(x, ids, num_classes=2)
    with pytest.raises(dlrcore.DLRInputError, match="class ids"):
        dlrcore.nc1(x, ids - 1)
    with pytest.raises(dlrcore.DLRInputError):
        dlrcore.nc1(x[:1], ids[:1])
    out = rng.normal(size=(30, 3))
    with pytest.raises(dlrcore.DLRInputError, match="class labels"):
        dlrcore.DLRStats().update(x, out).nc1()  # no labels at all
    with pytest.raises(dlrcore.DLRInputError, match="class labels"):
        dlrcore.DLRStats().update(x, out, labels=rng.normal(size=(30, 3))).nc1()  # targets, not class ids
    with pytest.raises(dlrcore.DLRInputError, match="2 classes"):
        dlrcore.DLRStats(num_classes=3).update(x, out, labels=np.ones(30, dtype=int)).nc1()
    with pytest.raises(dlrcore.DLRInputError):
        dlrcore.DLRStats(num_classes=3).nc1()  # no samples
