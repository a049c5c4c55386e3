"""Streaming, mergeable centered products of feature batches in any array namespace.

:class:`Accumulator` keeps, for a fixed p x s matrix ``Omega`` (or the identity), the centered products
``G Omega`` (``G = Phic^T Phic``), ``Fc^T Phic Omega``, ``Fc^T Fc``, ``Fc^T Phic``, the means and ``tr G`` of
the rows streamed through it, in float64, with Chan's pairwise update for batches and for merges. Its arrays live in
the namespace and on the device of the first batch (NumPy, CuPy, any array-API library), so the sketch estimators
and the exact path for device arrays share one accumulation code.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np

from .backend import astype, device_array, is_numpy, prepare, to_numpy
from .chan import chan_step
from .inputs import DLRInputError, check_batch, check_finite_and_bound
from .moments import Moments, _fused_kernel
from .precision import dtype_name
from .scaling import max_abs, new_exponent, out_of_window, scale_array, suspicious

__all__ = [
    "Accumulator",
    "BadBatch",
    "BatchMoments",
    "Scratch",
    "block_rows",
    "copy_accumulator",
    "explain_bad",
    "row_blocks",
    "validate_pair",
]

#: Rows per block when an in-memory array is streamed (about this many bytes of features per block).
BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class BatchMoments:
    """The centered products of a set of rows (a batch, or an accumulator's whole state), at the power-of-two
    exponents they were formed at (:mod:`dlrcore.scaling`): what :meth:`Accumulator.batch` returns and
    :meth:`Accumulator.add` merges. ``z``, ``mff`` and ``mfp`` are None when the accumulator does not keep them."""

    n: int
    mean_x: Any
    mean_f: Any
    y: Any
    z: Any
    mff: Any
    mfp: Any
    trace: float
    exp_x: int = 0
    exp_f: int = 0
    fixed_x: bool = False
    fixed_f: bool = False

    def rescaled(self, xp: ModuleType, dx: int, df: int) -> BatchMoments:
        """The moments of ``x * 2**-dx`` and ``f * 2**-df`` (exponents raised by ``dx``, ``df``), exactly."""
        if dx == 0 and df == 0:
            return self
        s = lambda a, k: _power_of_two(xp, a, k)
        return replace(
            self, mean_x=s(self.mean_x, -dx), mean_f=s(self.mean_f, -df), y=s(self.y, -2 * dx),
            z=s(self.z, -dx - df), mff=s(self.mff, -2 * df), mfp=s(self.mfp, -dx - df),
            trace=s(float(self.trace), -2 * dx), exp_x=self.exp_x + dx, exp_f=self.exp_f + df,
        )


_FIELDS = ("n", "mean_x", "mean_f", "y", "z", "mff", "mfp", "trace", "exp_x", "exp_f", "fixed_x", "fixed_f")


class Accumulator:
    """Centered ``G Omega``, ``Fc^T Phic Omega``, ``Fc^T Fc``, means and ``tr G`` of streamed rows, mergeable.

    Every batch is centered about the running mean ``K`` (its own mean for the first batch); its exact residual
    mean ``r`` gives the batch's centered products (``z^T z Omega - m r (r^T Omega)``), which Chan's update merges
    into the float64 state. All arrays live in the namespace and on the device of the first batch.
    """

    def __init__(
        self, xp: ModuleType, omega: Any, work: Any, *, need_z: bool, need_ff: bool, need_cross: bool = False
    ) -> None:
        self.xp = xp
        self.need_cross = need_cross
        self.omega64 = omega  # p x s, float64, on the device; None stands for the identity (exact moments)
        self.omega_w = None if omega is None else astype(xp, omega, work)
        self.work = work
        self.need_z = need_z
        self.need_ff = need_ff
        self.n = 0
        self.mean_x: Any = None
        self.mean_f: Any = None
        self.y: Any = None
        self.z: Any = None
        self.mff: Any = None
        self.mfp: Any = None  # exact Fc^T Phic (C x p), kept when C is small next to the sketch
        self.trace = 0.0
        # the state holds the products of x * 2**-exp_x and f * 2**-exp_f (dlrcore.scaling); "fixed" once a
        # block saw a non-zero value
        self.exp_x = self.exp_f = 0
        self.fixed_x = self.fixed_f = False
        self.label_shift = 0  # DLRStats' device path: labels appended to x were multiplied by 2**label_shift

    @classmethod
    def stacked(cls, xp: ModuleType, work: Any, x: Any, *, labelled: bool) -> Accumulator:
        """An exact accumulator (identity ``Omega``) of ``[features, labels]`` against the outputs, for
        :class:`~dlrcore.DLRStats`' device batches. Labels share the features' exponent in the stacked block, so
        they are multiplied by ``2**label_shift``, about the features' magnitude of the first batch ``x``."""
        acc = cls(xp, None, work, need_z=False, need_ff=True, need_cross=True)
        amax = max_abs(x, xp) if labelled else 0.0
        lim = 100 if dtype_name(work) == "float32" else 1000
        acc.label_shift = min(max(math.frexp(amax)[1], -lim), lim) if math.isfinite(amax) and amax > 0 else 0
        return acc

    def with_labels(self, x: Any, y: np.ndarray | None) -> Any:
        """``[x, y 2**label_shift]`` on ``x``'s device, in the work precision (``x`` alone without labels)."""
        if y is None:
            return x
        xp = self.xp
        yd = astype(xp, device_array(xp, y, x), self.work) * (2.0**self.label_shift)
        return xp.concat([astype(xp, x, self.work), yd], axis=1)

    def to_moments(self, p: int, C: int, cy: int, chunk_bytes: int = 0) -> Moments:
        """The host :class:`~dlrcore.moments.Moments` of blocks ``[features (p), outputs (C), labels (cy)]`` of a
        :meth:`stacked` accumulator: one transfer of the (p + C + cy)^2 moments."""
        g, mfp, mff = to_numpy(self.y), to_numpy(self.mfp), to_numpy(self.mff)
        mx, mf = to_numpy(self.mean_x), to_numpy(self.mean_f)
        q = p + C + cy
        m = np.zeros((q, q))  # only the upper triangle is read
        fx, ff, ly = slice(0, p), slice(p, p + C), slice(p + C, q)
        m[fx, fx] = g[:p, :p]
        m[fx, ff] = mfp[:, :p].T
        m[ff, ff] = mff
        if cy:
            m[fx, ly] = g[:p, p:]
            m[ff, ly] = mfp[:, p:]
            m[ly, ly] = g[p:, p:]
        mean = np.concatenate([mx[:p], mf, mx[p:]])
        mom = Moments([p, C, cy], work=np.dtype(dtype_name(self.work)), exact_block=1, chunk_bytes=chunk_bytes)
        mom.load_arrays(self.n, mean, m, [self.exp_x, self.exp_f, self.exp_x - self.label_shift])
        return mom

    def __getstate__(self) -> dict[str, Any]:
        # the array namespace is a module, which pickle refuses: keep its import name
        state = dict(self.__dict__)
        state["xp"] = self.xp.__name__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["xp"] = importlib.import_module(state["xp"])
        self.__dict__.update(state)

    def batch(self, x: Any, f: Any, scratch: Scratch | None = None) -> BatchMoments:
        """Centered products of one batch, validated (NaN/Inf raise before anything is merged), with the power-of-two
        exponents they were formed at (:mod:`dlrcore.scaling`); :meth:`add` merges them.

        ``scratch`` lends reusable buffers for the centered copies when many blocks are streamed in one call."""
        xp, work = self.xp, self.work
        ex, ef, fx, ff = self.exp_x, self.exp_f, self.fixed_x, self.fixed_f
        looked = False
        while True:
            bad: str | None = None
            parts: dict[str, Any] = {}
            sqx = sqf = math.nan
            with np.errstate(invalid="ignore", over="ignore"):  # bad values are caught by the finiteness checks
                try:
                    parts, sqx, sqf = self._batch(scale_array(x, ex, xp), scale_array(f, ef, xp), scratch)
                except BadBatch as exc:
                    bad = str(exc)
            if looked:
                if bad is not None:
                    raise BadBatch(bad)
                return BatchMoments(**parts, exp_x=ex, exp_f=ef, fixed_x=fx, fixed_f=ff)
            looked = True
            look_x = bad is not None or suspicious(sqx, x.shape[0] * x.shape[1], work, fixed=fx)
            look_f = bad is not None or suspicious(sqf, f.shape[0] * f.shape[1], work, fixed=ff)
            if not (look_x or look_f):
                return BatchMoments(**parts, exp_x=ex, exp_f=ef, fixed_x=fx or sqx > 0, fixed_f=ff or sqf > 0)
            before = (ex, ef)
            for which, arr, look in (("features", x, look_x), ("outputs", f, look_f)):
                if not look:
                    continue
                amax = max_abs(arr, xp)
                if not math.isfinite(amax):
                    raise BadBatch(which)
                if which == "features":
                    ex, fx = new_exponent(amax, ex, work, fixed=fx), fx or amax > 0
                else:
                    ef, ff = new_exponent(amax, ef, work, fixed=ff), ff or amax > 0
            if bad is None and (ex, ef) == before:  # the values lie in the window after all
                return BatchMoments(**parts, exp_x=ex, exp_f=ef, fixed_x=fx or sqx > 0, fixed_f=ff or sqf > 0)

    def _batch(self, x: Any, f: Any, scratch: Scratch | None) -> tuple[dict[str, Any], float, float]:
        xp, work = self.xp, self.work
        nb = x.shape[0]
        f64 = xp.float64
        if self.n:
            k = astype(xp, self.mean_x, work)
        else:
            k = astype(xp, xp.sum(astype(xp, x, work), axis=0, dtype=f64) / nb, work)
        xw = x if x.dtype == work else None
        fused = _fused_kernel() if is_numpy(xp) else None
        if fused is not None:  # one pass: x - K written once, float64 column sums and sum of squares
            xc = np.empty(x.shape, dtype=work) if scratch is None else scratch.get("x", x.shape, work)
            sx, sq = fused(x, k, xc)
        else:
            xc = (xw if xw is not None else astype(xp, x, work)) - k
            sx = xp.sum(xc, axis=0, dtype=f64)
            sq = float(xp.sum(xc * xc, dtype=f64)) if not is_numpy(xp) else _sumsq(xc)
        r = sx / nb
        if not (math.isfinite(sq) and bool(xp.all(xp.isfinite(sx)))):
            raise BadBatch("features")
        if not math.isfinite(float(xp.sum(r * r))):
            raise BadBatch("features")
        mean_b = astype(xp, k, f64) + r
        t = xc if self.omega_w is None else xc @ self.omega_w
        r_om = r if self.omega64 is None else r @ self.omega64
        yb = astype(xp, xc.T @ t, f64) - nb * (r[:, None] * r_om[None, :])
        trace_b = sq - nb * float(xp.sum(r * r))
        rf = None  # residual mean of the outputs about their shift (fused path)
        if fused is not None and f.dtype in (np.float32, np.float64):
            # one pass: F - K_F into a float64 buffer, with its float64 column sums
            kf = self.mean_f if self.n else np.mean(f, axis=0, dtype=f64)
            fc64 = np.empty(f.shape, dtype=f64) if scratch is None else scratch.get("f", f.shape, f64)
            sf64, _ = fused(f, kf, fc64)
            rf = sf64 / nb
            mean_fb = kf + rf
        else:
            fb64 = astype(xp, f, f64)
            mean_fb = xp.sum(fb64, axis=0, dtype=f64) / nb
            if is_numpy(xp) and fb64 is not f:
                fc64 = np.subtract(fb64, mean_fb, out=fb64)  # our own copy: center in place
            else:
                fc64 = fb64 - mean_fb
        if not bool(xp.all(xp.isfinite(mean_fb))):
            raise BadBatch("outputs")
        zb = mffb = mfpb = None
        if self.need_z or self.need_cross:
            fcw = astype(xp, fc64, work)
            sf = xp.sum(fcw, axis=0, dtype=f64)  # not exactly zero after rounding to the work precision
        if self.need_z:
            zb = astype(xp, fcw.T @ t, f64) - sf[:, None] * r_om[None, :]
        if self.need_cross:
            mfpb = astype(xp, fcw.T @ xc, f64) - sf[:, None] * r[None, :]
        if self.need_ff:
            mffb = fc64.T @ fc64
            if rf is not None:  # about the batch mean: G - m r r^T
                mffb -= nb * (rf[:, None] * rf[None, :])
            if not bool(xp.all(xp.isfinite(mffb))):
                raise BadBatch("outputs")
            sqf = float(xp.sum(xp.linalg.diagonal(mffb) if not is_numpy(xp) else np.diagonal(mffb)))
        else:
            sqf = float(xp.sum(fc64 * fc64)) if not is_numpy(xp) else _sumsq(fc64)
        parts = dict(n=nb, mean_x=mean_b, mean_f=mean_fb, y=yb, z=zb, mff=mffb, mfp=mfpb, trace=trace_b)
        return parts, sq, sqf

    def stream(self, x: Any, f: Any, rows: int, on_rows: Any = None) -> Accumulator:
        """Add every row of the validated arrays ``x``, ``f`` in blocks of ``rows`` (a rejected block raises
        :class:`~dlrcore.inputs.DLRInputError` naming the problem); ``on_rows(k)`` is called after each block."""
        scratch = Scratch()
        for sl in row_blocks(x.shape[0], rows):
            xb, fb = x[sl, ...], f[sl, ...]
            try:
                self.add(self.batch(xb, fb, scratch))
            except BadBatch as bad:
                raise explain_bad(self.xp, xb, fb, str(bad)) from None
            if on_rows is not None:
                on_rows(sl.stop - sl.start)
        return self

    def add(self, b: BatchMoments) -> None:
        """Chan's merge (:func:`~dlrcore.chan.chan_step`) of a batch (or of another accumulator's state) into this
        one, both brought to the larger exponent of each block first (exactly: by powers of two)."""
        xp = self.xp
        if self.n == 0:
            self._set_state(b)
            return
        tx = max(self.exp_x, b.exp_x) if (self.fixed_x and b.fixed_x) else (self.exp_x if self.fixed_x else b.exp_x)
        tf = max(self.exp_f, b.exp_f) if (self.fixed_f and b.fixed_f) else (self.exp_f if self.fixed_f else b.exp_f)
        a = self.state().rescaled(xp, tx - self.exp_x, tf - self.exp_f)
        b = b.rescaled(xp, tx - b.exp_x, tf - b.exp_f)
        step = chan_step(a.n, a.mean_x, b.n, b.mean_x)
        w, d = step.weight, step.delta
        df, mean_f = step.also(a.mean_f, b.mean_f)
        d_om = d if self.omega64 is None else d @ self.omega64
        self._set_state(replace(
            a,
            n=step.n,
            mean_x=step.mean,
            mean_f=mean_f,
            y=a.y + b.y + w * (d[:, None] * d_om[None, :]),
            z=a.z + b.z + w * (df[:, None] * d_om[None, :]) if self.need_z else a.z,
            mff=a.mff + b.mff + w * (df[:, None] * df[None, :]) if self.need_ff else a.mff,
            mfp=a.mfp + b.mfp + w * (df[:, None] * d[None, :]) if self.need_cross else a.mfp,
            trace=a.trace + b.trace + w * float(xp.sum(d * d)),
            fixed_x=a.fixed_x or b.fixed_x,
            fixed_f=a.fixed_f or b.fixed_f,
        ))

    def _set_state(self, m: BatchMoments) -> None:
        for name in _FIELDS:
            setattr(self, name, getattr(m, name))

    def state(self) -> BatchMoments:
        """The whole state as one :class:`BatchMoments` (for :meth:`add` into another accumulator)."""
        return BatchMoments(**{name: getattr(self, name) for name in _FIELDS})

    def loaded(self) -> None:
        """Finish a state read from a file: set the blocks' "fixed" flags (a block saw a non-zero value exactly when
        its mean or its spread is not zero) and bring each block's magnitude into the window, exactly."""
        xp = self.xp
        self.fixed_x = bool(self.n) and (bool(xp.any(self.mean_x != 0)) or self.trace > 0)
        self.fixed_f = bool(self.n) and (bool(xp.any(self.mean_f != 0)) or (
            self.mff is not None and bool(xp.any(self.mff != 0))))
        if not self.n:
            return
        spread_f = 0.0 if self.mff is None else max(float(xp.max(xp.linalg.diagonal(self.mff) if not is_numpy(xp)
                                                              else np.diagonal(self.mff))), 0.0)
        dx = out_of_window(max(max_abs(self.mean_x, xp), math.sqrt(max(self.trace, 0.0) / self.n)))
        df = out_of_window(max(max_abs(self.mean_f, xp), math.sqrt(spread_f / self.n)))
        if dx or df:
            self._set_state(self.state().rescaled(xp, dx, df))


def _power_of_two(xp: ModuleType, a: Any, k: int) -> Any:
    """``a * 2**k`` for an array or float of namespace ``xp`` (exact unless the result leaves the range)."""
    if a is None or k == 0:
        return a
    if isinstance(a, float):
        return math.ldexp(a, k) if k < 1100 else (math.inf if a else 0.0)
    if is_numpy(xp):
        with np.errstate(under="ignore", over="ignore"):
            return np.ldexp(a, np.int32(k))
    for step in (max(min(k, 1000), -1000), k - max(min(k, 1000), -1000)):
        if step:
            a = a * (2.0**step)
    return a


class BadBatch(Exception):
    pass


class Scratch:
    """Reusable NumPy buffers for the centered copies of the row blocks of one streaming call.

    A fresh block-sized buffer per block is a fresh memory map whose pages fault in on every block; reusing one
    took the centering passes of the one-pass sketch of 100000 x 4096 float32 features from 0.79 s to 0.64 s
    (a profile on the development machine).
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A C-contiguous ``shape`` buffer of ``dtype`` (the leading rows of a kept one when it is large enough)."""
        buf = self._bufs.get(key)
        if buf is None or buf.dtype != dtype or buf.shape[1:] != tuple(shape[1:]) or buf.shape[0] < shape[0]:
            buf = self._bufs[key] = np.empty(shape, dtype=dtype)
        return buf[: shape[0]]


def _sumsq(a: np.ndarray) -> float:
    flat = a.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.dot(flat, flat))


def validate_pair(x: Any, f: Any, p: int | None, C: int | None) -> tuple[ModuleType, Any, Any]:
    xp, x = prepare(x, "features")
    xf, f = prepare(f, "outputs", allow_1d=True)
    if xf is not xp and not (is_numpy(xf) and is_numpy(xp)):
        raise DLRInputError("features and outputs must come from the same array library (and device)")
    check_batch(tuple(x.shape), tuple(f.shape), p=p, C=C)
    return xp, x, f


def explain_bad(xp: ModuleType, x: Any, f: Any, which: str) -> DLRInputError:
    """Name the first non-finite or overflowing entry of a rejected batch (only on the error path)."""
    a = to_numpy(x if which == "features" else f)
    try:
        check_finite_and_bound(a, which, np.dtype(np.float32 if a.dtype.itemsize <= 4 else np.float64))
    except DLRInputError as exc:
        return DLRInputError(f"{exc}; the sketch was left unchanged")
    return DLRInputError(f"{which}: values overflow the products; rescale them (D_LR is scale invariant)")


def copy_accumulator(acc: Accumulator) -> Accumulator:
    new = Accumulator(
        acc.xp, acc.omega64, acc.work, need_z=acc.need_z, need_ff=acc.need_ff, need_cross=acc.need_cross
    )
    new.n, new.trace = acc.n, acc.trace
    new.exp_x, new.exp_f, new.fixed_x, new.fixed_f = acc.exp_x, acc.exp_f, acc.fixed_x, acc.fixed_f
    new.label_shift = acc.label_shift
    copy = (lambda a: None if a is None else acc.xp.asarray(a, copy=True))
    new.mean_x, new.mean_f = copy(acc.mean_x), copy(acc.mean_f)
    new.y, new.z, new.mff, new.mfp = copy(acc.y), copy(acc.z), copy(acc.mff), copy(acc.mfp)
    return new


def block_rows(p: int, itemsize: int = 4, columns: int = 0) -> int:
    """Rows per block when streaming an in-memory array of width ``p``: about :data:`BLOCK_BYTES`, and at least
    256 and ``8 * columns`` (the products' width), so that merging the O(p * columns) state after each block stays
    cheap next to the block's products (at p = 65536 a 256-row block made merges dominate)."""
    return max(256, 8 * int(columns), BLOCK_BYTES // max(1, p * itemsize))


def row_blocks(n: int, rows: int) -> Iterable[slice]:
    return (slice(i, min(i + rows, n)) for i in range(0, n, rows))
