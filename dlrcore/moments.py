"""Streaming, mergeable first and second moments of stacked column blocks: :class:`Moments`.

Every statistic in dlrcore (D_LR, its spectrum, CKA, NC1) is a function of ``n``, the column means and the
centered co-moment matrix ``M = Zc^T Zc`` of some stacked columns ``Z = [X_1, X_2, ...]``. :class:`Moments`
accumulates exactly these in float64, whatever n is, in O(q^2) memory for q stacked columns:

* rows are staged into a small buffer (``chunk_bytes``, 4096 to 65536 rows), written as ``z = x - K`` in one
  fused pass, where ``K`` is the running mean (or, for the first rows, the mean of up to 1024 of them); each
  staged segment is summed (for the exact mean) and its squares summed (NaN, Inf and overflow show there,
  before anything is multiplied). With numba installed, :func:`dlrcore.kernels.shift_into` does the
  subtraction and both float64 sums in one pass over the rows; without it, a subtraction, a column sum and a
  BLAS dot do;
* a full stage is multiplied by one BLAS ``?syrk`` into a pending Gram about the same ``K`` (``beta = 1``), so
  that the float64 state is touched only every ``FOLD_BYTES`` of rows; a stage whose mean drifted from ``K`` by
  more than about 0.7 standard deviation is re-centered first (after folding what is pending), so that the
  correction below cannot cancel;
* folding the pending Gram ``G`` of m rows with residual mean ``r`` gives the centered Gram ``G - m r r^T`` about
  the mean ``K + r``, merged by Chan's pairwise update ``M = M_a + M_b + (n_a n_b / n) d d^T``;
* merging two :class:`Moments` is the same update, so any split of the rows over batches and machines gives
  the same result up to rounding.

Only the upper triangle of ``M`` is stored (the strict lower triangle is kept at zero). Products are float32
or float64 (``work``); one block may be marked to have its own Gram formed from float64 products.

Each block carries a power-of-two exponent ``e`` (:mod:`dlrcore.scaling`): the state holds the moments of
``x * 2**-e``, so that data from about 1e-300 to 1e300 neither underflow nor overflow the products. Every measure
built on these moments is invariant to scaling one block, and :attr:`Moments.exponents` gives the factors back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.linalg import blas

from .folded_moments import FoldedMoments, symmetric
from .scaling import max_abs, new_exponent, scale_array, suspicious

__all__ = ["DEFAULT_CHUNK_BYTES", "BadSegment", "Moments", "stage_capacity", "symmetric"]  # symmetric: a re-export

#: Least stage size in bytes (see :meth:`Moments.capacity` for the rule): rows are multiplied in such chunks.
DEFAULT_CHUNK_BYTES = 32 * 2**20

#: Largest stage in bytes.
MAX_STAGE_BYTES = 512 * 2**20

#: Rows of about this many bytes (16384 to 131072 rows) have their Grams summed in the product precision before
#: a float64 fold.
FOLD_BYTES = 256 * 2**20

#: At most this many stage Grams are summed in the product precision before a float64 fold.
MAX_PENDING_STAGES = 64


_SHIFT_INTO: list = []


def _fused_kernel():
    """:func:`dlrcore.kernels.shift_into` when its numba backend is active, else None (imported on first use, so
    that ``import dlrcore`` does not pay for importing numba)."""
    if not _SHIFT_INTO:
        from dlrcore import kernels

        _SHIFT_INTO.append(kernels.shift_into if kernels.BACKEND == "numba" else None)
    return _SHIFT_INTO[0]


class BadSegment(Exception):
    """A staged segment held NaN/Inf or would overflow the products; the call that staged it changed nothing.

    ``block`` is the index of the offending block (the one holding a non-finite value, else the one with the
    largest sum of squares) and ``rows`` the ``(start, stop)`` rows of the call's arrays in the segment;
    ``overflow`` is True when the values are finite but their centered squares exceed the products' range.
    """

    def __init__(self, block: int, rows: tuple[int, int], overflow: bool) -> None:
        super().__init__(f"block {block}, rows {rows[0]}..{rows[1] - 1}: {'overflow' if overflow else 'NaN/Inf'}")
        self.block, self.rows, self.overflow = block, rows, overflow


class _SplitNeeded(Exception):
    """A one-segment call's rows are finite but too large for the products together (nothing was counted)."""


def stage_capacity(q: int, work: np.dtype, chunk_bytes: int = 0) -> int:
    """Rows a stage of q columns holds for ``work`` products (``chunk_bytes`` 0: the automatic size).

    Examples
    --------
    >>> stage_capacity(10, np.dtype(np.float32), chunk_bytes=4000)
    100
    """
    row_bytes = max(int(q), 1) * np.dtype(work).itemsize
    if chunk_bytes:
        rows = chunk_bytes // row_bytes
    else:
        # Each stage's syrk reads and writes the q x q pending Gram (8 q^2 bytes) while it reads 4 m q bytes
        # of rows: m >= 2q keeps that traffic below the data itself; 32 MiB and 4096 rows are floors for
        # narrow data, 512 MiB a ceiling for very wide data.
        rows = min(max(DEFAULT_CHUNK_BYTES // row_bytes, 2 * int(q), 4096), MAX_STAGE_BYTES // row_bytes)
    return int(min(65536, max(64, rows)))


class Moments(FoldedMoments):
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
        Size of the staging buffer; 0 (the default) picks ``DEFAULT_CHUNK_BYTES`` or 4096 rows, whichever is
        larger.

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
        chunk_bytes: int = 0,
    ) -> None:
        super().__init__(widths, work=work, exact_block=exact_block)
        self.chunk_bytes = int(chunk_bytes)
        self.fill = 0  # rows in the stage
        self._stage: np.ndarray | None = None
        self._stage_f64: np.ndarray | None = None
        self._seg_sum = np.zeros(self.q)  # column sums of the staged (shifted) rows
        self._seg_sq = 0.0  # their sum of squares
        self._shift: np.ndarray | None = None  # K, shared by the stage and the pending Gram
        self._var: np.ndarray | None = None  # per-column variance estimate, for the drift test
        # pending: Grams of stages already multiplied but not yet folded into (mean, m), all about the same K
        self._pend_rows = 0
        self._pend_stages = 0
        self._pend_sum = np.zeros(self.q)
        self._pend_sq = 0.0  # sum of squares of the pending rows (bounds every entry of the pending Gram)
        self._gram: np.ndarray | None = None  # (q, q) work dtype, accumulated with beta = 1
        self._gram_f64: np.ndarray | None = None  # exact block's Gram from float64 products

    def _after_rescale(self) -> None:
        self._shift = self._var = None

    def _drop_staged(self) -> None:
        self._stage = self._stage_f64 = self._gram = self._gram_f64 = None
        self.fill = self._pend_rows = 0

    @property
    def rows(self) -> int:
        """Samples folded in, pending and staged."""
        return self.n + self._pend_rows + self.fill

    def capacity(self, work: np.dtype | None = None) -> int:
        """Rows the stage holds (for ``work`` products).

        A call to :meth:`stage` with at most ``capacity() - fill`` rows multiplies none of them before all are
        checked, so a bad segment among them leaves the state as it was; larger batches must be validated by the
        caller first.
        """
        return stage_capacity(self.q, self.work if work is None else work, self.chunk_bytes)

    @property
    def fold_rows(self) -> int:
        """Rows whose Grams are summed in ``work`` precision before they are folded into float64."""
        return int(min(131072, max(16384, FOLD_BYTES // (max(self.q, 1) * self.work.itemsize))))

    def set_work(self, work: np.dtype) -> None:
        """Switch the product precision (staged rows are folded in first)."""
        work = np.dtype(work)
        if work != self.work:
            self.flush()
            self.work = work
            self._stage = self._stage_f64 = self._gram = self._gram_f64 = None

    # ------------------------------------------------------------------ staging
    def _ensure_stage(self, rows_needed: int) -> None:
        cap_max = self.capacity()
        cap = self._stage.shape[0] if self._stage is not None and self._stage.dtype == self.work else 0
        if cap >= min(rows_needed, cap_max):
            return
        new_cap = min(cap_max, max(rows_needed, 2 * cap, 256))
        self._multiply_stage()
        self._stage = np.empty((new_cap, self.q), dtype=self.work)
        exact = self.exact_block
        if self.work == np.float32 and exact is not None:
            self._stage_f64 = np.empty((new_cap, self.widths[exact]))
        else:
            self._stage_f64 = None

    def stage(self, blocks: Sequence[np.ndarray]) -> None:
        """Add rows given as one 2-D array per block (same row count, validated shapes), atomically.

        A call whose rows fit in the stage multiplies none of them before all are checked. A larger one, or one
        whose rows are finite but too large for the products together (it is then staged fewer rows at a time, so
        that the outcome does not depend on the stage size), first folds what is pending and keeps a copy of the
        float64 state (``n``, ``mean``, ``M``: O(q^2), small next to the O(rows q^2) products of such a call),
        which is put back if a later segment turns out bad. The pending Gram, summed in the product precision, is
        folded into float64 before its entries could overflow, so many accepted calls cannot overflow it either.

        Raises
        ------
        BadSegment
            If a staged segment holds NaN/Inf or would overflow the products; the state is then exactly as before
            the call.
        """
        saved = None
        scale = (self.exponents.copy(), self.fixed.copy())
        try:
            with np.errstate(invalid="ignore", over="ignore"):  # bad values are caught below, by the sums
                if blocks[0].shape[0] > self.capacity() - self.fill:
                    saved = self._checkpoint()
                    self._stage_rows(blocks, split=True)
                else:
                    try:  # one segment: nothing of it is multiplied before all of it is checked
                        self._stage_rows(blocks, split=False)
                    except _SplitNeeded:  # too large together, or a block's scale must change: with a copy kept
                        saved = self._checkpoint()
                        self._stage_rows(blocks, split=True)
        except BadSegment:
            if saved is not None:
                self.n, self.mean, self.m, self._shift, self._var = saved
                self.fill = self._pend_rows = self._pend_stages = 0
                self._pend_sum = np.zeros(self.q)
                self._pend_sq = 0.0
            self.exponents, self.fixed = scale
            raise

    def _checkpoint(self) -> tuple:
        """Fold everything staged or pending, and return a copy of the float64 state for a rollback."""
        self.flush()
        return self.n, self.mean.copy(), self.m.copy(order="F"), self._shift, self._var

    def _new_shift(self, blocks: Sequence[np.ndarray], head: slice) -> None:
        """Take K (and the variance estimate of the drift test) from the state, or from the first rows."""
        if self.n:
            self._shift = self.mean.astype(self.work)
            self._var = np.diagonal(self.m) / self.n
        else:
            parts = [np.asarray(a[head], dtype=np.float64) for a in blocks]
            self._shift = np.concatenate([p.mean(axis=0) for p in parts]).astype(self.work)
            self._var = np.concatenate([p.var(axis=0) for p in parts])

    def _stage_rows(self, raw: Sequence[np.ndarray], split: bool) -> None:
        nb = raw[0].shape[0]
        work = self.work
        limit = float(np.finfo(work).max) / 8.0
        blocks = [scale_array(a, int(e)) for a, e in zip(raw, self.exponents)]
        start = 0
        most = nb  # segment length; halved while a segment of finite values is too large for the products
        looked = -1  # the segment start whose blocks had their scale checked exactly
        while start < nb:
            self._ensure_stage(self.fill + nb - start)
            stage = self._stage
            assert stage is not None  # _ensure_stage just made it
            cap = stage.shape[0]
            take = min(nb - start, cap - self.fill, most)
            if self.fill == 0:
                self._seg_sum = np.zeros(self.q)
                self._seg_sq = 0.0
                if self._pend_rows == 0:
                    self._new_shift(blocks, slice(start, start + min(take, 1024)))
            shift = self._shift
            assert shift is not None  # set by _new_shift above, or kept with the staged or pending rows
            rows = slice(self.fill, self.fill + take)
            src = slice(start, start + take)
            shift_into = _fused_kernel()
            parts = np.zeros(len(blocks))  # each block's sum of squares in the segment
            if shift_into is not None:
                # one fused pass per block: z = x - K written, float64 column sums and sum of squares
                ssum = np.empty(self.q)
                for i, arr in enumerate(blocks):
                    cols = self.cols(i)
                    ssum[cols], parts[i] = shift_into(arr[src], shift[cols], stage[rows, cols])
            else:
                for i, arr in enumerate(blocks):
                    cols = self.cols(i)
                    np.subtract(arr[src], shift[cols], out=stage[rows, cols], casting="unsafe")
                    flat = stage[rows, cols].astype(np.float64).reshape(-1)
                    parts[i] = float(np.dot(flat, flat))
                ssum = stage[rows].sum(axis=0, dtype=work).astype(np.float64)
            if looked != start:
                rescaled = self._check_scale(raw, parts, ssum, start, take, split)
                looked = start
                if rescaled:
                    blocks = [scale_array(a, int(e)) for a, e in zip(raw, self.exponents)]
                    continue  # stage the segment again, scaled
            sq = float(parts.sum())
            if not (np.isfinite(ssum).all() and np.isfinite(sq) and sq <= limit):
                finite = bool(np.isfinite(parts).all() and np.isfinite(ssum).all())
                if finite and take > 1:
                    if not split:
                        raise _SplitNeeded()
                    most = take // 2  # finite but too large together: stage fewer rows at a time
                    continue
                block = int(np.argmin(np.isfinite(parts))) if not finite else int(np.argmax(parts))
                raise BadSegment(block, (start, start + take), overflow=finite)
            if self.fill and self._seg_sq + sq > limit:
                # this segment is fine alone, but the stage's Gram could overflow the products with it: multiply
                # the stage first and stage the segment again at the start of the next one
                self._multiply_stage()
                continue
            stage_f64 = self._stage_f64
            if stage_f64 is not None:
                exact = self.exact_block
                assert exact is not None  # the float64 stage exists only for an exact block
                stage_f64[rows] = blocks[exact][src]
            self._seg_sum += ssum
            self._seg_sq += sq
            self.fixed |= parts > 0
            self.fill += take
            start += take
            if self.fill == cap:
                self._multiply_stage()

    def _check_scale(
        self, raw: Sequence[np.ndarray], parts: np.ndarray, ssum: np.ndarray, start: int, take: int, split: bool
    ) -> bool:
        """Look at the raw rows of a segment whose sums of squares fall outside the window (:mod:`dlrcore.scaling`).

        Raises :class:`BadSegment` for NaN/Inf, :class:`_SplitNeeded` when an exponent must change in a call that
        kept no copy of the state; otherwise changes the exponents (the state is scaled exactly) and returns
        whether any changed.
        """
        src = slice(start, start + take)
        bad_sum = not np.isfinite(ssum).all()
        new, fixed = self.exponents.copy(), self.fixed.copy()
        for i, a in enumerate(raw):
            w = self.widths[i]
            if not w or not (bad_sum or suspicious(float(parts[i]), take * w, self.work, fixed=bool(self.fixed[i]))):
                continue
            amax = max_abs(a[src])
            if not np.isfinite(amax):
                raise BadSegment(i, (start, start + take), overflow=False)
            new[i] = new_exponent(amax, int(new[i]), self.work, fixed=bool(fixed[i]))
            fixed[i] |= amax > 0
        if np.array_equal(new, self.exponents):
            self.fixed = fixed
            return False
        if not split:
            raise _SplitNeeded()
        self.rescale(new)
        self.fixed = fixed
        return True

    def _multiply_stage(self) -> None:
        """Add the staged rows' Gram (about K) to the pending Gram; fold first if the data drifted from K."""
        m = self.fill
        if m == 0:
            return
        stage, shift, var = self._stage, self._shift, self._var
        # staged rows imply the stage they sit in and the K (and variance estimate) they were shifted by
        assert stage is not None and shift is not None and var is not None
        z = stage[:m]
        resid = self._seg_sum / m
        var = np.maximum(var, 0.0)
        # drift: a column's mean moved by more than ~0.7 of its estimated standard deviation, or the stage as a
        # whole sits mostly in its offset from K
        if np.any(resid * resid > 0.5 * var) or m * float(resid @ resid) > 0.5 * self._seg_sq:
            # The stage's mean moved by more than ~0.7 standard deviation from K: z^T z - m r r^T would cancel.
            # Fold what is pending (about the old K), then re-center this stage about its own mean.
            self._fold()
            np.subtract(z, resid.astype(z.dtype), out=z)
            shift = self._shift = shift + resid.astype(z.dtype)
            self._seg_sum = z.sum(axis=0, dtype=z.dtype).astype(np.float64)
            self._var = np.maximum(var, resid * resid)
        if self._pend_rows and self._pend_sq + self._seg_sq > float(np.finfo(z.dtype).max) / 8.0:
            self._fold()  # the pending Gram could overflow the products with this stage: fold it into float64 first
        q = self.q
        first = self._pend_rows == 0
        if self._gram is None or self._gram.dtype != z.dtype:
            self._gram = np.zeros((q, q), dtype=z.dtype, order="F")
        f = blas.ssyrk if z.dtype == np.float32 else blas.dsyrk
        # z in C order is z^T in Fortran order: syrk(trans=0) on it gives z^T z without a copy
        f(1.0, z.T, beta=0.0 if first else 1.0, c=self._gram, trans=0, lower=0, overwrite_c=1)
        stage_f64, exact = self._stage_f64, self.exact_block
        if stage_f64 is not None:
            assert exact is not None  # the float64 stage exists only for an exact block
            c = self.cols(exact)
            fz = stage_f64[:m]
            np.subtract(fz, shift[c].astype(np.float64), out=fz)
            if self._gram_f64 is None:
                self._gram_f64 = np.zeros((c.stop - c.start,) * 2, order="F")
            blas.dsyrk(1.0, fz.T, beta=0.0 if first else 1.0, c=self._gram_f64, trans=0, lower=0, overwrite_c=1)
            # the exact block's column sums in float64
            self._seg_sum[c] = fz.sum(axis=0)
        self._pend_rows += m
        self._pend_stages += 1
        self._pend_sum = self._seg_sum.copy() if first else self._pend_sum + self._seg_sum
        self._pend_sq = self._seg_sq if first else self._pend_sq + self._seg_sq
        self.fill = 0
        # bound both the rows and the number of work-precision additions before a float64 fold
        if self._pend_rows >= self.fold_rows or self._pend_stages >= MAX_PENDING_STAGES:
            self._fold()

    def _fold(self) -> None:
        """Fold the pending Gram into (n, mean, M): ``G - m r r^T`` about the mean ``K + r``, then Chan's merge."""
        m = self._pend_rows
        if m == 0:
            return
        shift, gram = self._shift, self._gram
        assert shift is not None and gram is not None  # pending rows imply their K and their Gram
        resid = self._pend_sum / m
        mean = shift.astype(np.float64) + resid
        gf = self._gram_f64 if self._stage_f64 is not None else None
        self._merge(m, mean, gram, resid=resid, gf=gf)
        self._pend_rows = self._pend_stages = 0
        self._pend_sum = np.zeros(self.q)
        self._pend_sq = 0.0

    def flush(self) -> None:
        """Fold everything staged or pending into (n, mean, M)."""
        self._multiply_stage()
        self._fold()

    def copy(self) -> Moments:
        """Deep copy of the state (staged rows are folded in first)."""
        self.flush()
        out = Moments(self.widths, work=self.work, exact_block=self.exact_block, chunk_bytes=self.chunk_bytes)
        out.n, out.mean, out.m = self.n, self.mean.copy(), self.m.copy(order="F")
        out.exponents, out.fixed = self.exponents.copy(), self.fixed.copy()
        return out

    def __getstate__(self) -> dict:
        self.flush()
        state = self.__dict__.copy()
        state["_stage"] = state["_stage_f64"] = state["_gram"] = state["_gram_f64"] = None
        return state
