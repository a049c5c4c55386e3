"""The folded float64 state of :class:`~dlrcore.moments.Moments`: :class:`FoldedMoments`.

``n``, the column means and the upper triangle of the centered co-moment matrix ``M = Zc^T Zc`` of stacked
column blocks, each block stored scaled by a power of two (:mod:`dlrcore.scaling`). This is what merges (Chan's
pairwise update, :func:`dlrcore.chan.chan_step`, as BLAS rank-one updates of the upper triangle), rescales,
saves and answers block queries; :class:`~dlrcore.moments.Moments` adds the staging buffer that feeds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.linalg import blas

from .chan import chan_step
from .scaling import out_of_window

__all__ = ["FoldedMoments", "symmetric"]


def symmetric(m_upper: np.ndarray) -> np.ndarray:
    """Full symmetric matrix from one whose upper triangle is valid."""
    return np.triu(m_upper) + np.triu(m_upper, 1).T


class FoldedMoments:
    """``(n, mean, M)`` of stacked column blocks of ``widths``, in float64, with per-block exponents.

    ``work`` is the precision products are formed in by the subclass that stages rows; ``exact_block`` a block
    whose own Gram is formed from float64 products. The hooks :meth:`flush`, :meth:`_after_rescale` and
    :meth:`_drop_staged` let that subclass fold its buffers in before the state is read or changed.
    """

    def __init__(self, widths: Sequence[int], *, work: np.dtype, exact_block: int | None = None) -> None:
        self.widths = tuple(int(w) for w in widths)
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.widths)]))
        self.q = self.offsets[-1]
        self.work = np.dtype(work)
        self.exact_block = exact_block if exact_block is not None and self.widths[exact_block] > 0 else None
        self.n = 0  # rows folded into (mean, m)
        self.mean = np.zeros(self.q)
        self.m = np.zeros((self.q, self.q), order="F")  # upper triangle valid, strict lower triangle zero
        # per block: the state holds the moments of x * 2**-exponent; fixed once the block saw a non-zero value
        self.exponents = np.zeros(len(self.widths), dtype=np.int64)
        self.fixed = np.zeros(len(self.widths), dtype=bool)

    # ------------------------------------------------------------------ hooks of the staging subclass
    def flush(self) -> None:
        """Fold in whatever is staged (nothing here)."""

    def set_work(self, work: np.dtype) -> None:
        """Switch the product precision."""
        self.work = np.dtype(work)

    def _after_rescale(self) -> None:
        """Forget anything kept about the old scale (nothing here)."""

    def _drop_staged(self) -> None:
        """Drop staged rows when a state is loaded (nothing here)."""

    # ------------------------------------------------------------------ layout
    def cols(self, i: int) -> slice:
        """Column slice of block ``i`` in the stacked matrix."""
        return slice(self.offsets[i], self.offsets[i + 1])

    def rescale(self, exponents: np.ndarray) -> None:
        """Hold the moments of ``x * 2**-exponents[i]`` for block i from now on (staged rows are folded first);
        exact, since the state is multiplied by powers of two."""
        exponents = np.asarray(exponents, dtype=np.int64)
        if np.array_equal(exponents, self.exponents):
            return
        self.flush()
        cols = np.repeat(exponents - self.exponents, self.widths).astype(np.int32)
        self.mean = np.ldexp(self.mean, -cols)
        self.m = np.asfortranarray(np.ldexp(self.m, -(cols[:, None] + cols[None, :])))
        self.exponents = exponents
        self._after_rescale()

    # ------------------------------------------------------------------ merge and access
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

        ``resid`` removes ``nb resid resid^T`` from ``m_b`` (its rows were centered about ``mean_b - resid``);
        ``gf`` (float64, about the same center) replaces its exact block.
        """
        na = self.n
        step = chan_step(na, self.mean, nb, np.asarray(mean_b, dtype=np.float64))
        np.add(self.m, m_b, out=self.m)
        if gf is not None:
            exact = self.exact_block
            assert exact is not None  # only a state with an exact block has a float64 Gram to put in
            c = self.cols(exact)
            # put the float64 Gram in the place of the work-precision one
            self.m[c, c] += np.triu(gf - m_b[c, c])
        if resid is not None and np.any(resid):
            blas.dsyr(-float(nb), resid, lower=0, a=self.m, overwrite_a=1)
        if na:
            blas.dsyr(step.weight, step.delta, lower=0, a=self.m, overwrite_a=1)
        self.mean, self.n = step.mean, step.n

    # ------------------------------------------------------------------ merge, copy, access
    def merge(self, other: FoldedMoments) -> None:
        """Add ``other``'s samples (both are flushed first). Widths must match."""
        if other.widths != self.widths:
            raise ValueError(f"cannot merge moments of block widths {self.widths} and {other.widths}")
        other.flush()
        self.flush()
        if other.n == 0:
            return
        if other.work == np.float64:
            self.set_work(np.dtype(np.float64))
        # both at the larger exponent of each block (a block without non-zero values takes the other's)
        both = self.fixed & other.fixed
        common = np.where(both, np.maximum(self.exponents, other.exponents),
                          np.where(self.fixed, self.exponents, other.exponents))
        self.rescale(common)
        cols = np.repeat(common - other.exponents, self.widths).astype(np.int32)
        mean_o, m_o = other.mean, other.m
        if np.any(cols):
            mean_o = np.ldexp(mean_o, -cols)
            m_o = np.ldexp(m_o, -(cols[:, None] + cols[None, :]))
        self._merge(other.n, mean_o, m_o)
        self.fixed |= other.fixed

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

    def block_exponent(self, i: int) -> int:
        """The exponent of block ``i``: its stored moments are those of ``x * 2**-e``."""
        return int(self.exponents[i])

    def state_arrays(self) -> dict[str, np.ndarray]:
        """``n``, ``mean``, the full symmetric ``comoment`` and the blocks' ``scale_exponents`` for saving."""
        self.flush()
        return {"n": np.array(self.n, dtype=np.int64), "mean": self.mean, "comoment": symmetric(self.m),
                "scale_exponents": self.exponents.copy()}

    def load_arrays(
        self, n: int, mean: np.ndarray, comoment: np.ndarray, exponents: Sequence[int] | np.ndarray | None = None
    ) -> None:
        """Restore a state written by :meth:`state_arrays` (``exponents`` None: all zero)."""
        mean = np.asarray(mean, dtype=np.float64)
        comoment = np.asarray(comoment, dtype=np.float64)
        if mean.shape != (self.q,) or comoment.shape != (self.q, self.q):
            raise ValueError(f"moment arrays of shapes {mean.shape}, {comoment.shape} do not match width {self.q}")
        if not (np.isfinite(mean).all() and np.isfinite(comoment).all()):
            raise ValueError("moment arrays contain NaN or Inf")
        self.n, self.mean, self.m = int(n), mean.copy(), np.asfortranarray(np.triu(comoment))
        self._drop_staged()
        nblocks = len(self.widths)
        self.exponents = np.zeros(nblocks, dtype=np.int64) if exponents is None else np.array(exponents, np.int64)
        if self.exponents.shape != (nblocks,):
            raise ValueError(f"{self.exponents.shape[0]} scale exponents for {nblocks} blocks")
        # a block holds non-zero values exactly when its mean or its centered squares are not all zero
        self.fixed = np.array([bool(np.any(self.mean[self.cols(i)]) or np.any(np.diagonal(self.m)[self.cols(i)]))
                               for i in range(nblocks)])
        # a state written by another program (or before the exponents existed) may hold any finite magnitude:
        # bring each block into the window, exactly, so that the finishing algebra cannot overflow
        diag = np.diagonal(self.m)
        shift = np.zeros(nblocks, dtype=np.int64)
        for i in range(nblocks):
            c = self.cols(i)
            if self.widths[i] and self.n:
                top = max(float(np.max(np.abs(self.mean[c]))), math.sqrt(max(float(np.max(diag[c])), 0.0) / self.n))
                shift[i] = out_of_window(top)
        if np.any(shift):
            self.rescale(self.exponents + shift)
