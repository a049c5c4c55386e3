"""The output span of the literal D_LR: an orthonormal basis of the raw outputs' span from ``Fc^T Fc`` and the
output mean alone, with the rank tolerance that decides it (docs/dlr.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .eigen import eigh_desc, rank_cut
from .inputs import DLRInputError
from .precision import EPS64

__all__ = ["OFFSET_RATIO", "OutputSpan", "default_rtol", "offset_svd", "output_span", "rank_resolution", "resolve_rtol"]


def default_rtol(C: int, data_eps: float) -> float:
    """Default relative singular-value tolerance for the output span.

    The output Gram is accumulated from float64 products, so its own rounding puts spurious singular values near
    ``sqrt(C * eps64) * sigma_1``; data stored in a lower precision (``data_eps``, e.g. float32's 1.2e-7) carry
    rounding noise near ``sqrt(C) * data_eps * sigma_1``. The default sits ten times above the larger of the two,
    capped at 1e-2.

    Examples
    --------
    >>> default_rtol(10, np.finfo(np.float64).eps) < 1e-6
    True
    """
    C = max(int(C), 1)
    return float(min(1e-2, max(rank_resolution(C), 10.0 * math.sqrt(C) * data_eps)))


def rank_resolution(C: int) -> float:
    """Smallest relative singular value of the outputs that the Gram route can tell from rounding.

    Eigenvalues of a float64 output Gram carry errors near ``C * eps64 * lam_1``, so singular values below
    about ``sqrt(C * eps64) * sigma_1`` cannot be resolved; a smaller ``rtol`` is raised to ten times that
    (with a warning).
    """
    return float(10.0 * math.sqrt(max(int(C), 1) * EPS64))


def resolve_rtol(rtol: float | None, C: int, data_eps: float) -> tuple[float, list[str]]:
    if rtol is None:
        return default_rtol(C, data_eps), []
    floor = rank_resolution(C)
    if rtol < floor:
        return floor, [
            f"rtol={rtol:.3g} is below the resolution {floor:.3g} of the output Gram (10 sqrt(C eps)); "
            f"singular values that small are rounding noise, so rtol={floor:.3g} was used"
        ]
    return float(rtol), []


#: The raw output singular values come from ``eigh(diag(lc) + w w^T)`` while ``|w|^2`` (the offset's share) is at
#: most this many times the largest centered eigenvalue, else from the SVD of ``[diag(sqrt(lc)); w^T]``.
OFFSET_RATIO = 16.0


def offset_svd(
    lc: np.ndarray, w: np.ndarray, *, rtol: float = 0.0, max_rel_err: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (descending) and right singular vectors (rows) of ``B = [diag(sqrt(lc)); w^T]``.

    ``B^T B = diag(lc) + w w^T``; its eigendecomposition takes a third of the time of the SVD of B at C = 1000.
    Its eigenvalue errors are near ``delta = 4 C eps64 sigma_1^2``, so a dominant offset ``|w|^2 >> lc[0]``, which
    is squared into ``sigma_1^2``, costs relative accuracy on small singular values, and a singular value within
    that error of the cut ``rtol sigma_1`` could fall on the wrong side. The product route is therefore taken

    * while ``|w|^2 <= OFFSET_RATIO lc[0]``: its errors are then at most 17x those the centered eigenvalues
      ``lc`` carry anyway (the exact path's criterion), or
    * with ``max_rel_err > 0`` (the sketch estimators) when, a posteriori, ``delta`` is at most ``max_rel_err``
      times the smallest kept eigenvalue and no eigenvalue lies within ``1000 delta`` of the cut.

    Otherwise the SVD of ``B`` runs.
    """
    C = lc.shape[0]
    if C and lc[0] > 0:
        small_offset = float(w @ w) <= OFFSET_RATIO * lc[0]
        if small_offset or max_rel_err > 0:
            ev, v = eigh_desc(np.diag(lc) + np.outer(w, w))
            ev = np.clip(ev, 0.0, None)
            if small_offset or _product_route_clear(ev, rtol, max_rel_err):
                return np.sqrt(ev), v.T
    b = np.vstack([np.sqrt(lc)[:, None] * np.eye(C), w[None, :]])
    _, sig, rt = scipy.linalg.svd(b, full_matrices=False, check_finite=False)
    return sig, rt


def _product_route_clear(ev: np.ndarray, rtol: float, max_rel_err: float) -> bool:
    """The a-posteriori test of :func:`offset_svd` on the eigenvalues (descending) of ``B^T B``."""
    delta = 4.0 * ev.size * EPS64 * ev[0]
    cut = rtol * rtol * ev[0]
    kept = ev[ev > cut]
    if kept.size == 0 or delta > max_rel_err * kept[-1]:
        return False
    return not bool(np.any(np.abs(ev - cut) <= 1e3 * delta))


@dataclass(frozen=True)
class OutputSpan:
    """The output side of D_LR, from ``Fc^T Fc`` and the output mean alone.

    ``basis`` (C x r) maps centered cross moments to ``Q^T Phic = basis^T (Fc^T Phic)``, where Q is an orthonormal
    basis of the span of the raw outputs; ``constant_share`` is ``a = ||Q^T 1||^2 / n`` and ``norm_l2`` is
    ``||L||_F^2 = ||Q^T H Q||_F^2``.
    """

    basis: np.ndarray
    rank: int
    constant_share: float
    norm_l2: float
    centered_ev: np.ndarray
    centered_vecs: np.ndarray
    C: int
    rtol: float
    notes: list[str]


def output_span(
    *,
    n: int,
    m_ff: np.ndarray,
    mean_f: np.ndarray,
    rtol: float | None,
    data_eps: float,
    upper: bool = False,
    max_rel_err: float = 0.0,
    resolved: bool = False,
) -> OutputSpan:
    """Orthonormal basis of the raw output span in the coordinates of the centered output moments.

    Parameters
    ----------
    n : int
        Samples.
    m_ff : ndarray
        ``Fc^T Fc`` (C x C, float64); with ``upper`` only its upper triangle is read.
    mean_f : ndarray
        Column means of the raw outputs.
    rtol, data_eps
        As in :func:`dlr_from_moments`.
    upper : bool
        Only the upper triangle of ``m_ff`` is valid (strict lower triangle zero).
    resolved : bool
        ``rtol`` was already resolved by the caller (for another width): use it as it is.
    max_rel_err : float
        Relative error of the kept output eigenvalues that the caller tolerates (the sketch estimators pass 1 % of
        their error floor); when positive, the faster ``B^T B`` route of :func:`offset_svd` is also taken under a
        dominant offset whenever its own error bound is that small and no singular value is near the cut.

    Returns
    -------
    OutputSpan
    """
    C = m_ff.shape[0]
    rtol, notes = (float(rtol), []) if resolved and rtol is not None else resolve_rtol(rtol, C, data_eps)
    if upper:
        m_ff = m_ff + np.triu(m_ff, 1).T
    # F = [Uc, 1/sqrt(n)] B with Fc = Uc diag(sqrt(lc)) Vc^T and B = [diag(sqrt(lc)) Vc^T; sqrt(n) mean_f^T]: the
    # columns of [Uc, 1/sqrt(n)] are orthonormal (Uc is centered), so F and B share singular values and right
    # singular vectors. The small B (see offset_svd) avoids squaring a large output offset into the raw Gram.
    lc, vc = eigh_desc(m_ff)
    lc = np.clip(lc, 0.0, None)
    sig, rt = offset_svd(lc, math.sqrt(n) * (vc.T @ mean_f), rtol=rtol, max_rel_err=max_rel_err)
    r = rank_cut(sig, rtol)
    if r == 0:
        raise DLRInputError("outputs are all zero (rank 0): there is no output span to compare the features with")
    rr = vc @ rt[:r].T / sig[:r]  # R_r diag(sig_r)^-1 in the original output coordinates, C x r
    q = math.sqrt(n) * (mean_f @ rr)  # Q^T 1 / sqrt(n)
    # ||L||_F = ||Q^T H Q||_F with Q^T H Q = rr^T (Fc^T Fc) rr: no cancellation as a -> 1
    qhq = rr.T @ m_ff @ rr
    return OutputSpan(
        basis=rr,
        rank=r,
        constant_share=float(q @ q),
        norm_l2=float(np.einsum("ij,ij->", qhq, qhq)),
        centered_ev=lc,
        centered_vecs=vc,
        C=C,
        rtol=rtol,
        notes=notes,
    )
