"""Chan's pairwise update, the one merge rule behind every mergeable statistic of dlrcore.

Two sets of rows with counts ``n_a``, ``n_b``, means ``mu_a``, ``mu_b`` and centered comoments ``M_a``, ``M_b``
combine into ``n = n_a + n_b``, ``mu = mu_a + (n_b / n) d`` and ``M = M_a + M_b + (n_a n_b / n) d d^T`` with
``d = mu_b - mu_a`` (Chan, Golub and LeVeque, 1979). :class:`~dlrcore.moments.Moments` (host, BLAS rank-one
updates of an upper triangle) and :class:`~dlrcore.accumulate.Accumulator` (any array namespace, sketched
products ``d (Omega^T d)^T``) both take their count, weight, mean shift and new mean from :func:`chan_step`.

Examples
--------
>>> import numpy as np
>>> step = chan_step(2, np.array([0.0]), 2, np.array([2.0]))
>>> step.n, step.weight, step.share, step.delta, step.mean
(4, 1.0, 0.5, array([2.]), array([1.]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ChanStep", "chan_step"]


@dataclass(frozen=True)
class ChanStep:
    """One pairwise merge: the combined count ``n``, the weight ``n_a n_b / n`` of the outer product of the mean
    shift ``delta = mu_b - mu_a``, the share ``n_b / n`` of the second set, and the combined mean."""

    n: int
    weight: float
    share: float
    delta: Any
    mean: Any

    def also(self, mean_a: Any, mean_b: Any) -> tuple[Any, Any]:
        """``(d, mu)`` for another pair of means of the same rows (a second block merged with the same counts)."""
        d = mean_b - mean_a
        return d, mean_a + d * self.share


def chan_step(n_a: int, mean_a: Any, n_b: int, mean_b: Any) -> ChanStep:
    """The count, weight, mean shift and mean of merging ``(n_a, mean_a)`` with ``(n_b, mean_b)``.

    Works on NumPy arrays and on arrays of any array-API namespace (the arithmetic is ``-``, ``+`` and ``*`` by
    a Python float). ``n_a = 0`` gives weight 0 and the second mean.

    Raises
    ------
    ValueError
        If both sets are empty.
    """
    n = int(n_a) + int(n_b)
    if n == 0:
        raise ValueError("cannot merge two empty sets of rows")
    share = n_b / n
    d = mean_b - mean_a
    return ChanStep(n=n, weight=n_a * share, share=share, delta=d, mean=mean_a + d * share)
