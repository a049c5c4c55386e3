"""Mergeable sufficient statistics for D_LR: :class:`DLRStats`.

The state is ``(n, mean, M)`` for the stacked columns ``Z = [Phi, F, Y]`` (features, outputs, optional label
targets), where ``M = Zc^T Zc`` is the centered co-moment matrix in float64. Rows are staged into a fixed buffer
and folded in chunk by chunk with a per-chunk centered Gram (one BLAS ``?syrk`` call) and Chan's pairwise merge

    M = M_a + M_b + (n_a n_b / n) (mean_b - mean_a)(mean_b - mean_a)^T,

so the state adds up exactly over batches, processes and machines in O((p + C)^2) memory for any n.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import blas

from .exact import dlr_from_moments, dlr_from_weight_moments
from .inputs import PRECISIONS, DLRInputError, _from_framework, as_matrix, check_finite_and_bound, work_dtype_for
from .result import DLRResult

__all__ = ["DLRStats", "FORMAT_VERSION"]

#: Version of the ``.npz`` statistics format written by :meth:`DLRStats.save`.
FORMAT_VERSION = 1
_MAGIC = "dlrcore.DLRStats"

#: Stage buffer budget in bytes: rows are folded in chunks of about this size.
DEFAULT_CHUNK_BYTES = 256 * 2**20


def _syrk(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Upper triangle of ``z^T z`` for a C-ordered (m, q) ``z`` into the Fortran-ordered (q, q) ``out``."""
    f = blas.ssyrk if z.dtype == np.float32 else blas.dsyrk
    # z in C order is z^T in Fortran order: syrk(trans=0) on it computes z^T z without a copy.
    return f(1.0, z.T, beta=0.0, c=out, trans=0, lower=0, overwrite_c=1)


def _symmetric(m_upper: np.ndarray) -> np.ndarray:
    """Full symmetric matrix from one whose upper triangle is valid."""
    return np.triu(m_upper) + np.triu(m_upper, 1).T


class _BadSegment(Exception):
    """Internal: a staged segment held NaN/Inf or would overflow; the caller turns it into DLRInputError."""


#: Attributes restored when a batch is rejected while it is being staged.
_SCALAR_STATE = ("_p", "_C", "_cy", "_label_kind", "_data_eps")


class DLRStats:
    """Streaming, mergeable sufficient statistics of (features, outputs[, labels]) for exact D_LR.

    Parameters
    ----------
    weight : array_like, optional
        Last-layer weight ``W`` (C x p). When given, outputs are ``features @ W.T + bias`` and are never formed:
        only p x p feature statistics are accumulated (language-model heads with C up to 10^5 and more).
    bias : array_like, optional
        Last-layer bias (C,); only with ``weight``.
    num_classes : int, optional
        Number of classes when labels are integer class ids. Defaults to the output width C when C > 1.
    precision : {"auto", "float32", "float64"}
        ``"auto"`` computes BLAS products in float32 when the data arrive in float32 or lower and the stacked
        width p + C is at least 128 (accumulated in float64; the output Gram is always formed in float64), and in
        float64 otherwise. ``"float32"`` and ``"float64"`` force one or the other.
    chunk_bytes : int
        Size of the staging buffer that rows are folded in from.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(1000, 16)); out = phi @ rng.normal(size=(16, 3))
    >>> st = DLRStats()
    >>> for i in range(0, 1000, 256):
    ...     _ = st.update(phi[i:i + 256], out[i:i + 256])
    >>> abs(st.result().value - DLRStats().update(phi, out).result().value) < 1e-10
    True
    """

    def __init__(
        self,
        *,
        weight: Any = None,
        bias: Any = None,
        num_classes: int | None = None,
        precision: str = "auto",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if num_classes is not None and (int(num_classes) != num_classes or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.precision = precision
        self.num_classes = None if num_classes is None else int(num_classes)
        self.chunk_bytes = int(chunk_bytes)
        self._n = 0
        self._p: int | None = None
        self._C: int | None = None
        self._cy: int | None = None  # label width; 0 = no labels
        self._label_kind: str | None = None  # "classes" | "targets" | "none"
        self._mean: np.ndarray | None = None
        self._m: np.ndarray | None = None  # Fortran (q, q) float64, upper triangle valid
        self._work: np.dtype | None = None
        self._data_eps = 0.0
        self._weights = weight is not None
        self._wtw = self._wtb = None
        self._btb = 0.0
        self._stage: np.ndarray | None = None
        self._stage_f64: np.ndarray | None = None
        self._fill = 0
        self._gram: np.ndarray | None = None  # reusable (q, q) syrk output
        self._shift: np.ndarray | None = None  # reference vector K the staged rows are shifted by
        self._seg_sum = np.zeros(0)  # column sums of the staged (shifted) rows, float64
        if weight is None:
            if bias is not None:
                raise DLRInputError("bias was given without weight")
            return
        self._set_weights(weight, bias)

    # ------------------------------------------------------------------ weights
    def _set_weights(self, weight: Any, bias: Any) -> None:
        w = as_matrix(weight, "weight")
        if w.shape[0] < 1 or w.shape[1] < 1:
            raise DLRInputError(f"weight: expected a C x p matrix with C, p >= 1, got shape {w.shape}")
        check_finite_and_bound(w, "weight", np.dtype(np.float64))
        C, p = w.shape
        if bias is None:
            b = np.zeros(C)
        else:
            b = as_matrix(bias, "bias", allow_1d=True)
            if b.shape[1] != 1 or b.shape[0] != C:
                raise DLRInputError(f"bias: expected shape ({C},) to match weight {w.shape}, got {b.shape}")
            check_finite_and_bound(b, "bias", np.dtype(np.float64))
            b = b[:, 0].astype(np.float64)
        # W^T W in float64, a few thousand rows of W at a time (never a C x C matrix, never all of W in float64)
        wtw = np.zeros((p, p))
        wtb = np.zeros(p)
        step = max(1, (64 * 2**20) // (8 * p))
        for i in range(0, C, step):
            wi = np.asarray(w[i : i + step], dtype=np.float64)
            wtw += _symmetric(blas.dsyrk(1.0, wi.T, trans=0, lower=0))
            wtb += wi.T @ b[i : i + step]
        self._wtw, self._wtb, self._btb = wtw, wtb, float(b @ b)
        self._p, self._C = p, C
        self._data_eps = max(self._data_eps, float(np.finfo(w.dtype).eps))

    # ------------------------------------------------------------------ properties
    @property
    def n(self) -> int:
        """Number of samples accumulated (staged rows included)."""
        return self._n + self._fill

    @property
    def p(self) -> int | None:
        """Feature width, or None before the first update."""
        return self._p

    @property
    def C(self) -> int | None:
        """Output width, or None before the first update."""
        return self._C

    @property
    def weights_mode(self) -> bool:
        """Whether outputs are derived from a last-layer weight instead of being accumulated."""
        return self._weights

    @property
    def _c_out(self) -> int:
        return 0 if self._weights else int(self._C or 0)

    @property
    def _q(self) -> int:
        return int(self._p) + self._c_out + int(self._cy or 0)

    def __repr__(self) -> str:
        mode = "weights" if self._weights else "outputs"
        labels = self._label_kind or "undecided"
        return f"DLRStats(n={self.n}, p={self._p}, C={self._C}, mode={mode}, labels={labels}, work={self._work})"

    # ------------------------------------------------------------------ update
    def _labels_matrix(self, labels: Any, n_rows: int, c_out: int | None) -> tuple[np.ndarray, str]:
        """Turn labels into an n x C_y target matrix (one-hot for integer class ids)."""
        raw = labels if isinstance(labels, np.ndarray) else _from_framework(labels, "labels")
        raw = np.asarray(raw)
        if raw.ndim == 1 and raw.dtype.kind in "iu":
            k = self.num_classes
            if k is None:
                if c_out is not None and c_out > 1:
                    k = c_out
                else:
                    raise DLRInputError(
                        "labels: integer class ids need num_classes (DLRStats(num_classes=...)) when C = 1"
                    )
            if raw.shape[0] != n_rows:
                raise DLRInputError(f"labels: {raw.shape[0]} rows but features have {n_rows}")
            if raw.size and (raw.min() < 0 or raw.max() >= k):
                raise DLRInputError(f"labels: class ids must lie in [0, {k}), got range [{raw.min()}, {raw.max()}]")
            y = np.zeros((n_rows, k))
            y[np.arange(n_rows), raw] = 1.0
            return y, "classes"
        y = as_matrix(raw, "labels", allow_1d=True)
        if y.shape[0] != n_rows:
            raise DLRInputError(f"labels: {y.shape[0]} rows but features have {n_rows}")
        return y, "targets"

    def update(self, features: Any, outputs: Any = None, labels: Any = None) -> "DLRStats":
        """Add a batch of samples.

        Parameters
        ----------
        features : array_like
            n_b x p features (the input of the last linear layer).
        outputs : array_like, optional
            n_b x C outputs (1-D means C = 1). Required unless the statistics were built with ``weight``, and
            forbidden then.
        labels : array_like, optional
            Integer class ids (n_b,) or an n_b x C_y target matrix, kept for quality curves and class measures.
            Either every batch has labels or none has.

        Returns
        -------
        DLRStats
            ``self``, so that calls chain.

        Raises
        ------
        DLRInputError
            On any bad input; the statistics are then exactly as before the call.
        """
        x = as_matrix(features, "features")
        nb, p = x.shape
        if nb == 0:
            raise DLRInputError("features: empty batch (0 rows)")
        if p == 0:
            raise DLRInputError("features: zero columns (p = 0)")
        if self._p is not None and p != self._p:
            raise DLRInputError(f"features: {p} columns, but the statistics hold p = {self._p}")
        if self._weights:
            if outputs is not None:
                raise DLRInputError("outputs: these statistics derive outputs from weight; pass features only")
            f = None
        else:
            if outputs is None:
                raise DLRInputError("outputs: required (or build DLRStats(weight=..., bias=...))")
            f = as_matrix(outputs, "outputs", allow_1d=True)
            if f.shape[0] != nb:
                raise DLRInputError(f"outputs: {f.shape[0]} rows but features have {nb} (row counts must match)")
            if f.shape[1] == 0:
                raise DLRInputError("outputs: zero columns (C = 0)")
            if self._C is not None and f.shape[1] != self._C:
                raise DLRInputError(f"outputs: {f.shape[1]} columns, but the statistics hold C = {self._C}")
        if labels is not None:
            y, kind = self._labels_matrix(labels, nb, self._C if f is None else f.shape[1])
            if self._label_kind not in (None, "none", kind):
                raise DLRInputError(f"labels: earlier batches gave {self._label_kind}, this one gives {kind}")
            if self._cy is not None and self._cy != y.shape[1]:
                raise DLRInputError(f"labels: {y.shape[1]} columns, but earlier batches had {self._cy}")
            if self._label_kind == "none":
                raise DLRInputError("labels: earlier batches had no labels; give labels for every batch or none")
        else:
            y, kind = None, "none"
            if self._label_kind not in (None, "none"):
                raise DLRInputError("labels: earlier batches had labels; give labels for every batch or none")
        data = [a for a in (x, f) if a is not None]
        width = p + (0 if f is None else f.shape[1]) + (0 if y is None else y.shape[1])
        work = work_dtype_for(*data, precision=self.precision, width=width)
        if self._work is not None and self._work == np.float64:
            work = self._work  # never downgrade
        named = [(a, nm) for a, nm in ((x, "features"), (f, "outputs"), (y, "labels")) if a is not None]
        if self._fill + nb > self._stage_capacity(work):
            # the batch will be folded in over several flushes: validate it whole before touching the state
            for a, nm in named:
                check_finite_and_bound(a, nm, work)
        scalars = {k: getattr(self, k) for k in _SCALAR_STATE}
        if self._work is not None and work != self._work:
            self._flush()
            self._stage = self._stage_f64 = None
        self._work = work
        if self._p is None:
            self._p = p
            if f is not None:
                self._C = f.shape[1]
        if self._label_kind is None:
            self._label_kind = kind
            self._cy = 0 if y is None else y.shape[1]
        # the precision the outputs arrive in bounds how finely their rank can be resolved
        src = f if f is not None else x
        self._data_eps = max(self._data_eps, float(np.finfo(src.dtype).eps))
        try:
            self._stage_rows(x, f, y)
        except _BadSegment:
            # Only possible before any row of this batch was folded in (batches that span several flushes are
            # validated up front); the bad segment was not counted in the stage, so drop it and restore the
            # scalars a first batch may have set.
            for k, v in scalars.items():
                setattr(self, k, v)
            for a, nm in named:
                check_finite_and_bound(a, nm, work)  # raises the precise error
            raise DLRInputError("batch rejected: non-finite values or overflow while staging")  # pragma: no cover
        return self

    def _stage_capacity(self, work: np.dtype) -> int:
        if self._stage is not None and self._stage.dtype == work:
            return self._stage.shape[0]
        return max(256, self.chunk_bytes // (max(self._q if self._p is not None else 1, 1) * work.itemsize))

    def _ensure_stage(self, rows_needed: int) -> None:
        q = self._q
        cap_max = max(256, self.chunk_bytes // (q * self._work.itemsize))
        fits = self._stage is not None and self._stage.shape[1] == q and self._stage.dtype == self._work
        cap = self._stage.shape[0] if fits else 0
        if cap >= min(rows_needed, cap_max):
            return
        new_cap = min(cap_max, max(rows_needed, 2 * cap, 256))
        self._flush()
        self._stage = np.empty((new_cap, q), dtype=self._work)
        split_f = self._work == np.float32 and self._c_out > 0
        self._stage_f64 = np.empty((new_cap, self._c_out)) if split_f else None

    def _stage_rows(self, x: np.ndarray, f: np.ndarray | None, y: np.ndarray | None) -> None:
        """Copy rows into the stage, shifted by a reference vector, folding the stage in whenever it is full.

        Rows are written as ``x - K`` (one fused pass), with ``K`` the running mean of the statistics (or, for
        the first rows ever, the mean of up to 1024 of them). Each staged segment is then summed (for the exact
        batch mean) and its squares summed (a BLAS dot): a non-finite or overflowing segment is dropped again
        before anything is folded in, and :class:`_BadSegment` raised.
        """
        nb, p = x.shape
        c = self._c_out
        blocks = [(x, slice(0, p))]
        if f is not None:
            blocks.append((f, slice(p, p + c)))
        if y is not None:
            blocks.append((y, slice(p + c, p + c + y.shape[1])))
        work = self._work
        limit = float(np.finfo(work).max) / 8.0
        start = 0
        while start < nb:
            self._ensure_stage(self._fill + nb - start)
            cap = self._stage.shape[0]
            take = min(nb - start, cap - self._fill)
            if self._fill == 0:
                self._seg_sum = np.zeros(self._q)
                if self._n:
                    self._shift = self._mean.astype(work)
                else:
                    head = slice(start, start + min(take, 1024))
                    self._shift = np.concatenate(
                        [np.asarray(a[head], dtype=np.float64).mean(axis=0) for a, _ in blocks]
                    ).astype(work)
            rows = slice(self._fill, self._fill + take)
            src = slice(start, start + take)
            for arr, cols in blocks:
                np.subtract(arr[src], self._shift[cols], out=self._stage[rows, cols], casting="unsafe")
            seg = self._stage[rows]
            ssum = seg.sum(axis=0, dtype=work).astype(np.float64)
            flat = seg.reshape(-1)
            sq = float(np.dot(flat, flat))
            if not (np.isfinite(ssum).all() and np.isfinite(sq) and sq <= limit):
                raise _BadSegment()
            if self._stage_f64 is not None and f is not None:
                self._stage_f64[rows] = f[src]
            self._seg_sum += ssum
            self._fill += take
            start += take
            if self._fill == cap:
                self._flush()

    def _flush(self) -> None:
        """Fold the staged rows into (n, mean, M) with a centered Gram and Chan's merge.

        The stage holds ``z = x - K``; its column sums were accumulated while staging, so the batch mean is
        ``K + r`` with ``r = sum(z) / m`` and the centered Gram is ``z^T z - m r r^T``. When ``r`` is large against
        the spread (the data moved by more than about a standard deviation since ``K`` was taken) that
        subtraction would cancel, and the stage is re-centered before its Gram is formed.
        """
        m = self._fill
        if m == 0:
            return
        z = self._stage[:m]
        q = z.shape[1]
        if self._gram is None or self._gram.shape != (q, q) or self._gram.dtype != z.dtype:
            self._gram = np.zeros((q, q), dtype=z.dtype, order="F")
        shift = self._shift.astype(np.float64)
        resid = self._seg_sum / m
        g = _syrk(z, self._gram)
        diag = np.diagonal(g).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            cancel = np.where(diag > 0, m * resid * resid / diag, 0.0)
        if cancel.max(initial=0.0) > 0.5:
            np.subtract(z, resid.astype(z.dtype), out=z)
            shift = shift + resid.astype(z.dtype).astype(np.float64)
            resid = z.sum(axis=0, dtype=z.dtype).astype(np.float64) / m
            g = _syrk(z, self._gram)
        mean = shift + resid
        gf = None
        if self._stage_f64 is not None:
            # the output Gram in float64 products: it decides the output rank, float32 products blur it
            p, c = self._p, self._c_out
            fz = self._stage_f64[:m]
            fmean = fz.mean(axis=0)
            np.subtract(fz, fmean, out=fz)
            fr = fz.mean(axis=0)
            gf = blas.dsyrk(1.0, fz.T, trans=0, lower=0)
            if np.any(fr):
                gf = blas.dsyr(-float(m), fr, lower=0, a=gf, overwrite_a=1)
            mean[p : p + c] = fmean + fr
        self._merge_moments(m, mean, g, resid=resid, gf=gf)
        self._fill = 0

    def _merge_moments(
        self,
        nb: int,
        mean_b: np.ndarray,
        m_b: np.ndarray,
        *,
        resid: np.ndarray | None = None,
        gf: np.ndarray | None = None,
    ) -> None:
        """Chan's pairwise merge of ``(nb, mean_b, m_b)`` into the state.

        Only upper triangles are read and written (the strict lower triangle of the state stays zero).
        ``m_b`` may be float32; ``resid`` removes ``nb * resid resid^T`` from it, and ``gf`` (float64) replaces
        its output-output block.
        """
        na = self._n
        if na == 0:
            self._m = np.zeros(m_b.shape, order="F")
            self._mean = np.zeros(m_b.shape[0])
        n = na + nb
        d = np.asarray(mean_b, dtype=np.float64) - self._mean
        np.add(self._m, m_b, out=self._m)
        if resid is not None and np.any(resid):
            blas.dsyr(-float(nb), resid, lower=0, a=self._m, overwrite_a=1)
        if gf is not None:
            p, c = self._p, self._c_out
            blk = self._m[p : p + c, p : p + c]
            # undo this block's float32 Gram and its residual correction, put the float64 Gram in their place
            r_f = resid[p : p + c] if resid is not None else np.zeros(c)
            blk += np.triu(gf - m_b[p : p + c, p : p + c] + nb * np.outer(r_f, r_f))
        if na:
            blas.dsyr(na * nb / n, d, lower=0, a=self._m, overwrite_a=1)
        self._mean = self._mean + d * (nb / n)
        self._n = n

    # ------------------------------------------------------------------ merge
    def _compat(self, other: "DLRStats") -> None:
        if not isinstance(other, DLRStats):
            raise TypeError(f"can only merge DLRStats, got {type(other).__name__}")
        if self._weights != other._weights:
            raise DLRInputError("cannot merge statistics with outputs and statistics derived from weights")
        for name in ("_p", "_C", "_cy"):
            a, b = getattr(self, name), getattr(other, name)
            if a is not None and b is not None and a != b:
                label = {"_p": "feature width p", "_C": "output width C", "_cy": "label width"}[name]
                raise DLRInputError(f"cannot merge statistics of different {label}: {a} vs {b}")
        if self._label_kind and other._label_kind and self._label_kind != other._label_kind:
            if other._n + other._fill and self._n + self._fill:
                raise DLRInputError(f"cannot merge labels of kind {self._label_kind!r} with {other._label_kind!r}")
        if self._weights and not (
            np.array_equal(self._wtw, other._wtw) and np.array_equal(self._wtb, other._wtb)
        ):
            raise DLRInputError("cannot merge statistics built with different weight or bias")

    def merge(self, other: "DLRStats") -> "DLRStats":
        """Add the samples of ``other`` to ``self`` (in place) and return ``self``.

        The merge is exact: ``a.merge(b).result()`` equals the result of one object fed both sets of rows.
        """
        self._compat(other)
        other._flush()
        self._flush()
        if other._n == 0:
            return self
        if self._p is None:
            self._p, self._C, self._cy, self._label_kind = other._p, other._C, other._cy, other._label_kind
            self._work = other._work
            self.num_classes = self.num_classes or other.num_classes
        self._data_eps = max(self._data_eps, other._data_eps)
        if other._work == np.float64:
            self._work = np.dtype(np.float64) if self._work is not None else other._work
        self._merge_moments(other._n, other._mean, other._m)
        return self

    def __add__(self, other: "DLRStats") -> "DLRStats":
        if not isinstance(other, DLRStats):
            return NotImplemented
        out = self.copy()
        return out.merge(other)

    def __radd__(self, other: object) -> "DLRStats":
        if isinstance(other, int) and other == 0:  # sum(list_of_stats)
            return self.copy()
        return NotImplemented

    def copy(self) -> "DLRStats":
        """Deep copy (staged rows are folded in first)."""
        self._flush()
        out = copy.copy(self)
        for name in ("_mean", "_m", "_wtw", "_wtb"):
            v = getattr(self, name)
            setattr(out, name, None if v is None else v.copy(order="K"))
        out._stage = out._stage_f64 = out._gram = None
        return out

    # ------------------------------------------------------------------ results
    def moments(self) -> dict[str, Any]:
        """The accumulated statistics as float64 arrays: n, means and centered co-moment blocks.

        Keys: ``n``, ``mean_features``, ``mean_outputs`` (None in weights mode), ``mean_labels``,
        ``features_features`` (Phic^T Phic), ``outputs_features`` (Fc^T Phic), ``outputs_outputs`` (Fc^T Fc),
        ``labels_features``, ``labels_outputs``, ``labels_labels``; absent blocks are None.
        """
        self._flush()
        if self._n == 0:
            raise DLRInputError("no samples: call update() before asking for results")
        p, c, cy = self._p, self._c_out, self._cy or 0
        m = _symmetric(self._m)
        fs, os_, ls = slice(0, p), slice(p, p + c), slice(p + c, p + c + cy)
        blk = lambda a, b: m[a, b] if (a.stop > a.start and b.stop > b.start) else None  # noqa: E731
        return {
            "n": self._n,
            "mean_features": self._mean[fs].copy(),
            "mean_outputs": self._mean[os_].copy() if c else None,
            "mean_labels": self._mean[ls].copy() if cy else None,
            "features_features": m[fs, fs],
            "outputs_features": blk(os_, fs),
            "outputs_outputs": blk(os_, os_),
            "labels_features": blk(ls, fs),
            "labels_outputs": blk(ls, os_),
            "labels_labels": blk(ls, ls),
        }

    def result(self, rtol: float | None = None) -> DLRResult:
        """Exact D_LR of everything accumulated so far.

        Parameters
        ----------
        rtol : float, optional
            Relative tolerance on the singular values of the raw outputs that decides the output span
            (``sigma_i > rtol * sigma_1`` kept). None uses :func:`dlrcore.exact.default_rtol`. A larger value
            (e.g. 0.1) keeps only the strong output directions, see the docs on cross-entropy logits.

        Returns
        -------
        DLRResult
        """
        self._flush()
        if self._n == 0:
            raise DLRInputError("no samples: call update() before asking for results")
        prec = "float32" if self._work == np.float32 else "float64"
        eps_prod = float(np.finfo(self._work).eps)
        feature_tol = 100.0 * eps_prod
        if self._weights:
            p = int(self._p)
            return dlr_from_weight_moments(
                n=self._n,
                mean_phi=self._mean[:p],
                m_pp=_symmetric(self._m[:p, :p]),
                wtw=self._wtw,
                wtb=self._wtb,
                btb=self._btb,
                C=int(self._C),
                rtol=rtol,
                data_eps=max(self._data_eps, eps_prod),
                feature_rel_tol=feature_tol,
                precision=prec,
            )
        p, c = int(self._p), self._c_out
        return dlr_from_moments(
            n=self._n,
            m_pp=self._m[:p, :p],
            m_fp=self._m[:p, p : p + c].T,
            m_ff=self._m[p : p + c, p : p + c],
            mean_f=self._mean[p : p + c],
            rtol=rtol,
            data_eps=self._data_eps,
            feature_rel_tol=feature_tol,
            precision=prec,
            upper=True,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the statistics to one portable ``.npz`` file, atomically.

        The file is written next to ``path`` under a temporary name, flushed to disk and renamed over ``path``,
        so an interrupted save never leaves a half-written file in place of a good one.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        self._flush()
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            "magic": np.array(_MAGIC),
            "format_version": np.array(FORMAT_VERSION),
            "n": np.array(self._n, dtype=np.int64),
            "p": np.array(-1 if self._p is None else self._p),
            "C": np.array(-1 if self._C is None else self._C),
            "cy": np.array(-1 if self._cy is None else self._cy),
            "label_kind": np.array(self._label_kind or ""),
            "num_classes": np.array(-1 if self.num_classes is None else self.num_classes),
            "work": np.array("" if self._work is None else self._work.name),
            "precision": np.array(self.precision),
            "data_eps": np.array(self._data_eps),
            "weights_mode": np.array(self._weights),
        }
        arrays = {}
        if self._n:
            arrays["mean"] = self._mean
            arrays["comoment"] = _symmetric(self._m)
        if self._weights:
            arrays.update(wtw=self._wtw, wtb=self._wtb, btb=np.array(self._btb))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **meta, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DLRStats":
        """Read statistics written by :meth:`save`.

        Raises
        ------
        DLRInputError
            If the file is not a dlrcore statistics file, is damaged, or has a newer format version.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise
        except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError ...
            raise DLRInputError(f"{path}: not a dlrcore statistics file ({type(exc).__name__}: {exc})") from exc
        if str(data.get("magic", "")) != _MAGIC:
            raise DLRInputError(f"{path}: not a dlrcore statistics file (no {_MAGIC} marker)")
        version = int(data["format_version"])
        if version > FORMAT_VERSION:
            raise DLRInputError(
                f"{path}: statistics format version {version} is newer than this dlrcore reads "
                f"({FORMAT_VERSION}); upgrade dlrcore"
            )
        try:
            st = cls(precision=str(data["precision"]))
            geti = lambda k: None if int(data[k]) < 0 else int(data[k])  # noqa: E731
            st._n = int(data["n"])
            st._p, st._C, st._cy = geti("p"), geti("C"), geti("cy")
            st._label_kind = str(data["label_kind"]) or None
            st.num_classes = geti("num_classes")
            st._work = np.dtype(str(data["work"])) if str(data["work"]) else None
            st._data_eps = float(data["data_eps"])
            st._weights = bool(data["weights_mode"])
            if st._weights:
                st._wtw, st._wtb, st._btb = data["wtw"], data["wtb"], float(data["btb"])
            if st._n:
                st._mean = np.asarray(data["mean"], dtype=np.float64)
                st._m = np.asfortranarray(np.triu(np.asarray(data["comoment"], dtype=np.float64)))
                q = st._q
                if st._mean.shape != (q,) or st._m.shape != (q, q):
                    raise DLRInputError(f"{path}: array shapes do not match p, C and label width")
                if not (np.isfinite(st._mean).all() and np.isfinite(st._m).all()):
                    raise DLRInputError(f"{path}: statistics contain NaN or Inf")
        except KeyError as exc:
            raise DLRInputError(f"{path}: damaged statistics file, missing field {exc}") from exc
        return st

    def __getstate__(self) -> dict[str, Any]:
        self._flush()
        state = self.__dict__.copy()
        state["_stage"] = state["_stage_f64"] = state["_gram"] = None
        return state
