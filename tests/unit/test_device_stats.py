"""Exact statistics of arrays that stay in their own namespace (CuPy on a GPU; array_api_strict on CPU here).

``DLRStats.update`` keeps device batches on their device (an array-API accumulator) and folds them into the host
statistics once; ``dlrcore.dlr(method="exact")`` on such arrays does the same. ``array_api_strict`` allows only the
standard's operations, so these tests prove the device path is namespace-clean; the CuPy class runs on a GPU.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import dlrcore
from dlrcore.backend import is_device_input


@pytest.fixture
def xs():
    """array_api_strict (only the standard's operations, on the CPU); a fixture, so that the CuPy class below
    still runs where array_api_strict is not installed (the GPU machines)."""
    return pytest.importorskip("array_api_strict")


def _data(seed: int = 0, n: int = 2400, p: int = 40, C: int = 4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.2, 3.0, p) + rng.normal(size=p) * 5.0
    f = x @ rng.standard_normal((p, C)) + 0.2 * rng.standard_normal((n, C)) + 1.0
    lab = rng.integers(0, C, n)
    return x.astype(dtype), f.astype(dtype), lab


def _feed(st: dlrcore.DLRStats, x, f, lab, wrap, step: int = 500):
    for i in range(0, x.shape[0], step):
        st.update(wrap(x[i : i + step]), wrap(f[i : i + step]), labels=None if lab is None else lab[i : i + step])
    return st


def _assert_same_moments(a: dlrcore.DLRStats, b: dlrcore.DLRStats, rtol: float) -> None:
    ma, mb = a.moments(), b.moments()
    assert ma["n"] == mb["n"]
    for key, va in ma.items():
        if key == "n" or va is None:
            assert mb[key] is None or key == "n"
            continue
        scale = max(1.0, float(np.abs(va).max()))
        assert np.abs(np.asarray(mb[key]) - va).max() <= rtol * scale, key


def test_is_device_input_routes_only_non_numpy_namespaces(xs):
    import torch

    assert is_device_input(xs.asarray(np.ones((2, 2))))
    assert not is_device_input(np.ones((2, 2)))
    assert not is_device_input([[1.0, 2.0]])
    assert not is_device_input(torch.ones(2, 2))  # CPU tensors go through the host path


@pytest.mark.parametrize("labels", [False, True])
def test_device_batches_equal_host_statistics_float64(labels, xs):
    x, f, lab = _data()
    lab = lab if labels else None
    host = _feed(dlrcore.DLRStats(), x, f, lab, np.asarray)
    dev = _feed(dlrcore.DLRStats(), x, f, lab, xs.asarray)
    assert dev.n == host.n == x.shape[0]
    _assert_same_moments(host, dev, 1e-11)
    assert dev.result().value == pytest.approx(host.result().value, abs=1e-12)
    assert dev.result().output_rank == host.result().output_rank
    if labels:
        assert dev.label_kind == "classes"
        assert dev.nc1().value == pytest.approx(host.nc1().value, rel=1e-9)
        qa, qb = host.spectrum(10).cumulative_quality, dev.spectrum(10).cumulative_quality
        np.testing.assert_allclose(qb, qa, atol=1e-10)


def test_device_batches_float32_products_match_host_float32(xs):
    x, f, _ = _data(seed=3, p=150, C=6, dtype=np.float32)  # width >= 128: float32 products on both paths
    host = _feed(dlrcore.DLRStats(), x, f, None, np.asarray)
    dev = _feed(dlrcore.DLRStats(), x, f, None, xs.asarray)
    assert host.result().precision == dev.result().precision == "float32"
    ref = dlrcore.dlr(x.astype(np.float64), f.astype(np.float64)).value
    assert abs(dev.result().value - ref) < 1e-5
    assert abs(dev.result().value - host.result().value) < 1e-5


def test_mixed_host_and_device_batches_merge_copy_save_and_pickle(tmp_path, xs):
    x, f, lab = _data(seed=1)
    ref = _feed(dlrcore.DLRStats(), x, f, lab, np.asarray)
    mixed = dlrcore.DLRStats()
    for i, wrap in zip(range(0, x.shape[0], 600), [np.asarray, xs.asarray, np.asarray, xs.asarray]):
        mixed.update(wrap(x[i : i + 600]), wrap(f[i : i + 600]), labels=lab[i : i + 600])
    _assert_same_moments(ref, mixed, 1e-11)
    # a device-accumulated object merges, copies, pickles and saves like any other
    a = _feed(dlrcore.DLRStats(), x[:1000], f[:1000], lab[:1000], xs.asarray)
    b = _feed(dlrcore.DLRStats(), x[1000:], f[1000:], lab[1000:], xs.asarray)
    total = a + b
    assert a.n == 1000 and b.n == x.shape[0] - 1000
    _assert_same_moments(ref, total, 1e-11)
    _assert_same_moments(ref, pickle.loads(pickle.dumps(total)), 1e-11)
    dev_only = _feed(dlrcore.DLRStats(), x, f, lab, xs.asarray)
    path = dev_only.save(tmp_path / "dev.npz")
    _assert_same_moments(ref, dlrcore.DLRStats.load(path), 1e-11)


def test_bad_device_batch_is_rejected_and_state_kept(xs):
    x, f, _ = _data(seed=2)
    st = _feed(dlrcore.DLRStats(), x[:1000], f[:1000], None, xs.asarray)
    before = st.copy()
    bad = x[1000:1100].copy()
    bad[7, 3] = np.nan
    with pytest.raises(dlrcore.DLRInputError, match="NaN"):
        st.update(xs.asarray(bad), xs.asarray(f[1000:1100]))
    inf_out = f[1000:1100].copy()
    inf_out[0, 0] = np.inf
    with pytest.raises(dlrcore.DLRInputError, match="Inf"):
        st.update(xs.asarray(x[1000:1100]), xs.asarray(inf_out))
    with pytest.raises(dlrcore.DLRInputError, match="mismatched n"):
        st.update(xs.asarray(x[:10]), xs.asarray(f[:11]))
    with pytest.raises(dlrcore.DLRInputError, match="columns"):
        st.update(xs.asarray(x[:10, :5]), xs.asarray(f[:10]))
    assert st.n == 1000
    _assert_same_moments(before, st, 0.0)


def test_dlr_exact_on_array_api_arrays_matches_numpy(xs):
    x, f, _ = _data(seed=4, p=60, C=7)
    host = dlrcore.dlr(x, f)
    dev = dlrcore.dlr(xs.asarray(x), xs.asarray(f))
    assert dev.method == "exact"
    assert dev.value == pytest.approx(host.value, abs=1e-12)
    assert dev.output_rank == host.output_rank and dev.constant_share == pytest.approx(host.constant_share)


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("CuPy is installed but no GPU is present")
    except Exception as exc:  # CUDA driver missing
        pytest.skip(f"CuPy is installed but no GPU is usable: {exc}")
    return cupy


class TestCuPy:
    """Run on a GPU: the same checks with CuPy arrays and CUDA torch tensors (skipped without a GPU)."""

    def test_device_stats_on_gpu_equal_host(self):
        cupy = _cupy_or_skip()
        x, f, lab = _data(seed=5)
        host = _feed(dlrcore.DLRStats(), x, f, lab, np.asarray)
        dev = _feed(dlrcore.DLRStats(), x, f, lab, cupy.asarray)
        assert dev._dev is not None and type(dev._dev.y).__module__.startswith("cupy")  # accumulated on the GPU
        _assert_same_moments(host, dev, 1e-10)

    def test_torch_cuda_collect_stays_on_gpu(self):
        _cupy_or_skip()
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch has no CUDA device")
        from dlrcore.adapters.torch import collect

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).cuda()
        xb = torch.randn(512, 8, device="cuda")
        st = collect(model, [(xb[i : i + 128],) for i in range(0, 512, 128)], progress=False)
        with torch.no_grad():
            feats = model[1](model[0](xb)).cpu().numpy()
            outs = model(xb).cpu().numpy()
        assert abs(st.result().value - dlrcore.dlr(feats, outs).value) < 1e-6


def test_device_exact_path_gives_both_kernels_and_the_baseline(xs):
    """dlrcore.dlr on array-API arrays (moments on their device): D_half, class-centered D_half and the baseline
    equal the host path's (same float64 moments; the baseline draws the same readouts from the same seed)."""
    x, f, _ = _data(seed=5)
    host = dlrcore.dlr(x, f, output_kernel="sqrt", center_logits=True, baseline=True)
    dev = dlrcore.dlr(xs.asarray(x), xs.asarray(f), output_kernel="sqrt", center_logits=True, baseline=True)
    assert dev.value == dev.value_sqrt and dev.logits_centered
    assert dev.value_sqrt == pytest.approx(host.value_sqrt, abs=1e-12)
    assert dev.value_span == pytest.approx(host.value_span, abs=1e-12)
    assert dev.baseline.sqrt_mean == pytest.approx(host.baseline.sqrt_mean, abs=1e-10)
