"""Exact D_LR from sufficient statistics: the algebra of ``DLR-MATH.md`` that never forms an n x n matrix.

Two entry points share one finishing step:

* :func:`dlr_from_moments` takes the centered second moments of features and outputs
  (``Phic^T Phic``, ``Fc^T Phic``, ``Fc^T Fc``) plus the output mean;
* :func:`dlr_from_weight_moments` takes only the feature moments and the last layer's weight and bias, for
  output widths (language-model heads) where the outputs or any C x C matrix are too large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .inputs import DLRInputError
from .result import DLRResult

__all__ = [
    "OutputSpan",
    "default_rtol",
    "dlr_from_moments",
    "dlr_from_weight_moments",
    "effective_rank",
    "output_span",
]

_EPS64 = float(np.finfo(np.float64).eps)

#: The exact path reports the feature rank (an O(p^3) factorisation) only up to this width.
FEATURE_RANK_MAX_P = 1024

#: Anisotropy warning threshold: effective rank of the centered outputs below this share of the kept directions.
ANISOTROPY_RATIO = 0.5


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
    return float(10.0 * math.sqrt(max(int(C), 1) * _EPS64))


def _resolve_rtol(rtol: float | None, C: int, data_eps: float) -> tuple[float, list[str]]:
    if rtol is None:
        return default_rtol(C, data_eps), []
    floor = rank_resolution(C)
    if rtol < floor:
        return floor, [
            f"rtol={rtol:.3g} is below the resolution {floor:.3g} of the output Gram (10 sqrt(C eps)); "
            f"singular values that small are rounding noise, so rtol={floor:.3g} was used"
        ]
    return float(rtol), []


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


def _rank_cut(ev_desc: np.ndarray, rel: float) -> int:
    """Number of leading eigenvalues (descending) strictly above ``rel * ev_desc[0]`` and above zero."""
    if ev_desc.size == 0 or not ev_desc[0] > 0:
        return 0
    return int(np.count_nonzero(ev_desc > max(rel * ev_desc[0], 0.0)))


#: Largest order for LAPACK's divide-and-conquer ``syevd``: 1.8x faster than ``syevr`` at 1000 x 1000 here, but its
#: workspace grows as ``2 k^2`` doubles (64 MB at 2048).
_EVD_MAX = 2048

#: The raw output singular values come from ``eigh(diag(lc) + w w^T)`` while ``|w|^2`` (the offset's share) is at
#: most this many times the largest centered eigenvalue, else from the SVD of ``[diag(sqrt(lc)); w^T]``.
_OFFSET_RATIO = 16.0


def _eigh_desc(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    driver = "evd" if a.shape[0] <= _EVD_MAX else None
    w, v = scipy.linalg.eigh(a, check_finite=False, driver=driver)
    return w[::-1], v[:, ::-1]


def _offset_svd(
    lc: np.ndarray, w: np.ndarray, *, rtol: float = 0.0, max_rel_err: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (descending) and right singular vectors (rows) of ``B = [diag(sqrt(lc)); w^T]``.

    ``B^T B = diag(lc) + w w^T``; its eigendecomposition takes a third of the time of the SVD of B at C = 1000.
    Its eigenvalue errors are near ``delta = 4 C eps64 sigma_1^2``, so a dominant offset ``|w|^2 >> lc[0]``, which
    is squared into ``sigma_1^2``, costs relative accuracy on small singular values, and a singular value within
    that error of the cut ``rtol sigma_1`` could fall on the wrong side. The product route is therefore taken

    * while ``|w|^2 <= _OFFSET_RATIO lc[0]``: its errors are then at most 17x those the centered eigenvalues
      ``lc`` carry anyway (the exact path's criterion), or
    * with ``max_rel_err > 0`` (the sketch estimators) when, a posteriori, ``delta`` is at most ``max_rel_err``
      times the smallest kept eigenvalue and no eigenvalue lies within ``1000 delta`` of the cut.

    Otherwise the SVD of ``B`` runs.
    """
    C = lc.shape[0]
    if C and lc[0] > 0:
        small_offset = float(w @ w) <= _OFFSET_RATIO * lc[0]
        if small_offset or max_rel_err > 0:
            ev, v = _eigh_desc(np.diag(lc) + np.outer(w, w))
            ev = np.clip(ev, 0.0, None)
            if small_offset or _product_route_clear(ev, rtol, max_rel_err):
                return np.sqrt(ev), v.T
    b = np.vstack([np.sqrt(lc)[:, None] * np.eye(C), w[None, :]])
    _, sig, rt = scipy.linalg.svd(b, full_matrices=False, check_finite=False)
    return sig, rt


def _product_route_clear(ev: np.ndarray, rtol: float, max_rel_err: float) -> bool:
    """The a-posteriori test of :func:`_offset_svd` on the eigenvalues (descending) of ``B^T B``."""
    delta = 4.0 * ev.size * _EPS64 * ev[0]
    cut = rtol * rtol * ev[0]
    kept = ev[ev > cut]
    if kept.size == 0 or delta > max_rel_err * kept[-1]:
        return False
    return not bool(np.any(np.abs(ev - cut) <= 1e3 * delta))


def _finish(
    *,
    inner: float,
    norm_k: float,
    r: int,
    a: float,
    norm_l2: float,
    centered_output_ev: np.ndarray,
    n: int,
    p: int,
    C: int,
    method: str,
    rtol: float,
    precision: str,
    feature_rank: int | None,
    notes: list[str] | None = None,
    extra: dict | None = None,
) -> DLRResult:
    """Combine <K, L>, ||K|| and (r, a) into D_LR and attach diagnostics and warnings."""
    if not (math.isfinite(norm_k) and math.isfinite(inner)):
        raise DLRInputError(
            "features: the centered feature Gram overflows float64 (values too large); rescale the features "
            "(D_LR is scale invariant)"
        )
    if not norm_k > 0:
        raise DLRInputError("features are constant across samples: the centered feature kernel is zero")
    a = min(max(a, 0.0), 1.0)
    if not norm_l2 > 1e-24 * max(r, 1):
        raise DLRInputError(
            "outputs are constant across samples: their span holds only the constant function, so the "
            "centered projection L is zero and D_LR is undefined"
        )
    alignment = inner / (norm_k * math.sqrt(norm_l2))
    value = min(max(1.0 - alignment, 0.0), 1.0)
    erank = effective_rank(centered_output_ev)
    warnings: list[str] = list(notes or [])
    kept = r - a
    if kept >= 2 and erank < ANISOTROPY_RATIO * kept:
        warnings.append(
            f"anisotropic outputs: the centered outputs have effective rank {erank:.2f} against {kept:.2f} "
            "kept directions; D_LR weighs every kept direction equally, which is meaningful for isotropic "
            "targets (MSE on one-hot labels) but can move the opposite way for cross-entropy logits. "
            "Consider a larger rtol (e.g. 0.1) to keep only the strong output directions."
        )
    return DLRResult(
        value=float(value),
        n=int(n),
        p=int(p),
        C=int(C),
        output_rank=int(r),
        constant_share=float(a),
        method=method,
        rtol=float(rtol),
        precision=precision,
        feature_rank=None if feature_rank is None else int(feature_rank),
        output_effective_rank=erank,
        alignment=float(alignment),
        warnings=tuple(warnings),
        **(extra or {}),
    )


def _check_common(n: int, rtol: float | None) -> None:
    if n < 2:
        raise DLRInputError(f"D_LR needs at least 2 samples, got n = {n}")
    if rtol is not None and not (0.0 <= rtol < 1.0):
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")


def _pivoted_rank(m: np.ndarray, rel: float) -> int:
    """Numerical rank of a PSD matrix by pivoted Cholesky (LAPACK ``?pstrf``): O(p^2 rank), cheaper than eigh."""
    d = np.diag(m)
    top = float(d.max()) if d.size else 0.0
    if not top > 0:
        return 0
    _, _, rank, info = scipy.linalg.lapack.dpstrf(m, tol=rel * top, lower=0)
    if info < 0:
        raise RuntimeError(f"dpstrf failed with info={info}")
    return int(rank)


def _feature_rank(m_pp: np.ndarray, rel: float) -> tuple[int, np.ndarray, np.ndarray]:
    s, v = _eigh_desc(m_pp)
    return _rank_cut(s, rel), s, v


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
    max_rel_err : float
        Relative error of the kept output eigenvalues that the caller tolerates (the sketch estimators pass 1 % of
        their error floor); when positive, the faster ``B^T B`` route of :func:`_offset_svd` is also taken under a
        dominant offset whenever its own error bound is that small and no singular value is near the cut.

    Returns
    -------
    OutputSpan
    """
    C = m_ff.shape[0]
    rtol, notes = _resolve_rtol(rtol, C, data_eps)
    if upper:
        m_ff = m_ff + np.triu(m_ff, 1).T
    # F = [Uc, 1/sqrt(n)] B with Fc = Uc diag(sqrt(lc)) Vc^T and B = [diag(sqrt(lc)) Vc^T; sqrt(n) mean_f^T]: the
    # columns of [Uc, 1/sqrt(n)] are orthonormal (Uc is centered), so F and B share singular values and right
    # singular vectors. The small B (see _offset_svd) avoids squaring a large output offset into the raw Gram.
    lc, vc = _eigh_desc(m_ff)
    lc = np.clip(lc, 0.0, None)
    sig, rt = _offset_svd(lc, math.sqrt(n) * (vc.T @ mean_f), rtol=rtol, max_rel_err=max_rel_err)
    r = _rank_cut(sig, rtol)
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
        C=C,
        rtol=rtol,
        notes=notes,
    )


def dlr_from_moments(
    *,
    n: int,
    m_pp: np.ndarray,
    m_fp: np.ndarray,
    m_ff: np.ndarray,
    mean_f: np.ndarray,
    rtol: float | None,
    data_eps: float,
    feature_rel_tol: float,
    precision: str,
    upper: bool = False,
) -> DLRResult:
    """Exact D_LR from centered moments.

    Parameters
    ----------
    n : int
        Number of samples.
    m_pp, m_fp, m_ff : ndarray
        ``Phic^T Phic`` (p x p), ``Fc^T Phic`` (C x p) and ``Fc^T Fc`` (C x C), float64, symmetric where square.
    mean_f : ndarray
        Column means of the raw outputs (C,).
    rtol : float or None
        Relative tolerance on the singular values of the raw outputs; None for :func:`default_rtol`.
    data_eps : float
        Machine epsilon of the lowest precision the outputs arrived in (used for the default ``rtol``).
    feature_rel_tol : float
        Relative eigenvalue tolerance for the reported feature rank.
    precision : str
        Precision of the products, reported in the result.
    upper : bool
        If true, only the upper triangles of ``m_pp`` and ``m_ff`` are valid and their strict lower triangles
        are zero (the layout :class:`~dlrcore.DLRStats` accumulates), which saves forming the full matrices.

    Returns
    -------
    DLRResult
        ``feature_rank`` is computed (pivoted Cholesky) only for p <= ``FEATURE_RANK_MAX_P``, else None.
    """
    _check_common(n, rtol)
    p = m_pp.shape[0]
    span = output_span(n=n, m_ff=m_ff, mean_f=mean_f, rtol=rtol, data_eps=data_eps, upper=upper)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by _finish
        t = span.basis.T @ m_fp  # Q^T Phic, r x p
        inner = float(np.einsum("ij,ij->", t, t))
        sq = float(np.einsum("ij,ij->", m_pp, m_pp))
        if upper:  # off-diagonal entries count twice
            d = np.diagonal(m_pp)
            sq = 2.0 * sq - float(d @ d)
    norm_k = math.sqrt(sq) if sq >= 0 else float("nan") if math.isnan(sq) else 0.0
    feature_rank = _pivoted_rank(m_pp, feature_rel_tol) if p <= FEATURE_RANK_MAX_P else None
    return _finish(
        inner=inner,
        norm_k=norm_k,
        r=span.rank,
        a=span.constant_share,
        norm_l2=span.norm_l2,
        centered_output_ev=span.centered_ev,
        n=n,
        p=p,
        C=span.C,
        method="exact",
        rtol=span.rtol,
        precision=precision,
        feature_rank=feature_rank,
        notes=span.notes,
    )


def dlr_from_weight_moments(
    *,
    n: int,
    mean_phi: np.ndarray,
    m_pp: np.ndarray,
    wtw: np.ndarray,
    wtb: np.ndarray,
    btb: float,
    C: int,
    rtol: float | None,
    data_eps: float,
    feature_rel_tol: float,
    precision: str,
) -> DLRResult:
    """Exact D_LR for outputs ``F = Phi W^T + 1 b^T`` from feature moments and ``W^T W``, ``W^T b``, ``b^T b``.

    The outputs factor as ``F = A B`` with ``A = [Phic, 1]`` and ``B = [W^T; nu^T]``, ``nu = W mu + b``. As
    ``A^T A = diag(Phic^T Phic, n)``, whitening ``A`` with ``R = diag(sqrt(s) V^T, sqrt(n))`` (``Phic^T Phic =
    V diag(s) V^T``) makes ``span(F)`` the image of ``range(R B)`` under an isometry, and ``R B B^T R^T`` is a
    (k + 1) x (k + 1) matrix built from ``W^T W``: no n x C or C x C matrix is ever formed.

    Parameters
    ----------
    n : int
        Number of samples.
    mean_phi, m_pp : ndarray
        Feature mean (p,) and centered Gram ``Phic^T Phic`` (p x p).
    wtw, wtb, btb : ndarray, ndarray, float
        ``W^T W`` (p x p), ``W^T b`` (p,) and ``b^T b``.
    C : int
        Output width (rows of ``W``).
    rtol, data_eps, feature_rel_tol, precision
        As in :func:`dlr_from_moments`.

    Returns
    -------
    DLRResult
    """
    _check_common(n, rtol)
    p = m_pp.shape[0]
    rtol, notes = _resolve_rtol(rtol, min(C, p + 1), data_eps)
    k, s, v = _feature_rank(m_pp, feature_rel_tol)
    sk = np.sqrt(s[:k])
    vk = v[:, :k]
    wt_nu = wtw @ mean_phi + wtb  # W^T nu
    nu_nu = float(mean_phi @ wtw @ mean_phi + 2.0 * mean_phi @ wtb + btb)
    e = np.empty((k + 1, k + 1))
    e11 = (vk.T @ wtw @ vk) * np.outer(sk, sk)
    e[:k, :k] = e11
    e[:k, k] = sk * (vk.T @ wt_nu) * math.sqrt(n)
    e[k, :k] = e[:k, k]
    e[k, k] = n * nu_nu
    ev, u = _eigh_desc(e)
    r = _rank_cut(ev, rtol * rtol)
    if r == 0:
        raise DLRInputError("outputs are all zero (rank 0): weight and bias give no output span")
    ur = u[:, :r]
    inner = float(((ur[:k, :] ** 2) * s[:k, None]).sum())  # ||U_r^T diag(sqrt s) V_k^T||_F^2
    a = float((ur[k, :] ** 2).sum())
    # ||L||_F = ||Q^T H Q||_F; H keeps the k feature coordinates and removes the constant one
    qhq = ur[:k, :].T @ ur[:k, :]
    norm_l2 = float(np.einsum("ij,ij->", qhq, qhq))
    norm_k = float(np.sqrt((np.clip(s, 0.0, None) ** 2).sum()))
    centered_ev = scipy.linalg.eigvalsh(e11, check_finite=False) if k else np.zeros(0)
    return _finish(
        inner=inner,
        norm_k=norm_k,
        r=r,
        a=a,
        norm_l2=norm_l2,
        centered_output_ev=centered_ev,
        n=n,
        p=p,
        C=C,
        method="exact-weights",
        rtol=rtol,
        precision=precision,
        feature_rank=k,
        notes=notes,
    )
