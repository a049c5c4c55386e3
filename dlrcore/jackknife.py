"""Sampling error bars by the block jackknife: the formula, its memory cost, and the leave-one-block-out loop.

With ``blocks=B`` the estimators keep their statistics in B round-robin blocks of rows
(:class:`~dlrcore.blocked_moments.BlockedMoments`). A statistic ``theta`` (D_LR, D_half, CKA, NC1) computed from
all rows is ``theta_full``; computed with block i left out it is ``theta_(i)``. With ``theta_bar`` their mean,

    SE   = sqrt((B - 1) / B * sum_i (theta_(i) - theta_bar)^2),
    bias = (B - 1) (theta_bar - theta_full),

and the bias-corrected estimate is ``theta_full - bias`` (Quenouille, Tukey; the delete-a-group jackknife of
Efron and Tibshirani, "An Introduction to the Bootstrap", 1993, chapter 11). docs/uncertainty.md explains how to
read them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import method_choice
from .blocked_moments import BlockedMoments, block_chunk_bytes
from .inputs import DLRInputError
from .moments import Moments

__all__ = [
    "Jackknife",
    "check_jackknife_memory",
    "check_same_blocks",
    "jackknife",
    "jackknife_memory_bytes",
    "leave_one_block_out",
]


@dataclass(frozen=True)
class Jackknife:
    """The block jackknife of one statistic.

    Attributes
    ----------
    value : float
        The statistic of all rows, ``theta_full``.
    stderr : float
        Jackknife standard error.
    bias : float
        Jackknife estimate of the bias of ``value``, ``(B - 1)(theta_bar - theta_full)``.
    blocks : int
        Number of blocks B.
    """

    value: float
    stderr: float
    bias: float
    blocks: int

    @property
    def corrected(self) -> float:
        """The bias-corrected estimate ``value - bias``."""
        return self.value - self.bias


def jackknife(full: float, leave_outs: Sequence[float] | np.ndarray) -> Jackknife:
    """Standard error and bias of a statistic from its leave-one-block-out values.

    Parameters
    ----------
    full : float
        The statistic of all rows.
    leave_outs : sequence of float
        The statistic with each of the B blocks left out in turn (B >= 2).

    Returns
    -------
    Jackknife

    Raises
    ------
    ValueError
        For fewer than two values, or values that are not finite.

    Examples
    --------
    The jackknife of a mean with one row per block is the textbook standard error ``s / sqrt(n)``, with no bias:

    >>> import numpy as np
    >>> x = np.array([1.0, 2.0, 4.0, 7.0])
    >>> loo = [np.delete(x, i).mean() for i in range(4)]
    >>> jk = jackknife(x.mean(), loo)
    >>> bool(np.isclose(jk.stderr, x.std(ddof=1) / 2)), abs(jk.bias) < 1e-12
    (True, True)
    """
    t = np.asarray(leave_outs, dtype=np.float64).reshape(-1)
    b = t.size
    if b < 2:
        raise ValueError(f"the jackknife needs at least 2 leave-one-out values, got {b}")
    if not (np.isfinite(t).all() and math.isfinite(full)):
        raise ValueError("the jackknife needs finite values")
    bar = float(t.mean())
    dev = t - bar
    stderr = math.sqrt((b - 1) / b * float(dev @ dev))
    return Jackknife(value=float(full), stderr=stderr, bias=(b - 1) * (bar - float(full)), blocks=b)


def jackknife_memory_bytes(widths: Sequence[int], blocks: int, itemsize: int = 8, chunk_bytes: int = 0) -> int:
    """Peak bytes of statistics kept in ``blocks`` jackknife blocks of stacked columns of ``widths``.

    Each of the B blocks holds the float64 co-moments (8 q^2 bytes for q = sum(widths) columns), a pending Gram in
    the product precision (``itemsize`` q^2) and its staging buffer
    (:func:`~dlrcore.blocked_moments.block_chunk_bytes`); a batch that changes a block's power-of-two scale is
    staged with a copy of every block's co-moments kept (another 8 q^2 each). In all about
    ``B (16 + itemsize) q^2`` bytes plus staging: B times the statistics without blocks.

    Examples
    --------
    >>> jackknife_memory_bytes([1000, 10], 10) > 10 * 8 * 1010**2
    True
    """
    q = sum(int(w) for w in widths)
    work = np.dtype(np.float32 if itemsize <= 4 else np.float64)
    stage = block_chunk_bytes(q, work, blocks, chunk_bytes)
    return int(blocks) * ((16 + work.itemsize) * q * q + stage)


def check_jackknife_memory(widths: Sequence[int], blocks: int, itemsize: int = 8, chunk_bytes: int = 0) -> None:
    """Refuse jackknife blocks whose statistics would take more than half of the memory available now.

    Raises
    ------
    DLRInputError
        Naming the bytes needed and available, and what to do instead.

    Examples
    --------
    >>> check_jackknife_memory([16, 4, 0], 10)  # a few MiB: fits anywhere
    """
    need = jackknife_memory_bytes(widths, blocks, itemsize, chunk_bytes)
    avail = method_choice.available_memory()
    if need > avail // 2:
        q = sum(int(w) for w in widths)
        raise DLRInputError(
            f"blocks={blocks}: the jackknife keeps {blocks} copies of the statistics of {q} columns, about "
            f"{need:,} bytes ({need / 2**30:.2f} GiB) with their staging, more than half of the {avail:,} bytes "
            f"({avail / 2**30:.2f} GiB) of memory available; use fewer blocks, or blocks=None for no error bars"
        )


def check_same_blocks(mine: int | None, theirs: int | None, what: str = "statistics") -> None:
    """Refuse to merge statistics kept in different numbers of jackknife blocks (or with and without blocks).

    Raises
    ------
    DLRInputError
        Naming both numbers.
    """
    if mine == theirs:
        return
    if mine is None or theirs is None:
        raise DLRInputError(
            f"cannot merge {what} with jackknife blocks (blocks={mine or theirs}) and {what} without them: build "
            "both with the same blocks="
        )
    raise DLRInputError(f"cannot merge {what} in different numbers of jackknife blocks: {mine} vs {theirs}")


def leave_one_block_out(
    blocked: BlockedMoments, full: Sequence[float], statistic: Callable[[Moments], Sequence[float]]
) -> tuple[list[Jackknife] | None, str]:
    """The jackknife of several statistics computed by ``statistic`` from moments, all with the same leave-outs.

    Parameters
    ----------
    blocked : BlockedMoments
        The blocked statistics.
    full : sequence of float
        The statistics of all rows.
    statistic : callable
        Maps the moments of every block but one to the statistics, in the order of ``full``.

    Returns
    -------
    (list of Jackknife, "") or (None, reason)
        No jackknife when a block is empty (fewer rows than blocks) or a statistic is undefined or not finite with
        a block left out (for example constant outputs in the remaining rows); ``reason`` then says why.

    Examples
    --------
    The mean of the first column, one row per block:

    >>> x = np.arange(5.0)[:, None]
    >>> bm = BlockedMoments([1], blocks=5, work=np.dtype(np.float64))
    >>> bm.stage([x])
    >>> (jk,), why = leave_one_block_out(bm, [x.mean()], lambda mo: [mo.block_mean(0)[0]])
    >>> bool(np.isclose(jk.stderr, x.std(ddof=1) / np.sqrt(5))), why
    (True, '')
    """
    b, n = blocked.blocks, blocked.rows
    if n < b:
        return None, f"jackknife: no standard error, {n} samples do not fill {b} blocks"
    values: list[list[float]] = []
    try:
        for _, mo in blocked.leave_one_out():
            values.append([float(v) for v in statistic(mo)])
    except DLRInputError as exc:
        left_out = len(values)  # the blocks come in order
        return None, f"jackknife: no standard error, with block {left_out} left out: {str(exc).splitlines()[0]}"
    table = np.asarray(values, dtype=np.float64).reshape(b, len(full))
    if not (np.isfinite(table).all() and np.isfinite(np.asarray(full, dtype=np.float64)).all()):
        return None, "jackknife: no standard error, a leave-one-block-out value is not finite"
    return [jackknife(f, table[:, k]) for k, f in enumerate(full)], ""
