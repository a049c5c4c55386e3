"""Fused staging kernel: ``out[:] = x - shift`` with the float64 column sums and sum of squares of what was written.

:func:`shift_into` is the staging pass of :class:`dlrcore.moments.Moments` in one read of ``x`` and one write of
``out``, instead of a subtraction, a column sum and a BLAS dot over the staged rows (three reads and one write).
It has two backends with the same semantics:

* ``"numba"``: a serial Numba kernel (``nogil``) over fixed row blocks (the partition depends only on the row
  count, so results do not depend on the number of threads), each block accumulating per-column partial sums of
  the written values and of their squares in float64; the partials are then added in block order. Large inputs
  split the blocks among the threads of a small pool of Python threads (:func:`num_threads`), not Numba's
  parallel layer: Numba's OpenMP layer makes a later ``fork`` hang (multiprocessing's default start method on
  Linux), its workqueue layer is not thread-safe, and both share thread counts with other libraries (torch).
  The pool is dropped in a forked child and made again on first use. Compiled lazily on the first call for each
  combination of dtypes (about a second or two each) and cached on disk (``cache=True``), so later processes
  load it in milliseconds.
* ``"numpy"``: plain NumPy (``np.subtract`` with ``casting="unsafe"``, float64 reductions), used when numba is
  not importable or when the environment variable ``DLRCORE_DISABLE_NUMBA=1`` is set before dlrcore is
  imported.

Semantics (both backends): the subtraction is computed in ``np.result_type(x, out)`` and rounded to the dtype
of ``out`` (exactly as ``np.subtract(x, shift, out=out, casting="unsafe")``), so the written values are
bitwise identical between backends; the float64 sums differ only by summation order (a few ulps in float64).
NaN and Inf in the written values (including overflow of the cast to float32) propagate into the sums.

Examples
--------
>>> import numpy as np
>>> x = np.array([[1.0, 2.0], [3.0, 5.0]], dtype=np.float32)
>>> out = np.empty((2, 2), dtype=np.float32)
>>> colsum, sumsq = shift_into(x, np.array([1.0, 1.0], dtype=np.float32), out)
>>> out.tolist(), colsum.tolist(), sumsq
([[0.0, 1.0], [2.0, 4.0]], [2.0, 5.0], 21.0)
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from .checks import check_int

__all__ = ["BACKEND", "backend", "num_threads", "set_num_threads", "shift_into", "shift_into_numpy"]

_ENV_DISABLE = "DLRCORE_DISABLE_NUMBA"

#: At least this many rows per parallel block; at most ``_MAX_BLOCKS`` blocks.
_MIN_BLOCK_ROWS = 64
_MAX_BLOCKS = 64

#: Inputs of fewer elements run on one thread.
_PAR_MIN_ELEMS = 1 << 17

#: float16 input is widened to float32 (exactly) in chunks of about this many elements.
_F16_CHUNK_ELEMS = 1 << 18

#: Rows per chunk of the NumPy fallback's float64 sum of squares (bounds its temporary).
_NP_SQ_CHUNK_ELEMS = 1 << 16

_OUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_X_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

numba: Any = None  # the module when importable and not disabled
if os.environ.get(_ENV_DISABLE, "").strip() not in ("1", "true", "True", "yes"):
    try:
        import numba
    except ImportError:  # numba is optional
        numba = None

#: Active backend: ``"numba"`` or ``"numpy"``.
BACKEND = "numba" if numba is not None else "numpy"


def backend() -> str:
    """Name of the active backend, ``"numba"`` or ``"numpy"``.

    Examples
    --------
    >>> backend() in ("numba", "numpy")
    True
    """
    return BACKEND


# --------------------------------------------------------------------------- validation
def _check(x: np.ndarray, shift: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x)
    if x.ndim != 2:
        raise TypeError(f"x must be a 2-D array, got {x.ndim}-D")
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.dtype not in _OUT_DTYPES:
        raise TypeError("out must be a 2-D float32 or float64 ndarray")
    if out.shape != x.shape:
        raise ValueError(f"out has shape {out.shape}, x has shape {x.shape}")
    n, p = out.shape
    isz = out.dtype.itemsize
    if n and p and (out.strides[1] != isz or (n > 1 and (out.strides[0] < p * isz or out.strides[0] % isz))):
        raise ValueError("out must be C-ordered rows (unit column stride, row stride >= width), e.g. a column slice")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    shift = np.asarray(shift)
    if shift.shape != (p,) or shift.dtype != out.dtype:
        raise TypeError(f"shift must be 1-D of length {p} and dtype {out.dtype}, got {shift.shape} {shift.dtype}")
    return x, np.ascontiguousarray(shift), out


# --------------------------------------------------------------------------- NumPy fallback
def shift_into_numpy(x: np.ndarray, shift: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`shift_into` in plain NumPy (the fallback; always available)."""
    x, shift, out = _check(x, shift, out)
    n, p = out.shape
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf/overflow are reported through the sums
        np.subtract(x, shift, out=out, casting="unsafe")
        colsum = out.sum(axis=0, dtype=np.float64)
        sumsq = 0.0
        step = max(1, _NP_SQ_CHUNK_ELEMS // max(p, 1))
        for r in range(0, n, step):
            c = out[r : r + step].astype(np.float64).reshape(-1)
            sumsq += float(np.dot(c, c))
    return colsum, sumsq


# --------------------------------------------------------------------------- numba kernels
if numba is not None:

    def _shift_rows_flat_py(x, ldx, shift, o, ldo, n, p, nblk, b0, b1, csum, sqs):  # pragma: no cover - compiled
        """Blocks ``b0..b1-1`` of rows with unit column stride: ``x`` and ``o`` are flat views, row i at ``i * ld``."""
        for b in range(b0, b1):
            r0 = b * n // nblk
            r1 = (b + 1) * n // nblk
            acc = csum[b]
            sq = sqs[b]
            for i in range(r0, r1):
                # row views: indices 0..p-1 are provably non-negative, so no wraparound code blocks SIMD
                xr = x[i * ldx : i * ldx + p]
                orow = o[i * ldo : i * ldo + p]
                for j in range(p):
                    orow[j] = xr[j] - shift[j]
                for j in range(p):  # read back what was written (rounded to out's dtype), while it is in L1
                    v = np.float64(orow[j])
                    acc[j] += v
                    sq[j] += v * v

    def _shift_rows_tiled_py(x, shift, o, ldo, n, p, nblk, b0, b1, csum, sqs):  # pragma: no cover - compiled
        """Blocks ``b0..b1-1`` of any layout of ``x`` (e.g. Fortran order), in tiles of 16 rows x 256 columns."""
        for b in range(b0, b1):
            r0 = b * n // nblk
            r1 = (b + 1) * n // nblk
            acc = csum[b]
            sq = sqs[b]
            for i0 in range(r0, r1, 16):
                i1 = min(i0 + 16, r1)
                for j0 in range(0, p, 256):
                    j1 = min(j0 + 256, p)
                    for i in range(i0, i1):
                        xr = x[i]
                        orow = o[i * ldo : i * ldo + p]
                        for j in range(j0, j1):
                            orow[j] = xr[j] - shift[j]
                        for j in range(j0, j1):
                            v = np.float64(orow[j])
                            acc[j] += v
                            sq[j] += v * v


    # serial and nogil: the threads of _pool() run block ranges of one call side by side
    _jit = numba.njit(cache=True, nogil=True, fastmath=False)
    _shift_rows_flat = _jit(_shift_rows_flat_py)
    _shift_rows_tiled = _jit(_shift_rows_tiled_py)

_lock = threading.Lock()
_POOL: list = []  # [ThreadPoolExecutor] once made
_THREADS: list[int] = []  # [count] once set by set_num_threads


def num_threads() -> int:
    """Threads that large inputs are split among: :func:`set_num_threads`, else ``NUMBA_NUM_THREADS`` from the
    environment, else the CPUs this process may run on.

    Examples
    --------
    >>> num_threads() >= 1
    True
    """
    if _THREADS:
        return _THREADS[0]
    env = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(count: int) -> None:
    """Split large inputs among ``count`` threads from now on (1: run on the calling thread only)."""
    count = check_int(count, "count")
    with _lock:
        _THREADS[:] = [int(count)]
        _forget_pool()


def _pool(threads: int):
    from concurrent.futures import ThreadPoolExecutor

    if not _POOL or _POOL[0]._max_workers != threads:
        _POOL[:] = [ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dlrcore-kernel")]
    return _POOL[0]


def _forget_pool() -> None:
    """Drop the pool (in a forked child its threads do not exist; a new one is made on first use)."""
    _POOL.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _flat(a: np.ndarray, n: int, p: int) -> tuple[np.ndarray, int]:
    """1-D unit-stride view from ``a[0, 0]`` to ``a[n-1, p-1]`` and the row stride in elements."""
    ld = a.strides[0] // a.itemsize if n > 1 else p
    return np.lib.stride_tricks.as_strided(a, shape=((n - 1) * ld + p,), strides=(a.itemsize,)), ld


def _shift_into_numba(
    x: np.ndarray, shift: np.ndarray, out: np.ndarray, parallel: bool = True
) -> tuple[np.ndarray, float]:
    n, p = out.shape
    if x.dtype == np.float16:  # numba has no float16: widen exactly, in chunks, and add the partial sums
        colsum = np.zeros(p)
        sumsq = 0.0
        step = max(1, _F16_CHUNK_ELEMS // max(p, 1))
        for r in range(0, n, step):
            c, s = _shift_into_numba(x[r : r + step].astype(np.float32), shift, out[r : r + step], parallel)
            with np.errstate(invalid="ignore", over="ignore"):
                colsum += c
                sumsq += s
        return colsum, sumsq
    nblk = min(_MAX_BLOCKS, -(-n // _MIN_BLOCK_ROWS))
    csum = np.zeros((nblk, p))
    sqs = np.zeros((nblk, p))
    o, ldo = _flat(out, n, p)
    if x.strides[1] == x.itemsize and x.strides[0] >= 0 and x.strides[0] % x.itemsize == 0:
        xf, ldx = _flat(x, n, p)

        def run(b0: int, b1: int) -> None:
            _shift_rows_flat(xf, ldx, shift, o, ldo, n, p, nblk, b0, b1, csum, sqs)
    else:

        def run(b0: int, b1: int) -> None:
            _shift_rows_tiled(x, shift, o, ldo, n, p, nblk, b0, b1, csum, sqs)

    with _lock:
        threads = min(num_threads(), nblk) if parallel else 1
        if threads <= 1:
            run(0, nblk)
        else:  # disjoint block ranges (rows of out, rows of csum and sqs) on the pool's threads
            cuts = [t * nblk // threads for t in range(threads + 1)]
            list(_pool(threads).map(run, cuts[:-1], cuts[1:]))  # list(): waits, and re-raises a thread's error
    with np.errstate(invalid="ignore", over="ignore"):
        return csum.sum(axis=0), float(sqs.sum())


def shift_into(x: np.ndarray, shift: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, float]:
    """Write ``out[:] = x - shift``; return the float64 column sums and sum of squares of the written values.

    Parameters
    ----------
    x : numpy.ndarray
        (n, p), any memory layout. float16, float32 and float64 go through the numba kernel (when active);
        other dtypes that ``np.subtract`` accepts (integers, bfloat16, ...) through NumPy.
    shift : numpy.ndarray
        (p,) of the dtype of ``out``.
    out : numpy.ndarray
        (n, p) float32 or float64 with unit column stride and row stride at least p (C-ordered, or a column
        slice of a larger C-ordered buffer).

    Returns
    -------
    colsum : numpy.ndarray
        (p,) float64 column sums of ``out`` after the write.
    sumsq : float
        Sum of the squares of ``out``'s values, accumulated in float64. NaN/Inf propagate into both.
    """
    x, shift, out = _check(x, shift, out)
    n, p = out.shape
    if n == 0 or p == 0:
        return np.zeros(p), 0.0
    if BACKEND != "numba" or x.dtype not in _X_DTYPES:  # other dtypes (integers, bfloat16, ...): NumPy
        return shift_into_numpy(x, shift, out)
    # small inputs run serially: waking the other threads costs more than it saves
    return _shift_into_numba(x, shift, out, parallel=n * p >= _PAR_MIN_ELEMS)
