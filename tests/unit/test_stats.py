"""DLRStats: input handling, errors that leave the state intact, persistence, the weights-aware path."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import dlrcore
from dlrcore import DLRInputError, DLRResult, DLRStats
from dlrcore.stats import FORMAT_VERSION

from ..conftest import gaussian_problem


def _state(st: DLRStats):
    """(n, mean, co-moment) of the statistics, staged rows folded in."""
    mo = st._mom
    if mo is None:
        return (0, None, None)
    mo.flush()
    return (mo.n, mo.mean.copy(), mo.m.copy())


def _same_state(a, b) -> bool:
    return a[0] == b[0] and all(
        (x is None and y is None) or np.array_equal(x, y) for x, y in zip(a[1:], b[1:])
    )


# --------------------------------------------------------------------------- result object
def test_result_is_a_dataclass_that_prints_and_round_trips_json(rng):
    phi, out = gaussian_problem(rng)
    res = dlrcore.dlr(phi, out)
    assert isinstance(res, DLRResult)
    d = json.loads(res.to_json())
    assert d["n"] == 200 and d["p"] == 12 and d["C"] == 3 and d["method"] == "exact"
    assert DLRResult.from_dict(d) == res
    text = str(res)
    assert f"{res.value:.6f}" in text and "output rank r = 3" in text
    assert float(res) == res.value
    assert res.alignment == pytest.approx(1.0 - res.value, abs=1e-12)


def test_one_dimensional_outputs_mean_one_column(rng):
    phi, out = gaussian_problem(rng, C=1)
    a = dlrcore.dlr(phi, out[:, 0])
    b = dlrcore.dlr(phi, out)
    assert a.C == 1 and a.value == pytest.approx(b.value, rel=1e-12)


# --------------------------------------------------------------------------- dtypes and array types
@pytest.mark.parametrize("dtype, tol", [(np.float16, 5e-3), (np.float32, 1e-5), (np.int64, 1e-12)])
def test_lower_precision_and_integer_inputs_match_float64(rng, dtype, tol):
    phi, out = gaussian_problem(rng, n=400, p=6, C=2)
    if dtype == np.int64:
        phi, out = np.round(phi * 100), np.round(out * 100)
    ref = dlrcore.dlr(phi.astype(dtype).astype(np.float64), out.astype(dtype).astype(np.float64)).value
    got = dlrcore.dlr(phi.astype(dtype), out.astype(dtype), precision="float32" if dtype != np.int64 else "auto")
    assert got.value == pytest.approx(ref, abs=tol)
    assert got.precision == ("float64" if dtype == np.int64 else "float32")


def test_auto_precision_uses_float32_products_only_for_wide_low_precision_data(rng):
    narrow, out = gaussian_problem(rng, n=300, p=6, C=2)
    wide = rng.normal(size=(300, 130))
    assert dlrcore.dlr(narrow.astype(np.float32), out.astype(np.float32)).precision == "float64"
    assert dlrcore.dlr(wide.astype(np.float32), out.astype(np.float32)).precision == "float32"
    assert dlrcore.dlr(wide, out.astype(np.float32)).precision == "float64"
    assert dlrcore.dlr(wide, out, precision="float32").precision == "float32"


def test_precision_float64_forces_float64_products(rng):
    phi, out = gaussian_problem(rng)
    res = dlrcore.dlr(phi.astype(np.float32), out.astype(np.float32), precision="float64")
    assert res.precision == "float64"
    with pytest.raises(ValueError, match="precision"):
        DLRStats(precision="float16")


class _ArrayOnly:
    """An object exposing only __array__ (like many array libraries)."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


class _DLPackOnly:
    """An object exposing only the DLPack protocol."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_array_protocol_and_dlpack_objects_are_accepted(rng):
    phi, out = gaussian_problem(rng)
    ref = dlrcore.dlr(phi, out).value
    assert dlrcore.dlr(_ArrayOnly(phi), _ArrayOnly(out)).value == pytest.approx(ref, rel=1e-12)
    assert dlrcore.dlr(_DLPackOnly(phi), _DLPackOnly(out)).value == pytest.approx(ref, rel=1e-12)
    assert dlrcore.dlr(phi.tolist(), out.tolist()).value == pytest.approx(ref, rel=1e-12)


def test_bfloat16_from_ml_dtypes_if_present(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    phi, out = gaussian_problem(rng, n=300, p=5, C=2)
    bf = ml_dtypes.bfloat16
    got = dlrcore.dlr(phi.astype(bf), out.astype(bf))
    ref = dlrcore.dlr(phi.astype(bf).astype(np.float64), out.astype(bf).astype(np.float64))
    assert got.value == pytest.approx(ref.value, abs=1e-5)


# --------------------------------------------------------------------------- bad input
BAD_CASES = [
    ("mismatched rows", lambda phi, out: (phi, out[:-1]), "row"),
    ("3-d features", lambda phi, out: (phi[:, :, None], out), "ndim=3"),
    ("1-d features", lambda phi, out: (phi[:, 0], out), "ndim=1"),
    ("3-d outputs", lambda phi, out: (phi, out[:, :, None]), "ndim=3"),
    ("no columns", lambda phi, out: (phi[:, :0], out), "p = 0"),
    ("no output columns", lambda phi, out: (phi, out[:, :0]), "C = 0"),
    ("empty batch", lambda phi, out: (phi[:0], out[:0]), "empty"),
    ("strings", lambda phi, out: (phi.astype(str), out), "non-numeric"),
    ("objects", lambda phi, out: (phi.astype(object), out), "non-numeric"),
    ("complex", lambda phi, out: (phi + 1j, out), "complex"),
    ("NaN features", lambda phi, out: (np.where(np.arange(phi.size).reshape(phi.shape) == 7, np.nan, phi), out), "NaN"),
    ("Inf outputs", lambda phi, out: (phi, np.where(np.arange(out.size).reshape(out.shape) == 3, np.inf, out)), "Inf"),
]


@pytest.mark.parametrize("name, make, match", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_batches_raise_clear_errors_and_leave_state_untouched(rng, name, make, match):
    phi, out = gaussian_problem(rng, n=50, p=4, C=2)
    st = DLRStats().update(phi[:30], out[:30])
    st.update(phi[30:33], out[30:33])  # some rows staged, not yet folded in
    before = _state(st.copy())
    bad_phi, bad_out = make(phi[33:], out[33:])
    with pytest.raises(DLRInputError, match=match):
        st.update(bad_phi, bad_out)
    assert _same_state(_state(st), before)
    # and it still gives the right answer afterwards
    st.update(phi[33:], out[33:])
    assert st.result().value == pytest.approx(dlrcore.dlr(phi, out).value, rel=1e-10)


def test_float32_products_take_values_beyond_their_range(rng):
    phi, out = gaussian_problem(rng, n=50, p=4, C=2)
    phi, out = phi.astype(np.float32), out.astype(np.float32)
    # rows whose squares exceed float32's range even one at a time: the features are scaled by a power of two
    # (dlrcore.scaling) and the value is that of float64 products on the same float32 values (float32 products:
    # 1e-5 relative)
    for factor in (1e18, 1e20, 1e30):
        mixed = np.vstack([phi[:30], phi[30:] * np.float32(factor)])
        st = DLRStats(precision="float32").update(phi[:30], out[:30]).update(mixed[30:], out[30:])
        want = dlrcore.dlr(mixed.astype(np.float64), out.astype(np.float64)).value
        assert st.result().value == pytest.approx(want, rel=1e-5)
    # float64 products take the same values without trouble (D_LR is scale invariant in the features)
    big = DLRStats(precision="float64").update(phi * np.float32(1e18), out).result().value
    # phi * 1e18 rounds in float32
    assert big == pytest.approx(dlrcore.dlr(phi, out, precision="float64").value, rel=1e-6)


def test_width_changes_between_batches_are_rejected(rng):
    phi, out = gaussian_problem(rng, n=40, p=4, C=2)
    st = DLRStats().update(phi[:20], out[:20])
    with pytest.raises(DLRInputError, match="p = 4"):
        st.update(phi[20:, :3], out[20:])
    with pytest.raises(DLRInputError, match="C = 2"):
        st.update(phi[20:], out[20:, :1])
    assert st.n == 20


def test_too_few_samples_and_degenerate_outputs(rng):
    phi, out = gaussian_problem(rng, n=30, p=4, C=2)
    with pytest.raises(DLRInputError, match="at least 2 samples"):
        dlrcore.dlr(phi[:1], out[:1])
    with pytest.raises(DLRInputError, match="all zero"):
        dlrcore.dlr(phi, np.zeros_like(out))
    with pytest.raises(DLRInputError, match="constant"):
        dlrcore.dlr(phi, np.ones_like(out) * 3.0)
    with pytest.raises(DLRInputError, match="features are constant"):
        dlrcore.dlr(np.ones_like(phi), out)
    with pytest.raises(DLRInputError, match="no samples"):
        DLRStats().result()
    with pytest.raises(ValueError, match="rtol"):
        dlrcore.dlr(phi, out, rtol=1.5)


def test_merging_incompatible_statistics_is_refused(rng):
    phi, out = gaussian_problem(rng, n=40, p=4, C=2)
    a = DLRStats().update(phi, out)
    with pytest.raises(DLRInputError, match="feature width p"):
        a.merge(DLRStats().update(phi[:, :3], out))
    with pytest.raises(DLRInputError, match="output width C"):
        a.merge(DLRStats().update(phi, out[:, :1]))
    with pytest.raises(DLRInputError, match="weights"):
        a.merge(DLRStats(weight=np.ones((2, 4))).update(phi))
    with pytest.raises(TypeError):
        a.merge(object())
    assert a.n == 40


def test_labels_are_validated_and_consistent(rng):
    phi, out = gaussian_problem(rng, n=40, p=4, C=3)
    ids = rng.integers(0, 3, size=40)
    st = DLRStats().update(phi[:20], out[:20], labels=ids[:20])
    with pytest.raises(DLRInputError, match="every batch or none"):
        st.update(phi[20:], out[20:])
    with pytest.raises(DLRInputError, match=r"\[0, 3\)"):
        st.update(phi[20:], out[20:], labels=ids[20:] + 5)
    with pytest.raises(DLRInputError, match="rows"):
        st.update(phi[20:], out[20:], labels=ids[21:])
    st.update(phi[20:], out[20:], labels=ids[20:])
    mo = st.moments()
    onehot = np.eye(3)[ids]
    # class counts and class sums come back exactly from the label statistics
    np.testing.assert_allclose(mo["mean_labels"] * 40, onehot.sum(0), rtol=1e-12)
    yc = onehot - onehot.mean(0)
    np.testing.assert_allclose(mo["labels_features"], yc.T @ (phi - phi.mean(0)), rtol=1e-9, atol=1e-9)
    # labels never change D_LR
    assert st.result().value == pytest.approx(dlrcore.dlr(phi, out).value, rel=1e-12)
    with pytest.raises(DLRInputError, match="num_classes"):
        DLRStats().update(phi, out[:, 0], labels=ids)


# --------------------------------------------------------------------------- moments
def test_moments_match_numpy(rng):
    phi, out = gaussian_problem(rng, n=120, p=5, C=2)
    st = DLRStats(chunk_bytes=1024)
    for i in range(0, 120, 17):
        st.update(phi[i : i + 17], out[i : i + 17])
    mo = st.moments()
    pc, fc = phi - phi.mean(0), out - out.mean(0)
    assert mo["n"] == 120
    np.testing.assert_allclose(mo["mean_features"], phi.mean(0), rtol=1e-12)
    np.testing.assert_allclose(mo["features_features"], pc.T @ pc, rtol=1e-11)
    np.testing.assert_allclose(mo["outputs_features"], fc.T @ pc, rtol=1e-11, atol=1e-10)
    np.testing.assert_allclose(mo["outputs_outputs"], fc.T @ fc, rtol=1e-11)


def test_float32_accumulation_is_stable_with_a_large_mean(rng):
    """Phi^T Phi - n mu mu^T in float32 would lose every digit here; the centered update must not."""
    n, p = 20000, 6
    phi = (1e4 + rng.normal(size=(n, p))).astype(np.float32)
    out = (phi.astype(np.float64) @ rng.normal(size=(p, 2)) + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)
    st = DLRStats(chunk_bytes=64 * 1024, precision="float32")
    for i in range(0, n, 1000):
        st.update(phi[i : i + 1000], out[i : i + 1000])
    x = phi.astype(np.float64)
    cov = (x - x.mean(0)).T @ (x - x.mean(0))
    np.testing.assert_allclose(st.moments()["features_features"], cov, rtol=1e-4)
    ref = dlrcore.dlr(x, out.astype(np.float64)).value
    assert st.result().value == pytest.approx(ref, abs=1e-5)


# --------------------------------------------------------------------------- save / load
def test_save_load_round_trip_and_merge_after_load(tmp_path, rng):
    phi, out = gaussian_problem(rng, n=100, p=5, C=3)
    ids = rng.integers(0, 3, size=100)
    a = DLRStats().update(phi[:60], out[:60], labels=ids[:60])
    path = a.save(tmp_path / "stats.npz")
    b = DLRStats.load(path)
    assert b.n == 60 and b.p == 5 and b.C == 3
    assert b.result() == a.result()
    b.update(phi[60:], out[60:], labels=ids[60:])
    assert b.result().value == pytest.approx(dlrcore.dlr(phi, out).value, rel=1e-10)
    assert pickle.loads(pickle.dumps(b)).result() == b.result()
    # suffix added when missing; permissions as for any new file (mkstemp alone would give 0600)
    assert a.save(tmp_path / "noext").name == "noext.npz"
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask


def test_weights_mode_survives_save_load(tmp_path, rng):
    phi = rng.normal(size=(80, 6))
    w, bias = rng.normal(size=(4, 6)), rng.normal(size=4)
    a = DLRStats(weight=w, bias=bias).update(phi)
    b = DLRStats.load(a.save(tmp_path / "w.npz"))
    assert b.weights_mode and b.result() == a.result()


def test_load_rejects_foreign_damaged_and_newer_files(tmp_path, rng):
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(DLRInputError, match="not a dlrcore.DLRStats file"):
        DLRStats.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(DLRInputError, match="not a dlrcore.DLRStats file"):
        DLRStats.load(tmp_path / "junk.npz")
    phi, out = gaussian_problem(rng, n=30, p=3, C=2)
    good = DLRStats().update(phi, out).save(tmp_path / "good.npz")
    with np.load(good) as z:
        data = dict(z)
    data.pop("checksum")  # the files below stand for files written by other versions, without a stale checksum
    data["format_version"] = np.array(FORMAT_VERSION + 1)
    np.savez(tmp_path / "newer.npz", **data)
    with pytest.raises(DLRInputError, match="newer"):
        DLRStats.load(tmp_path / "newer.npz")
    del data["comoment"]
    data["format_version"] = np.array(FORMAT_VERSION)
    np.savez(tmp_path / "missing.npz", **data)
    with pytest.raises(DLRInputError, match="field 'comoment' is missing"):
        DLRStats.load(tmp_path / "missing.npz")
    with zipfile.ZipFile(tmp_path / "trunc.npz", "w") as zf:
        zf.writestr("magic.npy", b"\x93NUMPY garbage")
    with pytest.raises(DLRInputError):
        DLRStats.load(tmp_path / "trunc.npz")


def test_failed_save_keeps_the_previous_file(tmp_path, rng, monkeypatch):
    phi, out = gaussian_problem(rng, n=30, p=3, C=2)
    st = DLRStats().update(phi, out)
    path = st.save(tmp_path / "s.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    st.update(phi, out)
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        st.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temporary left behind
    assert DLRStats.load(path).n == 30


# --------------------------------------------------------------------------- weights-aware path
def test_weights_path_never_forms_outputs_and_validates(rng):
    phi = rng.normal(size=(50, 4))
    with pytest.raises(DLRInputError, match="features only"):
        DLRStats(weight=np.ones((3, 4))).update(phi, np.ones((50, 3)))
    with pytest.raises(DLRInputError, match="bias"):
        DLRStats(weight=np.ones((3, 4)), bias=np.ones(2))
    with pytest.raises(DLRInputError, match="bias was given without weight"):
        DLRStats(bias=np.ones(2))
    with pytest.raises(DLRInputError, match="p = 4"):
        DLRStats(weight=np.ones((3, 4))).update(phi[:, :3])
    with pytest.raises(DLRInputError, match="all zero"):
        dlrcore.dlr_from_weights(phi, np.zeros((3, 4)))


def test_weights_path_handles_a_wide_head_cheaply(rng):
    """C >> p: the result equals the corollary 1 - sqrt(PR / rank) and matches explicit outputs."""
    n, p, C = 500, 16, 3000
    phi = rng.normal(size=(n, p)) * np.linspace(0.2, 3, p)
    w, b = rng.normal(size=(C, p)), rng.normal(size=C)
    res = dlrcore.dlr_from_weights(phi.astype(np.float32), w.astype(np.float32), b.astype(np.float32))
    s2 = np.linalg.svd(phi - phi.mean(0), compute_uv=False) ** 2
    corollary = 1 - np.sqrt(s2.sum() ** 2 / (s2**2).sum() / p)
    assert res.method == "exact-weights" and res.C == C and res.output_rank == p + 1
    assert res.value == pytest.approx(corollary, abs=1e-5)
    assert res.constant_share == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("chunk_bytes", [512, 1 << 20], ids=["batch spans many flushes", "batch is staged"])
def test_rejected_batch_never_leaves_rows_behind(rng, chunk_bytes):
    """Whether a batch is validated up front (several flushes) or while it is staged, a bad one changes nothing."""
    phi, out = gaussian_problem(rng, n=400, p=4, C=2)
    phi, out = phi.astype(np.float32), out.astype(np.float32)
    st = DLRStats(chunk_bytes=chunk_bytes, precision="float32").update(phi[:100], out[:100])
    before = _state(st.copy())
    bad = phi[100:].copy()
    bad[-1, -1] = np.inf  # in the last row: the first rows of the batch are fine
    with pytest.raises(DLRInputError, match="Inf"):
        st.update(bad, out[100:])
    assert _same_state(_state(st), before)
    st.update(phi[100:], out[100:])
    assert st.result().value == pytest.approx(dlrcore.dlr(phi, out).value, abs=1e-6)


def test_a_rejected_first_batch_leaves_a_fresh_object(rng):
    phi, out = gaussian_problem(rng, n=50, p=4, C=2)
    st = DLRStats()
    bad = phi.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DLRInputError, match="NaN first at row 3, column 1"):
        st.update(bad, out, labels=rng.integers(0, 2, size=50))
    assert st.n == 0 and st.p is None and st.C is None
    st.update(phi[:, :3], out[:, :1])  # other widths and no labels are still welcome
    assert (st.p, st.C) == (3, 1)


def test_distribution_shift_between_batches_keeps_float32_accuracy(rng):
    """Two rows near 0, then the rest 300 standard deviations away: the second stage is shifted by a running
    mean far from its own, and z^T z - m r r^T would cancel in float32 (5% error measured without the
    re-centering); the stage is re-centered and the moments stay at float32 accuracy."""
    n, p = 20000, 4
    phi = rng.normal(size=(n, p))
    phi[2:] += 300.0
    out = rng.normal(size=(n, 2))
    phi32, out32 = phi.astype(np.float32), out.astype(np.float32)
    st = DLRStats(precision="float32").update(phi32[:2], out32[:2]).update(phi32[2:], out32[2:])
    x = phi32.astype(np.float64)
    xc = x - x.mean(axis=0)
    gram = xc.T @ xc
    np.testing.assert_allclose(st.moments()["features_features"], gram, rtol=1e-5, atol=1e-5 * np.abs(gram).max())


def test_rtol_below_the_gram_resolution_is_raised_with_a_warning(rng):
    phi, out = gaussian_problem(rng, n=200, p=6, C=2)
    out = np.column_stack([out, out @ [1.0, 2.0]])  # a third column in the span: true rank 2
    res = dlrcore.dlr(phi, out, rtol=1e-12)
    assert res.output_rank == 2
    assert res.rtol == pytest.approx(10 * np.sqrt(3 * np.finfo(float).eps))
    assert any("below the resolution" in w for w in res.warnings)
    assert dlrcore.dlr(phi, out, rtol=1e-3).warnings == ()


def test_sum_of_statistics_objects(rng):
    phi, out = gaussian_problem(rng, n=90, p=4, C=2)
    parts = [DLRStats().update(phi[i : i + 30], out[i : i + 30]) for i in range(0, 90, 30)]
    total = sum(parts)
    assert total.n == 90 and parts[0].n == 30  # the parts are not modified
    assert total.result().value == pytest.approx(dlrcore.dlr(phi, out).value, rel=1e-10)


def test_drift_across_pending_stages_keeps_float32_accuracy(rng):
    """Tiny stages, three plateaus far apart: stages are multiplied into a pending Gram about one shift, and a
    stage that drifted from it forces a fold and a re-centering; the moments stay at float32 accuracy."""
    n, p = 3000, 5
    phi = rng.normal(size=(n, p)) * rng.uniform(0.5, 2.0, size=p)
    phi[1000:2000] += 200.0
    phi[2000:] -= 500.0
    out = rng.normal(size=(n, 2))
    phi32, out32 = phi.astype(np.float32), out.astype(np.float32)
    st = DLRStats(precision="float32", chunk_bytes=64 * 7 * 4)  # 64-row stages
    for i in range(0, n, 37):
        st.update(phi32[i : i + 37], out32[i : i + 37])
    x = phi32.astype(np.float64)
    xc = x - x.mean(axis=0)
    mo = st.moments()
    np.testing.assert_allclose(mo["mean_features"], x.mean(axis=0), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(mo["features_features"], xc.T @ xc, rtol=1e-5, atol=1e-5 * np.abs(xc.T @ xc).max())
    # within-plateau structure survives: compare D_LR with the float64 reference
    assert st.result().value == pytest.approx(dlrcore.dlr(x, out32.astype(np.float64)).value, abs=1e-5)
