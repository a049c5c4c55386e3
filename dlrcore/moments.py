"""Streaming, mergeable first and second moments of stacked column blocks: :class:`Moments`.

Every statistic in dlrcore (D_LR, its spectrum, CKA, NC1) is a function of ``n``, the column means and the
centered co-moment matrix ``M = Zc^T Zc`` of some stacked columns ``Z = [X_1, X_2, ...]``. :class:`Moments`
accumulates exactly these in float64, whatever n is, in O(q^2) memory for q stacked columns:

* rows are staged into a buffer of about ``chunk_bytes``, written as ``x - K`` in one fused pass, where ``K`` is
  the running mean (or, for the first rows, the mean of up to 1024 of them);
* a full stage is folded in with one BLAS ``?syrk`` (the centered Gram ``z^T z - m r r^T``, ``r`` the residual
  mean, re-centering first when ``r`` is large against the spread so that the subtraction cannot cancel) and
  Chan's pairwise update ``M = M_a + M_b + (n_a n_b / n) d d^T``, ``d = mean_b - mean_a``;
* merging two :class:`Moments` is the same update, so any split of the rows over batches and machines gives
  the same result up to rounding.

Only the upper triangle of ``M`` is stored (the strict lower triangle is kept at zero). Products are float32
or float64 (``work``); one block may be marked to have its own Gram formed from float64 products.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.linalg import blas

__all__ = ["DEFAULT_CHUNK_BYTES", "BadSegment", "Moments", "symmetric"]

#: Stage buffer budget in bytes: rows are folded in chunks of about this size.
DEFAULT_CHUNK_BYTES = 256 * 2**20


class BadSegment(Exception):
    """A staged segment held NaN/Inf or would overflow; it was dropped again and nothing was folded in."""


def symmetric(m_upper: np.ndarray) -> np.ndarray:
    """Full symmetric matrix from one whose upper triangle is valid."""
    return np.triu(m_upper) + np.triu(m_upper, 1).T


def _syrk(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Upper triangle of ``z^T z`` for a C-ordered (m, q) ``z`` into the Fortran-ordered (q, q) ``out``."""
    f = blas.ssyrk if z.dtype == np.float32 else blas.dsyrk
    # z in C order is z^T in Fortran order: syrk(trans=0) on it computes z^T z without a copy.
    return f(1.0, z.T, beta=0.0, c=out, trans=0, lower=0, overwrite_c=1)


class Moments:
    """Exact streaming moments ``(n, mean, Zc^T Zc)`` of stacked column blocks.

    Parameters
    ----------
    widths : sequence of int
        Number of columns of each block, in stacking order.
    work : numpy.dtype
        Precision of the BLAS products (float32 or float64); accumulation is always float64.
    exact_block : int, optional
        Index of a block whose own Gram is formed from float64 products even when ``work`` is float32.
    chunk_bytes : int
        Size of the staging buffer.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 3))
    >>> mo = Moments([2, 1], work=np.dtype(np.float64))
    >>> mo.stage([x[:200, :2], x[:200, 2:]]); mo.stage([x[200:, :2], x[200:, 2:]])
    >>> bool(np.allclose(mo.block(0, 1), (x[:, :2] - x[:, :2].mean(0)).T @ (x[:, 2:] - x[:, 2:].mean(0))))
    True
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        work: np.dtype,
        exact_block: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.widths = tuple(int(w) for w in widths)
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.widths)]))
        self.q = self.offsets[-1]
        self.work = np.dtype(work)
        self.exact_block = exact_block if exact_block is not None and self.widths[exact_block] > 0 else None
        self.chunk_bytes = int(chunk_bytes)
        self.n = 0
        self.mean = np.zeros(self.q)
        self.m = np.zeros((self.q, self.q), order="F")  # upper triangle valid, strict lower triangle zero
        self._stage: np.ndarray | None = None
        self._stage_f64: np.ndarray | None = None
        self._gram: np.ndarray | None = None
        self._shift: np.ndarray | None = None
        self._seg_sum = np.zeros(self.q)
        self.fill = 0

    # ------------------------------------------------------------------ layout
    def cols(self, i: int) -> slice:
        """Column slice of block ``i`` in the stacked matrix."""
        return slice(self.offsets[i], self.offsets[i + 1])

    @property
    def rows(self) -> int:
        """Samples folded in plus samples staged."""
        return self.n + self.fill

    def capacity(self, work: np.dtype | None = None) -> int:
        """Most rows the stage grows to (for ``work`` products).

        A call to :meth:`stage` with at most ``capacity() - fill`` rows folds none of them in before all are
        checked, so a bad segment among them leaves the state as it was.
        """
        work = self.work if work is None else np.dtype(work)
        return max(256, self.chunk_bytes // (max(self.q, 1) * work.itemsize))

    def set_work(self, work: np.dtype) -> None:
        """Switch the product precision (staged rows are folded in first)."""
        work = np.dtype(work)
        if work != self.work:
            self.flush()
            self.work = work
            self._stage = self._stage_f64 = self._gram = None

    # ------------------------------------------------------------------ staging
    def _ensure_stage(self, rows_needed: int) -> None:
        cap_max = self.capacity()
        cap = self._stage.shape[0] if self._stage is not None and self._stage.dtype == self.work else 0
        if cap >= min(rows_needed, cap_max):
            return
        new_cap = min(cap_max, max(rows_needed, 2 * cap, 256))
        self.flush()
        self._stage = np.empty((new_cap, self.q), dtype=self.work)
        split = self.work == np.float32 and self.exact_block is not None
        self._stage_f64 = np.empty((new_cap, self.widths[self.exact_block])) if split else None

    def stage(self, blocks: Sequence[np.ndarray]) -> None:
        """Add rows given as one 2-D array per block (same row count, validated shapes).

        Raises
        ------
        BadSegment
            If a staged segment holds NaN/Inf or would overflow the products. The segment is dropped; rows of
            the same call staged or folded in before it stay (callers validate batches that span several
            flushes up front, so that this cannot happen to them).
        """
        with np.errstate(invalid="ignore", over="ignore"):  # bad values are caught below, by the sums
            self._stage_rows(blocks)

    def _stage_rows(self, blocks: Sequence[np.ndarray]) -> None:
        nb = blocks[0].shape[0]
        work = self.work
        limit = float(np.finfo(work).max) / 8.0
        start = 0
        while start < nb:
            self._ensure_stage(self.fill + nb - start)
            cap = self._stage.shape[0]
            take = min(nb - start, cap - self.fill)
            if self.fill == 0:
                self._seg_sum = np.zeros(self.q)
                if self.n:
                    self._shift = self.mean.astype(work)
                else:
                    head = slice(start, start + min(take, 1024))
                    self._shift = np.concatenate(
                        [np.asarray(a[head], dtype=np.float64).mean(axis=0) for a in blocks]
                    ).astype(work)
            rows = slice(self.fill, self.fill + take)
            src = slice(start, start + take)
            for i, arr in enumerate(blocks):
                cols = self.cols(i)
                np.subtract(arr[src], self._shift[cols], out=self._stage[rows, cols], casting="unsafe")
            seg = self._stage[rows]
            ssum = seg.sum(axis=0, dtype=work).astype(np.float64)
            flat = seg.reshape(-1)
            sq = float(np.dot(flat, flat))
            if not (np.isfinite(ssum).all() and np.isfinite(sq) and sq <= limit):
                raise BadSegment()
            if self._stage_f64 is not None:
                self._stage_f64[rows] = blocks[self.exact_block][src]
            self._seg_sum += ssum
            self.fill += take
            start += take
            if self.fill == cap:
                self.flush()

    def flush(self) -> None:
        """Fold the staged rows in: centered Gram of the stage, then Chan's merge."""
        m = self.fill
        if m == 0:
            return
        z = self._stage[:m]
        q = self.q
        if self._gram is None or self._gram.shape != (q, q) or self._gram.dtype != z.dtype:
            self._gram = np.zeros((q, q), dtype=z.dtype, order="F")
        shift = self._shift.astype(np.float64)
        resid = self._seg_sum / m
        g = _syrk(z, self._gram)
        diag = np.diagonal(g).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            cancel = np.where(diag > 0, m * resid * resid / diag, 0.0)
        if cancel.max(initial=0.0) > 0.5:
            # the data moved by more than about a standard deviation since the shift was taken: re-center
            np.subtract(z, resid.astype(z.dtype), out=z)
            shift = shift + resid.astype(z.dtype).astype(np.float64)
            resid = z.sum(axis=0, dtype=z.dtype).astype(np.float64) / m
            g = _syrk(z, self._gram)
        mean = shift + resid
        gf = None
        if self._stage_f64 is not None:
            fz = self._stage_f64[:m]
            fmean = fz.mean(axis=0)
            np.subtract(fz, fmean, out=fz)
            fr = fz.mean(axis=0)
            gf = blas.dsyrk(1.0, fz.T, trans=0, lower=0)
            if np.any(fr):
                gf = blas.dsyr(-float(m), fr, lower=0, a=gf, overwrite_a=1)
            mean[self.cols(self.exact_block)] = fmean + fr
        self._merge(m, mean, g, resid=resid, gf=gf)
        self.fill = 0

    def _merge(
        self,
        nb: int,
        mean_b: np.ndarray,
        m_b: np.ndarray,
        *,
        resid: np.ndarray | None = None,
        gf: np.ndarray | None = None,
    ) -> None:
        """Chan's pairwise merge of ``(nb, mean_b, m_b)`` (upper triangle of ``m_b`` used, may be float32).

        ``resid`` removes ``nb resid resid^T`` from ``m_b``; ``gf`` (float64) replaces its exact block.
        """
        na = self.n
        n = na + nb
        d = np.asarray(mean_b, dtype=np.float64) - self.mean
        np.add(self.m, m_b, out=self.m)
        if resid is not None and np.any(resid):
            blas.dsyr(-float(nb), resid, lower=0, a=self.m, overwrite_a=1)
        if gf is not None:
            c = self.cols(self.exact_block)
            r_f = resid[c] if resid is not None else np.zeros(c.stop - c.start)
            # undo this block's float32 Gram and its residual correction, put the float64 Gram in their place
            self.m[c, c] += np.triu(gf - m_b[c, c] + nb * np.outer(r_f, r_f))
        if na:
            blas.dsyr(na * nb / n, d, lower=0, a=self.m, overwrite_a=1)
        self.mean = self.mean + d * (nb / n)
        self.n = n

    # ------------------------------------------------------------------ merge, copy, access
    def merge(self, other: "Moments") -> None:
        """Add ``other``'s samples (both are flushed first). Widths must match."""
        if other.widths != self.widths:
            raise ValueError(f"cannot merge moments of block widths {self.widths} and {other.widths}")
        other.flush()
        self.flush()
        if other.n == 0:
            return
        if other.work == np.float64:
            self.set_work(np.dtype(np.float64))
        self._merge(other.n, other.mean, other.m)

    def copy(self) -> "Moments":
        """Deep copy of the state (staged rows are folded in first)."""
        self.flush()
        out = Moments(self.widths, work=self.work, exact_block=self.exact_block, chunk_bytes=self.chunk_bytes)
        out.n, out.mean, out.m = self.n, self.mean.copy(), self.m.copy(order="F")
        return out

    def block(self, i: int, j: int, *, upper: bool = False) -> np.ndarray:
        """Centered co-moment block ``Zc_i^T Zc_j`` (flushes first).

        With ``upper=True`` and ``i == j`` the stored view is returned: upper triangle valid, strict lower zero.
        """
        self.flush()
        a, b = self.cols(i), self.cols(j)
        if i < j:
            return self.m[a, b]
        if i > j:
            return self.m[b, a].T
        return self.m[a, a] if upper else symmetric(self.m[a, a])

    def block_mean(self, i: int) -> np.ndarray:
        """Column means of block ``i`` (flushes first)."""
        self.flush()
        return self.mean[self.cols(i)].copy()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """``n``, ``mean`` and the full symmetric ``comoment`` for saving."""
        self.flush()
        return {"n": np.array(self.n, dtype=np.int64), "mean": self.mean, "comoment": symmetric(self.m)}

    def load_arrays(self, n: int, mean: np.ndarray, comoment: np.ndarray) -> None:
        """Restore a state written by :meth:`state_arrays`."""
        mean = np.asarray(mean, dtype=np.float64)
        comoment = np.asarray(comoment, dtype=np.float64)
        if mean.shape != (self.q,) or comoment.shape != (self.q, self.q):
            raise ValueError(f"moment arrays of shapes {mean.shape}, {comoment.shape} do not match width {self.q}")
        if not (np.isfinite(mean).all() and np.isfinite(comoment).all()):
            raise ValueError("moment arrays contain NaN or Inf")
        self.n, self.mean, self.m = int(n), mean.copy(), np.asfortranarray(np.triu(comoment))
        self._stage = self._stage_f64 = self._gram = None
        self.fill = 0

    def __getstate__(self) -> dict:
        self.flush()
        state = self.__dict__.copy()
        state["_stage"] = state["_stage_f64"] = state["_gram"] = None
        return state
