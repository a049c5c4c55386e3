"""Exact D_LR from sufficient statistics: the algebra of ``docs/dlr.md`` that never forms an n x n matrix.

Two output kernels are computed from the same statistics (``docs/output-kernel.md``):

* ``"span"``, the paper's literal D_LR: ``L = H P_F H``, the centered projection onto the span of the raw outputs
  (needs a rank tolerance ``rtol``);
* ``"sqrt"``, D_half: ``L = (Fc Fc^T)^(1/2)``, which weighs each centered output direction by its strength and
  needs no tolerance beyond the rounding floor (:func:`sqrt_kernel`).

Two entry points share one finishing step:

* :func:`dlr_from_moments` takes the centered second moments of features and outputs
  (``Phic^T Phic``, ``Fc^T Phic``, ``Fc^T Fc``) plus the output mean;
* :func:`dlr_from_weight_moments` takes only the feature moments and the last layer's weight and bias, for
  output widths (language-model heads) where the outputs or any C x C matrix are too large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .eigen import effective_rank, eigen_rank, eigh_desc, rank_cut
from .inputs import DLRInputError
from .output_kernels import (
    CENTER_LOGITS,
    CENTERED_ERROR_WARN,
    OUTPUT_KERNELS,
    KernelTerms,
    SqrtKernel,
    check_center_logits,
    check_centered_trace,
    check_centering,
    check_output_kernel,
    class_centering,
    sqrt_kernel,
    sqrt_tolerance,
)
from .output_span import OutputSpan, default_rtol, output_span, rank_resolution, resolve_rtol
from .precision import EPS64
from .result import DLRResult

__all__ = [
    "CENTER_LOGITS",
    "OUTPUT_KERNELS",
    "OutputSpan",
    "SqrtKernel",
    "check_center_logits",
    "check_output_kernel",
    "class_centering",
    "default_rtol",
    "dlr_from_moments",
    "dlr_from_weight_moments",
    "effective_rank",
    "output_span",
    "sqrt_kernel",
    "sqrt_tolerance",
]


#: The exact path reports the feature rank (an O(p^3) factorisation) only up to this width.
FEATURE_RANK_MAX_P = 1024

#: Samples per feature direction from which D_LR and D_half are settled to 0.02 in every setting of
#: ``examples/sample_size.py`` (synthetic isotropic and decaying spectra, p = 16 to 256, and a trained network);
#: results warn below it (docs/uncertainty.md, "How many samples").
SAMPLES_PER_FEATURE = 10

#: Anisotropy warning threshold: effective rank of the centered outputs below this share of the kept directions.
ANISOTROPY_RATIO = 0.5

#: The literal D_LR reading more than this above D_half earns a warning that names D_half.
DISAGREEMENT = 0.1

#: D_half reads low for any readout once the outputs span a large share of the feature directions (random readouts
#: of untrained ReLU features, p = 256, score 0.39 at C = p / 16, 0.22 at C = p / 4 and 0.18 at C = p / 2;
#: docs/output-kernel.md): above this share of the feature rank (or p) a D_half reading earns a warning pointing to
#: the random-readout baseline.
WIDE_OUTPUT_RATIO = 0.25


def _alignment(terms: KernelTerms, norm_k: float) -> float:
    return terms.inner / (norm_k * math.sqrt(terms.norm_l2))


def finish_result(
    *,
    span: KernelTerms,
    half: KernelTerms,
    norm_k: float,
    r: int,
    a: float,
    sqrt: SqrtKernel,
    output_kernel: str,
    centered_output_ev: np.ndarray,
    n: int,
    p: int,
    C: int,
    method: str,
    rtol: float,
    precision: str,
    feature_rank: int | None,
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    features_in_outputs: bool = False,
) -> DLRResult:
    """Combine ``<K, L>``, ``||K||`` and ``||L||`` of both output kernels into the literal D_LR and D_half, pick
    the one asked for, and attach diagnostics and warnings.

    ``features_in_outputs`` (explicit outputs only): the centered features lie inside the span of wider centered
    outputs, as when the arguments were swapped."""
    if not (math.isfinite(norm_k) and math.isfinite(span.inner) and math.isfinite(half.inner)):
        raise DLRInputError(
            "features: the centered feature Gram overflows float64 (values too large); rescale the features "
            "(D_LR is scale invariant)"
        )
    if not norm_k > 0:
        raise DLRInputError("features are constant across samples: the centered feature kernel is zero")
    a = min(max(a, 0.0), 1.0)
    if not half.norm_l2 > 0:
        raise DLRInputError(
            "outputs are constant across samples: the centered output kernel L is zero and D_LR is undefined"
        )
    warnings: list[str] = list(notes or [])
    alignments = {"sqrt": _alignment(half, norm_k)}
    if span.norm_l2 > 1e-24 * max(r, 1):
        alignments["span"] = _alignment(span, norm_k)
    else:  # the span kept at rtol holds only the constant function: the outputs' offset dwarfs their variation
        smaller = "pass a smaller rtol, or " if rtol > rank_resolution(C) * (1 + 1e-12) else ""
        collapsed = (
            f"the output span at rtol={rtol:.3g} holds only the constant function (the outputs' offset dwarfs "
            f"their variation across samples), so the literal D_LR is undefined; {smaller}read D_half"
        )
        if output_kernel == "span":
            raise DLRInputError(f"outputs: {collapsed} (output_kernel='sqrt')")
        alignments["span"] = math.nan
        warnings.append(f"undefined literal value: {collapsed}")
    values = {name: min(max(1.0 - al, 0.0), 1.0) if al == al else math.nan for name, al in alignments.items()}
    chosen = span if output_kernel == "span" else half
    erank = effective_rank(centered_output_ev)
    warnings += _kernel_warnings(values, erank, r - a, output_kernel, C, p if feature_rank is None else feature_rank)
    warnings += sample_warnings(n, p, r, a, feature_rank)
    if features_in_outputs:
        warnings.append(
            f"features inside the outputs' span: the outputs (C = {C}) are wider than the features (p = {p}) and "
            "span all of them, so the literal D_LR reduces to 1 - sqrt(PR / rank) and measures only how the "
            "features spread (docs/dlr.md, the corollary). If the arguments were swapped, call "
            "dlr(features, outputs): the penultimate features come first"
        )
    if sqrt.centered and 4.0 * EPS64 / sqrt.share > CENTERED_ERROR_WARN:
        warnings.append(
            f"per-sample shifts dominate the logits: centered across classes they keep {sqrt.share:.1e} of their "
            f"variance, and centering the stored moments cancels, so D_half may be off by about "
            f"{4.0 * EPS64 / sqrt.share:.0e}; center the logits before passing them "
            "(F - F.mean(axis=1, keepdims=True)) for a value to full precision"
        )
    return DLRResult(
        value=float(values[output_kernel]),
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
        alignment=float(alignments[output_kernel]),
        warnings=tuple(warnings),
        error_estimate=chosen.error,
        output_kernel=output_kernel,
        value_span=float(values["span"]),
        value_sqrt=float(values["sqrt"]),
        error_span=span.error,
        error_sqrt=half.error,
        sqrt_rank=int(sqrt.rank),
        sqrt_tol=float(sqrt.tol),
        logits_centered=bool(sqrt.centered),
        **(extra or {}),
    )


def _features_in_outputs(span: OutputSpan, m_fp: np.ndarray, m_pp: np.ndarray, upper: bool) -> bool:
    """Whether the outputs are wider than the features and their centered span holds all of the centered features
    (``||P_Fc Phic||_F^2 = tr(Fc^T Phic)^T (Fc^T Fc)^+ (Fc^T Phic)`` within 1e-6 of ``tr(Phic^T Phic)``)."""
    C, p = m_fp.shape
    if p >= C:
        return False
    lc, vc = span.centered_ev, span.centered_vecs
    keep = lc > 1e-12 * lc[0] if lc.size and lc[0] > 0 else np.zeros(lc.shape, bool)
    t = (vc[:, keep].T @ m_fp) / np.sqrt(lc[keep])[:, None]
    total = float(np.trace(m_pp))
    return total > 0 and float(np.einsum("ij,ij->", t, t)) >= (1.0 - 1e-6) * total


def sample_warnings(n: int, p: int, r: int, a: float, feature_rank: int | None) -> list[str]:
    """Too few samples for the value to say anything about the outputs, or to be settled to 0.02.

    With ``n <= p`` the centered features can fill every direction of the samples; when the centered output span
    (dimension ``r - a``) covers all ``n - 1`` centered sample directions, ``L`` is the centering matrix and the
    value depends on the features alone. Below :data:`SAMPLES_PER_FEATURE` samples per feature direction (the
    feature rank where it was computed), sampling noise in the feature covariance moves D_LR and D_half by more
    than 0.02 in some of the settings of ``examples/sample_size.py`` (docs/uncertainty.md, "How many samples").
    """
    width = p if feature_rank is None else max(feature_rank, 1)
    enough = SAMPLES_PER_FEATURE * max(p, r)  # with n <= p the feature rank is bounded by n: count p
    out: list[str] = []
    if r - a >= n - 1 - 1e-9:
        out.append(
            f"too few samples: the outputs span every direction of the n = {n} centered samples (output rank {r}), "
            "so the output kernel is the centering matrix and the value depends on the features alone. Measure "
            f"on more samples than the outputs can span, at least {enough} (ten per feature and output direction)"
        )
    elif n <= p:
        out.append(
            f"too few samples: n = {n} against p = {p} features (feature rank {width}); the centered features "
            "can fill every sample direction and sampling noise reads as lazy spread. Measure on at least "
            f"{enough} samples (ten per feature)"
        )
    elif n < SAMPLES_PER_FEATURE * width:
        out.append(
            f"few samples: n = {n} for {width} feature directions ({n / width:.1f} per direction); below "
            f"{SAMPLES_PER_FEATURE} per direction sampling noise can move the value by more than 0.02 (the jackknife "
            f"error, blocks=, shows by how much here). Measure on at least {SAMPLES_PER_FEATURE * max(width, r)} "
            "samples; see docs/uncertainty.md"
        )
    return out


def _kernel_warnings(
    values: dict[str, float], erank: float, kept: float, output_kernel: str, C: int, feature_rank: int
) -> list[str]:
    """The literal value misleading on anisotropic outputs, and D_half reading low for wide outputs."""
    out: list[str] = []
    gap = values["span"] - values["sqrt"]
    anisotropic = kept >= 2 and erank < ANISOTROPY_RATIO * kept
    recommends_half = output_kernel == "span" and (anisotropic or gap > DISAGREEMENT)
    if recommends_half:
        literal, half = f"the literal D_LR ({values['span']:.3f})", f"D_half ({values['sqrt']:.3f})"
        how = (
            f"{literal}, which weighs every kept direction equally, reads {gap:.3f} higher than {half}, which "
            "weighs them by strength"
            if gap > DISAGREEMENT
            else f"{literal} weighs every kept direction equally, {half} weighs them by strength"
        )
        out.append(
            f"anisotropic outputs: the centered outputs have effective rank {erank:.2f} against {kept:.2f} kept "
            f"directions; {how}. For cross-entropy logits read D_half (output_kernel='sqrt'); see "
            "docs/output-kernel.md"
        )
    if (output_kernel == "sqrt" or recommends_half) and WIDE_OUTPUT_RATIO * max(feature_rank, 1) < C:
        out.append(
            f"wide outputs: C = {C} against {feature_rank} feature directions; D_half reads low for any readout "
            "this wide, untrained ones included. Compare it with the random-readout baseline "
            "(DLRStats.baseline() or dlr(..., baseline=True)); see docs/output-kernel.md"
        )
    return out


def _check_common(n: int, rtol: float | None) -> None:
    if n < 2:
        raise DLRInputError(f"D_LR needs at least 2 samples, got n = {n}")
    if rtol is not None and not (0.0 <= rtol < 1.0):
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")


def _feature_rank(m_pp: np.ndarray, rel: float) -> tuple[int, np.ndarray, np.ndarray]:
    s, v = eigh_desc(m_pp)
    return rank_cut(s, rel), s, v


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
    output_kernel: str = "span",
    center_logits: bool = False,
    work_eps: float = EPS64,
    rank_features: bool = True,
) -> DLRResult:
    """Exact D_LR (both output kernels) from centered moments.

    Parameters
    ----------
    n : int
        Number of samples.
    m_pp, m_fp, m_ff : ndarray
        ``Phic^T Phic`` (p x p), ``Fc^T Phic`` (C x p) and ``Fc^T Fc`` (C x C), float64, symmetric where square.
    mean_f : ndarray
        Column means of the raw outputs (C,).
    rtol : float or None
        Relative tolerance on the singular values of the raw outputs that decides the literal output span; None
        for :func:`default_rtol`. D_half needs none (:func:`sqrt_tolerance`).
    data_eps : float
        Machine epsilon of the lowest precision the outputs arrived in (used for the default ``rtol``).
    feature_rel_tol : float
        Relative eigenvalue tolerance for the reported feature rank.
    precision : str
        Precision of the products, reported in the result.
    upper : bool
        If true, only the upper triangles of ``m_pp`` and ``m_ff`` are valid and their strict lower triangles
        are zero (the layout :class:`~dlrcore.DLRStats` accumulates), which saves forming the full p x p matrix.
    output_kernel : {"span", "sqrt"}
        Which value ``result.value`` holds; both are computed (``value_span``, ``value_sqrt``).
    center_logits : bool
        Center the logits across classes before D_half (see :func:`sqrt_kernel`).
    work_eps : float
        Machine epsilon of the products the cross moments were formed in.

    Returns
    -------
    DLRResult
        ``feature_rank`` (eigenvalues above ``feature_rel_tol`` times the largest, the spectrum's rule) is computed
        only for p <= ``FEATURE_RANK_MAX_P`` and with ``rank_features`` (the jackknife's leave-outs need the
        values only), else None.
    """
    _check_common(n, rtol)
    check_output_kernel(output_kernel)
    center_logits = check_center_logits(center_logits)
    p = m_pp.shape[0]
    if upper:
        m_ff = m_ff + np.triu(m_ff, 1).T
    span = output_span(n=n, m_ff=m_ff, mean_f=mean_f, rtol=rtol, data_eps=data_eps)
    half = sqrt_kernel(
        m_ff, work_eps=work_eps, center=center_logits, eig=(span.centered_ev, span.centered_vecs)
    )
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by finish_result
        t = np.hstack([span.basis, half.basis]).T @ m_fp  # Q^T Phic and L_half's coordinates, one product
        inner_span = float(np.einsum("ij,ij->", t[: span.rank], t[: span.rank]))
        inner_half = float(np.einsum("ij,ij->", t[span.rank :], t[span.rank :]))
        sq = float(np.einsum("ij,ij->", m_pp, m_pp))
        if upper:  # off-diagonal entries count twice
            d = np.diagonal(m_pp)
            sq = 2.0 * sq - float(d @ d)
    norm_k = math.sqrt(sq) if sq >= 0 else float("nan") if math.isnan(sq) else 0.0
    feature_rank = eigen_rank(m_pp, feature_rel_tol) if rank_features and p <= FEATURE_RANK_MAX_P else None
    return finish_result(
        span=KernelTerms(inner_span, span.norm_l2),
        half=KernelTerms(inner_half, half.norm_l2),
        norm_k=norm_k,
        r=span.rank,
        a=span.constant_share,
        sqrt=half,
        output_kernel=output_kernel,
        centered_output_ev=span.centered_ev,
        n=n,
        p=p,
        C=span.C,
        method="exact",
        rtol=span.rtol,
        precision=precision,
        feature_rank=feature_rank,
        notes=span.notes,
        features_in_outputs=_features_in_outputs(span, m_fp, m_pp, upper),
    )


@dataclass(frozen=True)
class _WeightsSpan:
    rank: int
    constant_share: float
    norm_l2: float
    inner: float


def _weights_span(
    *, n: int, mean_phi: np.ndarray, m_pp: np.ndarray, wtw: np.ndarray, wtb: np.ndarray, btb: float, rtol: float,
    data_eps: float,
) -> _WeightsSpan:
    """The literal output span of ``F = Phi W^T + 1 b^T`` from ``W^T W``, ``W^T b``, ``b^T b``, with no offset squared.

    With ``W^T W = U L U^T`` (eigenvalues above ``10 p eps64`` times the largest kept), ``Q_1 = W U L^(-1/2)`` has
    orthonormal columns, ``b = Q_1 t + beta q`` with ``t = L^(-1/2) U^T W^T b``, ``beta^2 = b^T b - |t|^2`` and
    ``q`` a unit vector orthogonal to them, and ``F = F' [Q_1, q]^T`` with the n x (rank W + 1) outputs
    ``F' = [Phi U L^(1/2) + 1 t^T, beta 1]``. ``F`` and ``F'`` share singular values and left singular vectors, so
    the span is that of the explicit outputs; :func:`output_span` takes the feature offset (in the mean of ``F'``)
    through its offset-safe route instead of squaring ``n |W mu + b|^2`` into one Gram.
    """
    p = m_pp.shape[0]
    lw, uw = eigh_desc(0.5 * (wtw + wtw.T))
    keep = lw > 10.0 * p * EPS64 * lw[0] if lw.size and lw[0] > 0 else np.zeros(lw.shape, bool)
    root = np.sqrt(lw[keep])
    r11 = root[:, None] * uw[:, keep].T  # L^(1/2) U^T, rank(W) x p
    bt = (uw[:, keep].T @ wtb) / root  # Q_1^T b
    beta = math.sqrt(max(float(btb) - float(bt @ bt), 0.0))
    c2 = r11.shape[0] + 1
    mean_f = np.concatenate([r11 @ mean_phi + bt, [beta]])
    m_fp = np.vstack([r11 @ m_pp, np.zeros((1, p))])
    m_ff = np.zeros((c2, c2))
    m_ff[:-1, :-1] = m_fp[:-1] @ r11.T
    span = output_span(n=n, m_ff=0.5 * (m_ff + m_ff.T), mean_f=mean_f, rtol=rtol, data_eps=data_eps, resolved=True)
    t = span.basis.T @ m_fp
    return _WeightsSpan(span.rank, span.constant_share, span.norm_l2, float(np.einsum("ij,ij->", t, t)))


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
    output_kernel: str = "span",
    center_logits: bool = False,
    wtw_centered: np.ndarray | None = None,
    work_eps: float = EPS64,
) -> DLRResult:
    """Exact D_LR (both output kernels) for outputs ``F = Phi W^T + 1 b^T`` from feature moments and ``W^T W``,
    ``W^T b``, ``b^T b``.

    The literal span comes from the moments of outputs ``F'`` with at most p + 1 columns that share the singular
    values and left singular vectors of ``F`` (:func:`_weights_span`): no n x C or C x C matrix is ever formed,
    and a large feature mean or bias is never squared into a Gram. D_half uses the k x k matrix
    ``G = S V^T W^T W V S`` (``Fc Fc^T = U G U^T`` with ``Phic = U S V^T``): ``<K, L_half> = tr(S^2 G^(1/2))`` and
    ``||L_half||_F^2 = tr(G)``.

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
    rtol, data_eps, feature_rel_tol, precision, output_kernel, center_logits, work_eps
        As in :func:`dlr_from_moments`.
    wtw_centered : ndarray, optional
        ``W^T (I - 1 1^T / C) W``, the same for the class-centered weight; required with ``center_logits``.

    Returns
    -------
    DLRResult
    """
    _check_common(n, rtol)
    check_output_kernel(output_kernel)
    center_logits = check_center_logits(center_logits)
    p = m_pp.shape[0]
    rtol, notes = resolve_rtol(rtol, min(C, p + 1), data_eps)
    k, s, v = _feature_rank(m_pp, feature_rel_tol)
    sk = np.sqrt(s[:k])
    vk = v[:, :k]
    e11 = (vk.T @ wtw @ vk) * np.outer(sk, sk)  # G = S V^T W^T W V S, the centered output Gram (whitened)
    span = _weights_span(n=n, mean_phi=mean_phi, m_pp=m_pp, wtw=wtw, wtb=wtb, btb=btb, rtol=rtol, data_eps=data_eps)
    r, a, norm_l2 = span.rank, span.constant_share, span.norm_l2
    inner = span.inner
    norm_k = float(np.sqrt((np.clip(s, 0.0, None) ** 2).sum()))
    # D_half: G = S V^T W^T W V S is the centered output Gram in the whitened feature coordinates
    g_eig = eigh_desc(e11) if k else (np.zeros(0), np.zeros((0, 0)))
    if center_logits:
        if wtw_centered is None:
            raise DLRInputError(
                "center_logits: these statistics hold no class-centered W^T W (saved by an older dlrcore); "
                "rebuild them, or pass center_logits=False"
            )
        check_centering(C)
        g = (vk.T @ wtw_centered @ vk) * np.outer(sk, sk)
        half = sqrt_kernel(0.5 * (g + g.T), work_eps=work_eps, center=False)
        check_centered_trace(half.norm_l2, float(np.trace(e11)), half.tol)
    else:
        half = sqrt_kernel(e11, work_eps=work_eps, eig=g_eig)
    # half.basis = U_r diag(g_r)^(-1/4): tr(S^2 G^(1/2)) = sum_j sqrt(g_j) ||S u_j||^2 with u_j = basis_j g_j^(1/4)
    su = half.basis * half.ev**0.25 * sk[:, None]
    inner_half = float(np.sqrt(half.ev) @ np.einsum("ij,ij->j", su, su))
    return finish_result(
        span=KernelTerms(inner, norm_l2),
        half=KernelTerms(inner_half, half.norm_l2),
        norm_k=norm_k,
        r=r,
        a=a,
        sqrt=half,
        output_kernel=output_kernel,
        centered_output_ev=np.clip(g_eig[0], 0.0, None),
        n=n,
        p=p,
        C=C,
        method="exact-weights",
        rtol=rtol,
        precision=precision,
        feature_rank=k,
        notes=notes,
    )
