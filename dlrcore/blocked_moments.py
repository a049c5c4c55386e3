"""The moments of a stream kept in B round-robin blocks, for the block jackknife: :class:`BlockedMoments`.

Row k of the stream (counted over every batch and every merge) goes to block ``k mod B``, whatever the batch
boundaries, so that each block is a representative 1/B of the rows even when the data arrive sorted. Each block is
a :class:`~dlrcore.moments.Moments`; the statistics of all rows are the merge of the blocks, formed on demand
(:meth:`BlockedMoments.total`, B Chan merges, O(B q^2)), never kept as a separate copy. The B leave-one-block-out
statistics are merges of the other blocks (:meth:`BlockedMoments.leave_one_out`), with no subtraction.

Examples
--------
>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(103, 3))
>>> bm = BlockedMoments([2, 1], blocks=4, work=np.dtype(np.float64))
>>> bm.stage([x[:50, :2], x[:50, 2:]]); bm.stage([x[50:, :2], x[50:, 2:]])
>>> [part.rows for part in bm.parts]
[26, 26, 26, 25]
>>> bool(np.allclose(bm.total().block(0, 1), (x[:, :2] - x[:, :2].mean(0)).T @ (x[:, 2:] - x[:, 2:].mean(0))))
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .inputs import DLRInputError
from .moments import DEFAULT_CHUNK_BYTES, MAX_STAGE_BYTES, BadSegment, Moments
from .scaling import max_abs, new_exponent
from .storage import array_field, check_comoment, int_field, scale_exponents_field

__all__ = ["BlockedMoments", "block_chunk_bytes", "block_prefix"]

_BLOCK_KEY = re.compile(r"block(\d+)_")


def block_prefix(i: int) -> str:
    """The prefix of block ``i``'s arrays in a saved file (``block3_mean``, ...)."""
    return f"block{int(i)}_"


def block_chunk_bytes(q: int, work: np.dtype, blocks: int, chunk_bytes: int = 0) -> int:
    """Staging bytes of each of ``blocks`` blocks of ``q`` columns.

    ``chunk_bytes`` (the estimator's option) is shared by the blocks; the automatic size gives each block
    ``DEFAULT_CHUNK_BYTES / blocks``, but at least ``2 q`` rows (below that a stage's product reads and writes the
    q x q pending Gram more than it reads rows) and at most ``MAX_STAGE_BYTES``.

    Examples
    --------
    >>> block_chunk_bytes(10, np.dtype(np.float64), 16) == 32 * 2**20 // 16
    True
    """
    row = max(int(q), 1) * np.dtype(work).itemsize
    if chunk_bytes:
        return max(int(chunk_bytes) // int(blocks), row)
    return int(min(max(DEFAULT_CHUNK_BYTES // int(blocks), 2 * int(q) * row), MAX_STAGE_BYTES))


class BlockedMoments:
    """Streaming moments of stacked column blocks, kept in ``blocks`` round-robin blocks of rows.

    Parameters
    ----------
    widths, work, exact_block
        As for :class:`~dlrcore.moments.Moments` (the same for every block).
    blocks : int
        Number of blocks B (at least 2).
    chunk_bytes : int
        Staging bytes of each block (:func:`block_chunk_bytes`).

    Examples
    --------
    >>> bm = BlockedMoments([2], blocks=3, work=np.dtype(np.float64))
    >>> bm.stage([np.arange(14.0).reshape(7, 2)])
    >>> [part.rows for part in bm.parts], bm.total().n, [i for i, _ in bm.leave_one_out()]
    ([3, 2, 2], 7, [0, 1, 2])
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        blocks: int,
        work: np.dtype,
        exact_block: int | None = None,
        chunk_bytes: int = 0,
    ) -> None:
        if int(blocks) < 2:
            raise ValueError(f"blocks must be at least 2, got {blocks}")
        self.blocks = int(blocks)
        self.parts = [
            Moments(widths, work=work, exact_block=exact_block, chunk_bytes=chunk_bytes) for _ in range(self.blocks)
        ]

    # ------------------------------------------------------------------ properties
    @property
    def widths(self) -> tuple[int, ...]:
        """Column widths of the stacked blocks of columns."""
        return self.parts[0].widths

    @property
    def work(self) -> np.dtype:
        """Precision of the products (the same in every block)."""
        return self.parts[0].work

    @property
    def rows(self) -> int:
        """Rows accumulated in all blocks (staged ones included): the next row goes to block ``rows mod B``."""
        return sum(part.rows for part in self.parts)

    @property
    def n(self) -> int:
        """Rows accumulated (the same as :attr:`rows`)."""
        return self.rows

    def set_work(self, work: np.dtype) -> None:
        """Switch every block's product precision (staged rows are folded in first)."""
        for part in self.parts:
            part.set_work(work)

    # ------------------------------------------------------------------ staging
    def _may_rescale(self, arrays: Sequence[np.ndarray]) -> bool:
        """Whether staging ``arrays`` may change a block's power-of-two exponent (:mod:`dlrcore.scaling`).

        Raises
        ------
        BadSegment
            For an array holding NaN or Inf (nothing was staged).
        """
        nb = arrays[0].shape[0]
        risky = False
        for i, a in enumerate(arrays):
            if not a.size:
                continue
            amax = max_abs(a)
            if not math.isfinite(amax):
                raise BadSegment(i, (0, nb), overflow=False)
            for part in self.parts:
                e, fixed = int(part.exponents[i]), bool(part.fixed[i])
                risky = risky or new_exponent(amax, e, part.work, fixed=fixed) != e
        return risky

    def stage(self, arrays: Sequence[np.ndarray]) -> None:
        """Add rows given as one 2-D array per column block, row k of the stream to block ``k mod B``, atomically.

        Every array is checked for NaN and Inf before anything is staged. A batch that may change a block's
        exponent is staged with a copy of every block kept (O(B q^2)), put back if a block refuses its rows; other
        batches cannot be refused once they are finite (their scaled centered squares lie far inside the product
        range), and a block's refusal leaves that block as it was in any case.

        Raises
        ------
        BadSegment
            With ``rows`` the whole batch, if a value is NaN or Inf or too large for the products; every block is
            then exactly as before the call.
        """
        nb = arrays[0].shape[0]
        saved = [part.copy() for part in self.parts] if self._may_rescale(arrays) else None
        start, b = self.rows, self.blocks
        try:
            for j in range(min(b, nb)):
                self.parts[(start + j) % b].stage([a[j::b] for a in arrays])
        except BadSegment as bad:
            if saved is not None:
                self.parts = saved
            raise BadSegment(bad.block, (0, nb), bad.overflow) from None

    # ------------------------------------------------------------------ merge, copy, finishing
    def merge(self, other: BlockedMoments) -> None:
        """Add ``other``'s rows as if they had been streamed after this object's own.

        Row k of ``other`` is row ``rows + k`` of the merged stream, so ``other``'s block j joins block
        ``(rows + j) mod B``: the blocks stay balanced (sizes differ by at most one) whatever the merge order, and
        shards smaller than B spread over every block.

        Raises
        ------
        ValueError
            If the numbers of blocks or the widths differ.
        """
        if other.blocks != self.blocks:
            raise ValueError(f"cannot merge statistics in {self.blocks} and {other.blocks} jackknife blocks")
        if other.widths != self.widths:
            raise ValueError(f"cannot merge moments of block widths {self.widths} and {other.widths}")
        if other.work == np.float64:
            self.set_work(np.dtype(np.float64))
        start = self.rows
        for j, part in enumerate(other.parts):
            self.parts[(start + j) % self.blocks].merge(part)

    def copy(self) -> BlockedMoments:
        """Deep copy (staged rows are folded in first)."""
        out = BlockedMoments.__new__(BlockedMoments)
        out.blocks = self.blocks
        out.parts = [part.copy() for part in self.parts]
        return out

    def _empty(self) -> Moments:
        first = self.parts[0]
        return Moments(first.widths, work=first.work, exact_block=first.exact_block, chunk_bytes=first.chunk_bytes)

    def total(self) -> Moments:
        """The moments of all rows: a new :class:`~dlrcore.moments.Moments`, the merge of every block."""
        out = self._empty()
        for part in self.parts:
            out.merge(part)
        return out

    def leave_one_out(self) -> Iterator[tuple[int, Moments]]:
        """``(i, moments of every block but i)`` for i = 0 .. B - 1, each a merge of the other blocks.

        Divide and conquer: the left half's leave-outs all contain the right half, which is merged once for all
        of them (and the other way round), so the B statistics cost about ``B log2 B`` merges and at most
        ``log2 B + 1`` copies of the moments alive at a time. A yielded object may be changed afterwards: use it
        before asking for the next.
        """

        def split(acc: Moments, lo: int, hi: int) -> Iterator[tuple[int, Moments]]:
            if hi - lo == 1:
                yield lo, acc
                return
            mid = (lo + hi) // 2
            left = acc.copy()
            for part in self.parts[mid:hi]:
                left.merge(part)
            yield from split(left, lo, mid)
            del left
            for part in self.parts[lo:mid]:
                acc.merge(part)
            yield from split(acc, mid, hi)

        yield from split(self._empty(), 0, self.blocks)

    # ------------------------------------------------------------------ persistence
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every block's :meth:`~dlrcore.folded_moments.FoldedMoments.state_arrays` under :func:`block_prefix`."""
        out: dict[str, np.ndarray] = {}
        for i, part in enumerate(self.parts):
            out.update({block_prefix(i) + k: v for k, v in part.state_arrays().items()})
        return out

    @classmethod
    def from_state(
        cls,
        data: dict[str, Any],
        path: Any,
        widths: Sequence[int],
        *,
        blocks: int,
        n: int,
        work: np.dtype,
        exact_block: int | None = None,
        chunk_bytes: int = 0,
    ) -> BlockedMoments:
        """Read the blocks written by :meth:`state_arrays`, every field checked: shapes, finiteness, co-moments,
        exponents, and the row counts of round-robin blocks (block i holds ``n // B + (i < n % B)`` rows).

        Raises
        ------
        DLRInputError
            Naming the file, the block and the damaged field.
        """
        out = cls(widths, blocks=blocks, work=work, exact_block=exact_block, chunk_bytes=chunk_bytes)
        q = sum(int(w) for w in widths)
        for i, part in enumerate(out.parts):
            pre = block_prefix(i)
            sub = {k[len(pre):]: v for k, v in data.items() if k.startswith(pre)}
            where = f"{path} (jackknife block {i})"
            rows = int_field(sub, "n", where, least=0)
            want = n // blocks + (1 if i < n % blocks else 0)
            if rows != want:
                raise DLRInputError(
                    f"{where}: damaged file, {rows} rows where round-robin blocks of {n} rows hold {want}"
                )
            mean = array_field(sub, "mean", where, (q,))
            comoment = array_field(sub, "comoment", where, (q, q))
            check_comoment(comoment, "comoment", where)
            part.load_arrays(rows, mean, comoment, scale_exponents_field(sub, where, len(widths)))
        extra = sorted(k for k in data if (m := _BLOCK_KEY.match(k)) and int(m[1]) >= blocks)
        if extra:
            raise DLRInputError(f"{path}: damaged file, fields {extra} belong to no block of {blocks}")
        return out
