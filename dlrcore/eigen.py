"""Symmetric eigen-decompositions and the rank rules built on them, shared by the exact and sketch algebra.

Examples
--------
>>> import numpy as np
>>> ev, _ = eigh_desc(np.diag([1.0, 3.0, 2.0]))
>>> ev.tolist(), rank_cut(ev, 0.5)
([3.0, 2.0, 1.0], 2)
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["EVD_MAX", "effective_rank", "eigen_rank", "eigh_desc", "rank_cut"]


def effective_rank(eigenvalues: np.ndarray, rel_tol: float = 1e-12) -> float:
    """Roy and Vetterli effective rank ``exp(H(s / sum s))`` of the singular values ``s = sqrt(eigenvalues)``.

    Eigenvalues at or below ``rel_tol`` times the largest are rounding noise of a Gram matrix and count as zero
    (their square roots would otherwise add spurious entropy).

    Examples
    --------
    >>> round(effective_rank(np.array([4.0, 4.0, 0.0])), 6)
    2.0
    """
    ev = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    if ev.size:
        ev = np.where(ev > rel_tol * ev.max(), ev, 0.0)
    s = np.sqrt(ev)
    total = s.sum()
    if total <= 0:
        return 0.0
    w = s[s > 0] / total
    return float(np.exp(-(w * np.log(w)).sum()))


def rank_cut(ev_desc: np.ndarray, rel: float) -> int:
    """Number of leading eigenvalues (descending) strictly above ``rel * ev_desc[0]`` and above zero."""
    if ev_desc.size == 0 or not ev_desc[0] > 0:
        return 0
    return int(np.count_nonzero(ev_desc > max(rel * ev_desc[0], 0.0)))


#: Largest order for LAPACK's divide-and-conquer ``syevd``: 1.8x faster than ``syevr`` at 1000 x 1000 here, but its
#: workspace grows as ``2 k^2`` doubles (64 MB at 2048).
EVD_MAX = 2048

def eigh_desc(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    driver = "evd" if a.shape[0] <= EVD_MAX else None
    w, v = scipy.linalg.eigh(a, check_finite=False, driver=driver)
    return w[::-1], v[:, ::-1]


def eigen_rank(m: np.ndarray, rel: float) -> int:
    """Number of eigenvalues of a PSD matrix (upper triangle read) above ``rel`` times the largest: the rule of
    :attr:`dlrcore.Spectrum.feature_rank`, so that a result and a spectrum of the same statistics agree (O(p^3) with
    eigenvalues only: 0.12 s at p = 1024 on two cores, against 0.09 s for a pivoted Cholesky that counted more)."""
    if not m.size:
        return 0
    ev = scipy.linalg.eigh(m, lower=False, eigvals_only=True, check_finite=False, driver="evd")
    top = float(ev[-1])
    return int(np.count_nonzero(ev > rel * top)) if top > 0 else 0
