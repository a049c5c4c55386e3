"""dlrcore.kernels.shift_into: the numba kernel against the NumPy fallback and a plain float64 reference.

Tolerances. The written values are compared exactly (both backends round ``x - shift`` computed in
``result_type(x, out)`` to out's dtype, as ``np.subtract(..., casting="unsafe")`` does). The float64 sums differ
only by summation order: a column sum must lie within ``1e-12 * sum(|values|)`` of the reference and the sum of
squares within a relative ``1e-12`` (n <= 3000 terms, float64 rounding error <= n * 1.1e-16 of the sum of
magnitudes, so 1e-12 has a margin of 3x and more).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dlrcore import kernels
from dlrcore.kernels import shift_into, shift_into_numpy

RTOL = 1e-12


def _numba_kernel():
    """The numba path, or skip (numba missing, or disabled by DLRCORE_DISABLE_NUMBA)."""
    pytest.importorskip("numba")
    if kernels.BACKEND != "numba":
        pytest.skip("numba backend disabled by DLRCORE_DISABLE_NUMBA")
    return kernels._shift_into_numba


def _reference(x, shift, out_dtype):
    """Written values (NumPy's own rule) and float64 sums computed from them."""
    z = np.empty(x.shape, dtype=out_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        np.subtract(x, shift, out=z, casting="unsafe")
        z64 = z.astype(np.float64)
        return z, z64.sum(axis=0), float((z64 * z64).sum()), np.abs(z64).sum(axis=0)


def _assert_sums(colsum, sumsq, ref_sum, ref_sq, ref_abs):
    assert colsum.dtype == np.float64 and colsum.shape == ref_sum.shape
    assert isinstance(sumsq, float)
    np.testing.assert_array_less(np.abs(colsum - ref_sum), RTOL * ref_abs + 1e-300)
    assert abs(sumsq - ref_sq) <= RTOL * ref_sq + 1e-300


def _make_x(rng, n, p, dtype, layout):
    base = rng.normal(loc=3.0, scale=2.0, size=(2 * n + 1, p + 7)).astype(dtype)
    if layout == "C":
        return np.ascontiguousarray(base[:n, :p])
    if layout == "F":
        return np.asfortranarray(base[:n, :p])
    if layout == "cols":  # unit column stride, row stride larger than the width
        return base[:n, 3 : 3 + p]
    if layout == "rows2":  # every other row
        return base[: 2 * n : 2, :p]
    if layout == "reversed":  # negative row stride
        return base[:n, :p][::-1]
    raise AssertionError(layout)


def _make_out(n, p, dtype, kind):
    """out as a C array or a column slice of a wider buffer, filled with a sentinel to check nothing else moves."""
    if kind == "C":
        buf = np.full((n, p), 7.0, dtype=dtype)
        return buf, buf
    buf = np.full((n, p + 9), 7.0, dtype=dtype)
    return buf, buf[:, 4 : 4 + p]


def _check_case(fn, x, out_dtype, out_kind, rng):
    n, p = x.shape
    shift = rng.normal(size=p).astype(out_dtype)
    buf, out = _make_out(n, p, out_dtype, out_kind)
    before = buf.copy()
    colsum, sumsq = fn(x, shift, out)
    z, ref_sum, ref_sq, ref_abs = _reference(x, shift, out_dtype)
    np.testing.assert_array_equal(out, z)
    if out_kind != "C":  # columns outside the slice are untouched
        np.testing.assert_array_equal(buf[:, :4], before[:, :4])
        np.testing.assert_array_equal(buf[:, 4 + p :], before[:, 4 + p :])
    _assert_sums(colsum, sumsq, ref_sum, ref_sq, ref_abs)
    return colsum, sumsq, out.copy()


CASES = [
    (xd, od, layout, ok)
    for xd in (np.float16, np.float32, np.float64)
    for od in (np.float32, np.float64)
    for layout in ("C", "F", "cols", "rows2", "reversed")
    for ok in ("C", "slice")
    # keep the numba specializations compiled by this file small: non-C layouts only with float32 output
    if layout in ("C", "cols") or od == np.float32
]
SHAPES = [(1, 7), (63, 5), (200, 37), (700, 300)]  # the last has >= 2**17 elements: the parallel path


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("xd,od,layout,ok", CASES)
def test_numpy_fallback_matches_reference(xd, od, layout, ok, shape, rng):
    x = _make_x(rng, *shape, xd, layout)
    _check_case(shift_into_numpy, x, od, ok, rng)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("xd,od,layout,ok", CASES)
def test_numba_matches_fallback_and_reference(xd, od, layout, ok, shape, rng):
    fn = _numba_kernel()
    x = _make_x(rng, *shape, xd, layout)
    seed = int(rng.integers(2**31))
    s1, q1, z1 = _check_case(fn, x, od, ok, np.random.default_rng(seed))
    s2, q2, z2 = _check_case(shift_into_numpy, x, od, ok, np.random.default_rng(seed))
    np.testing.assert_array_equal(z1, z2)  # identical written values
    _assert_sums(s1, q1, s2, q2, _reference(x, np.zeros(x.shape[1], od), od)[3] + np.abs(s2))


def test_public_function_matches_fallback(rng):
    x = rng.normal(size=(500, 40)).astype(np.float32)
    shift = x.mean(axis=0)
    a, b = np.empty_like(x), np.empty_like(x)
    s1, q1 = shift_into(x, shift, a)
    s2, q2 = shift_into_numpy(x, shift, b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(s1, s2, rtol=0, atol=RTOL * np.abs(a.astype(np.float64)).sum(axis=0).max())
    assert q1 == pytest.approx(q2, rel=RTOL)


def test_numba_deterministic_over_threads(rng):
    fn = _numba_kernel()
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    shift = x[:100].mean(axis=0)
    out = np.empty_like(x)
    threads = kernels.num_threads()
    try:
        kernels.set_num_threads(1)
        one = fn(x, shift, out)
        kernels.set_num_threads(3)  # three threads split the 47 blocks unevenly
        many = fn(x, shift, out)
    finally:
        kernels.set_num_threads(threads)
    with pytest.raises(ValueError, match="positive integer"):
        kernels.set_num_threads(0)
    np.testing.assert_array_equal(one[0], many[0])  # the block partition depends on n only
    assert one[1] == many[1]


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@pytest.mark.parametrize("xd,od", [(np.float32, np.float32), (np.float64, np.float32), (np.float64, np.float64)])
def test_nan_inf_propagate(impl, xd, od, rng):
    fn = shift_into_numpy if impl == "numpy" else _numba_kernel()
    n, p = 400, 400  # 160000 elements: the numba path runs in parallel
    x = rng.normal(size=(n, p)).astype(xd)
    shift = np.zeros(p, dtype=od)
    out = np.empty((n, p), dtype=od)
    s, q = fn(x, shift, out)
    assert np.isfinite(s).all() and np.isfinite(q)

    y = x.copy()
    y[5, 3] = np.nan
    s, q = fn(y, shift, out)
    assert np.isnan(s[3]) and np.isnan(q)
    assert np.isfinite(np.delete(s, 3)).all()

    y = x.copy()
    y[399, 10] = np.inf
    y[0, 11] = -np.inf
    s, q = fn(y, shift, out)
    assert s[10] == np.inf and s[11] == -np.inf and q == np.inf
    assert np.isfinite(np.delete(s, [10, 11])).all()

    y[200, 10] = -np.inf  # +inf and -inf in one column
    s, _ = fn(y, shift, out)
    assert np.isnan(s[10])

    if od == np.float32 and xd == np.float64:  # overflow of the cast to float32 shows as Inf
        y = x.copy()
        y[7, 7] = 1e39
        s, q = fn(y, shift, out)
        assert out[7, 7] == np.inf and s[7] == np.inf and q == np.inf


@pytest.mark.parametrize("impl", ["public", "numpy", "numba"])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_empty(impl, shape):
    fn = {"public": shift_into, "numpy": shift_into_numpy}.get(impl) or _numba_kernel()
    if impl == "numba" and 0 in shape:
        fn = shift_into  # the dispatcher handles empty inputs before the kernel
    x = np.ones(shape, dtype=np.float32)
    out = np.empty(shape, dtype=np.float32)
    s, q = fn(x, np.zeros(shape[1], np.float32), out)
    assert s.shape == (shape[1],) and s.dtype == np.float64 and not s.any() and q == 0.0


def test_other_dtypes_go_through_numpy(rng):
    x = rng.integers(-1000, 1000, size=(50, 6)).astype(np.int32)
    shift = np.full(6, 0.5, dtype=np.float32)
    out = np.empty((50, 6), dtype=np.float32)
    s, q = shift_into(x, shift, out)
    np.testing.assert_array_equal(out, x - 0.5)
    np.testing.assert_allclose(s, (x - 0.5).sum(axis=0), rtol=RTOL)
    assert q == pytest.approx(float(((x - 0.5) ** 2).sum()), rel=RTOL)


def test_argument_checks():
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(TypeError):
        shift_into(x, np.zeros(3, np.float64), np.empty((4, 3), np.float32))  # shift dtype != out dtype
    with pytest.raises(ValueError):
        shift_into(x, np.zeros(3, np.float32), np.empty((4, 4), np.float32))  # shape
    with pytest.raises(ValueError):
        shift_into(x, np.zeros(3, np.float32), np.empty((3, 4), np.float32).T)  # out not row-major
    with pytest.raises(TypeError):
        shift_into(x, np.zeros(3, np.float16), np.empty((4, 3), np.float16))  # out dtype
    with pytest.raises(TypeError):
        shift_into(x[0], np.zeros(3, np.float32), np.empty(3, np.float32))


def test_backend_reporting_and_env_switch():
    assert kernels.backend() == kernels.BACKEND
    try:
        import numba  # noqa: F401

        has_numba = True
    except ImportError:
        has_numba = False
    expected = "numba" if has_numba and os.environ.get("DLRCORE_DISABLE_NUMBA", "") != "1" else "numpy"
    assert expected == kernels.BACKEND
    code = "import dlrcore.kernels as k; print(k.backend())"
    env = dict(os.environ, DLRCORE_DISABLE_NUMBA="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "numpy"


@pytest.mark.parametrize("work", [np.float32, np.float64])
def test_moments_same_with_and_without_kernel(work, rng, monkeypatch):
    """Moments staged through the fused kernel agree with the NumPy staging (float64 vs work-dtype sums)."""
    from dlrcore import moments

    a = rng.normal(loc=2.0, size=(3000, 7)).astype(np.float32)
    b = rng.normal(size=(3000, 4))  # float64 block, cast into the work dtype
    results = []
    for kernel in (moments._fused_kernel(), None):
        monkeypatch.setattr(moments, "_SHIFT_INTO", [kernel])
        mo = moments.Moments([7, 4], work=np.dtype(work), chunk_bytes=4096 * 11 * 4)
        for r in range(0, 3000, 700):
            mo.stage([a[r : r + 700], b[r : r + 700]])
        mo.flush()
        results.append((mo.n, mo.mean.copy(), moments.symmetric(mo.m)))
        with pytest.raises(moments.BadSegment):
            bad = b[:10].copy()
            bad[3, 1] = np.nan
            mo.stage([a[:10], bad])
    (n1, m1, c1), (n2, m2, c2) = results
    assert n1 == n2 == 3000
    tol = 1e-6 if work == np.float32 else 1e-12
    np.testing.assert_allclose(m1, m2, rtol=tol, atol=tol)
    np.testing.assert_allclose(c1, c2, rtol=tol, atol=tol * np.abs(c2).max())


def test_kernel_leaves_torch_thread_count_alone():
    """numba's OpenMP layer shares libgomp with torch: the kernel must not change the thread count torch uses
    (an earlier version called numba.set_num_threads around small inputs, which reset torch's count)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for n in (8, 200_000):  # serial and parallel paths
            x = np.random.default_rng(0).random((n, 64), dtype=np.float32)
            kernels.shift_into(x, x[0].copy(), np.empty_like(x))
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
