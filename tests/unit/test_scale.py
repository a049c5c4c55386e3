"""Scale-free numerics (issue 13, item 5, and the offset accuracy of item 8).

Every measure is invariant to multiplying the features (or the outputs, or one representation of CKA) by a positive
number. The statistics scale each block by a power of two (``dlrcore.scaling``), so data from about 1e-300 to
1e300 must give the value of the same data at unit scale.

Tolerances. Multiplying by ``10**k`` rounds each entry once (relative error at most eps64 = 1.1e-16, about 1e-13 for
subnormal inputs near 1e-310); on these well-conditioned problems (n = 200 Gaussian rows, p = 8) the measures move by
a few times that, so 1e-9 holds with four orders of margin on any BLAS, while the failures fixed here were
off by at least 1e-2 (0.0 instead of 0.356, or an error).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlrcore
from dlrcore import DLRInputError

from ..references.dlr import ref_dlr, ref_dlr_from_weights

TOL = 1e-9

# decimal exponents covering the float64 range, subnormal inputs included
exponents = st.integers(min_value=-305, max_value=300)


def problem(seed: int = 0, n: int = 200, p: int = 8, C: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) + rng.normal(size=p)
    f = x @ rng.normal(size=(p, C)) + rng.normal(size=(n, C)) + 0.5
    y = rng.integers(0, 3, size=n)
    return x, f, y


X, F, Y = problem()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    UNIT = {m: dlrcore.dlr(X, F, method=m, rank=8) for m in ("exact", "sketch", "randomized")}
UNIT_CKA = dlrcore.cka(X, F).value
UNIT_NC1 = dlrcore.nc1(X, Y).value


def scaled(a: np.ndarray, k: int) -> np.ndarray:
    with np.errstate(under="ignore", over="ignore"):
        return a * 10.0**k if k >= -290 else (a * 1e-290) * 10.0 ** (k + 290)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL


@pytest.mark.parametrize("method", ["exact", "sketch", "randomized"])
@settings(max_examples=15, deadline=None)
@given(kx=exponents, kf=exponents)
def test_measures_are_scale_free(method, kx, kf):
    x, f = scaled(X, kx), scaled(F, kf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = dlrcore.dlr(x, f, method=method, rank=8)
    assert close(res.value_span, UNIT[method].value_span) and close(res.value_sqrt, UNIT[method].value_sqrt)
    if method == "exact":
        assert close(dlrcore.cka(x, f).value, UNIT_CKA)
        assert close(dlrcore.nc1(x, Y).value / UNIT_NC1, 1.0)


@settings(max_examples=15, deadline=None)
@given(kx=exponents, kw=exponents)
def test_weights_mode_is_scale_free(kx, kw):
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(4, 8)), rng.normal(size=4)
    unit = dlrcore.dlr_from_weights(X, w, b)
    # outputs x W^T + b at scale 10**(kx + kw): the bias follows unless that leaves the float64 range
    kb = kx + kw
    if -300 <= kb <= 300:
        b = scaled(b, kb)
    else:
        b = None
        unit = dlrcore.dlr_from_weights(X, w)
    got = dlrcore.dlr_from_weights(scaled(X, kx), scaled(w, kw), b)
    assert close(got.value_span, unit.value_span) and close(got.value_sqrt, unit.value_sqrt)


def test_the_issue_reproducers():
    """The cases of issue 13, item 5: each gave 0.0, 0.427, "constant" or an overflow error."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    f = x @ rng.normal(size=(8, 3)) + rng.normal(size=(200, 3))
    want = ref_dlr(x, f).value
    for sx, sf in [(1, 10**-162.75), (1e-82, 1), (1e-100, 1), (1, 1e-310), (1e300, 1), (1e-300, 1e300)]:
        for method in ("exact", "sketch"):
            got = dlrcore.dlr(x * sx, f * sf, method=method, rank=8)
            assert abs(got.value - want) <= (TOL if method == "exact" else 0.05), (sx, sf, method)
    for s in (1e76, 1e-90, 1e300, 1e-300):
        assert close(dlrcore.cka(s * x, f).value, dlrcore.cka(x, f).value)


def test_scale_changes_between_batches_and_merges():
    """Batches of very different scales, in either order, and merges of statistics at different exponents, agree
    with the float64 reference on the data brought to one scale (exact powers of two, so the reference is exact)."""
    x, f, _ = problem(seed=5, n=240)
    factors = np.repeat(2.0 ** np.array([0, 700, -600]), 80)[:, None]  # 1, 5e210 and 2.4e-181
    xs, fs = x * factors, f
    ref = ref_dlr(x * factors / 2.0**700, f).value  # the same data at the largest block's scale
    one = dlrcore.DLRStats()
    for i in range(0, 240, 80):
        one.update(xs[i : i + 80], fs[i : i + 80])
    backwards = dlrcore.DLRStats()
    for i in (160, 80, 0):
        backwards.update(xs[i : i + 80], fs[i : i + 80])
    parts = [dlrcore.DLRStats().update(xs[i : i + 80], fs[i : i + 80]) for i in range(0, 240, 80)]
    for got in (one, backwards, sum(parts), parts[2] + parts[0] + parts[1]):
        assert abs(got.result().value - ref) <= TOL
    sk = [dlrcore.DLRSketch(rank=8).update(xs[i : i + 80], fs[i : i + 80]) for i in range(0, 240, 80)]
    whole = dlrcore.DLRSketch(rank=8).update(xs, fs)
    assert abs((sk[2] + sk[0] + sk[1]).result().value - whole.result().value) <= TOL


def test_scaled_statistics_save_load_and_pickle(tmp_path):
    import pickle

    st = dlrcore.DLRStats().update(X * 1e-250, F * 1e250, labels=Y)
    path = st.save(tmp_path / "s.npz")
    back = dlrcore.DLRStats.load(path)
    for other in (back, pickle.loads(pickle.dumps(st))):
        assert other.result().value == st.result().value
        assert other.nc1().value == st.nc1().value
    sk = dlrcore.DLRSketch(rank=8).update(X * 1e-250, F * 1e250)
    assert dlrcore.DLRSketch.load(sk.save(tmp_path / "k.npz")).result().value == sk.result().value
    cs = dlrcore.CKAStats().update(X * 1e200, F)
    assert dlrcore.CKAStats.load(cs.save(tmp_path / "c.npz")).result().value == cs.result().value
    # a damaged exponent field is refused, naming the field
    data = dict(np.load(path))
    data["scale_exponents"] = np.array([1.5, 0.0, 0.0])
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(DLRInputError, match="scale_exponents|checksum|damaged"):
        dlrcore.DLRStats.load(tmp_path / "bad.npz")


def test_a_rejected_batch_after_a_rescale_leaves_everything_unchanged():
    """A batch whose first rows force a new exponent and whose last row is NaN: refused, and the state (moments and
    exponents) is bit for bit what it was, so a good batch afterwards gives the reference value."""
    st = dlrcore.DLRStats(chunk_bytes=1 << 12).update(X[:100], F[:100])
    before = {k: (None if v is None else np.array(v, copy=True)) for k, v in st.moments().items()}
    bad_x = X[100:] * 1e200
    bad_x[-1, 0] = np.nan
    with pytest.raises(DLRInputError, match="NaN first at row 99"):
        st.update(bad_x, F[100:])
    after = st.moments()
    assert all((before[k] is None and after[k] is None) or np.array_equal(before[k], after[k]) for k in before)
    st.update(X[100:], F[100:])
    assert abs(st.result().value - ref_dlr(X, F).value) <= TOL


def test_spectrum_and_moments_in_data_units():
    st = dlrcore.DLRStats().update(X * 1e-100, F)
    unit = dlrcore.DLRStats().update(X, F)
    ratio = st.spectrum().eigenvalues / unit.spectrum().eigenvalues
    assert np.allclose(ratio, 1e-200, rtol=1e-9)
    assert np.allclose(st.moments()["features_features"], unit.moments()["features_features"] * 1e-200, rtol=1e-9)
    huge = dlrcore.DLRStats().update(X * 1e200, F)
    with pytest.raises(DLRInputError, match="features: .* above the float64 range"):
        huge.spectrum()
    with pytest.raises(DLRInputError, match="features: .* outside the float64 range"):
        huge.moments()
    assert close(huge.result().value, unit.result().value)  # the measure itself is unaffected


@pytest.mark.parametrize("offset", [1e4, 1e5])
def test_weights_mode_keeps_large_offsets_out_of_the_gram(offset):
    """Item 8: features + offset gave errors growing with offset**2 (1.6e-7 at 1e5). Forming the outputs in
    float64 rounds them at eps * offset relative to their spread, so the dense reference is good to about 1e-14 *
    offset; the tolerance is ten times that."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)) + offset
    w, b = rng.normal(size=(4, 8)), rng.normal(size=4)
    tol = 1e-13 * offset
    assert abs(dlrcore.dlr_from_weights(x, w, b).value - ref_dlr_from_weights(x, w, b).value) <= tol
    # the same offset as a bias in the span of W: the same outputs
    t = rng.normal(size=8) * offset
    got = dlrcore.dlr_from_weights(x - offset, w, b + w @ t).value
    assert abs(got - ref_dlr_from_weights(x - offset, w, b + w @ t).value) <= tol
