"""The two output kernels of D_LR and their checks: the literal span and the square root (D_half).

``"span"``, the paper's literal D_LR, uses ``L = H P_F H`` (:mod:`dlrcore.output_span` builds it); ``"sqrt"``,
D_half, uses ``L = (Fc Fc^T)^(1/2)``, which weighs each centered output direction by its strength
(:func:`sqrt_kernel`; docs/output-kernel.md). :class:`KernelTerms` carries either kernel's two numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_choice
from .eigen import eigh_desc, rank_cut
from .inputs import DLRInputError
from .precision import EPS64

__all__ = [
    "CENTERED_ERROR_WARN",
    "CENTER_LOGITS",
    "OUTPUT_KERNELS",
    "KernelTerms",
    "SqrtKernel",
    "check_center_logits",
    "check_centered_trace",
    "check_centering",
    "check_output_kernel",
    "class_centering",
    "kernel_options",
    "sqrt_kernel",
    "sqrt_tolerance",
]


#: The output kernels: ``"span"`` (the paper's literal D_LR) and ``"sqrt"`` (D_half); see docs/output-kernel.md.
OUTPUT_KERNELS = ("span", "sqrt")

#: Default of ``center_logits`` (class-centering the logits before D_half); the measurements behind the choice are
#: in docs/output-kernel.md.
CENTER_LOGITS = False

def check_output_kernel(output_kernel: str) -> str:
    """Validate an ``output_kernel`` argument (``"span"`` or ``"sqrt"``) and return it."""
    return check_choice(output_kernel, "output_kernel", OUTPUT_KERNELS)


def kernel_options(rtol: float | None, output_kernel: str, center_logits: object) -> dict[str, object]:
    """The keyword bundle of :meth:`dlrcore.DLRStats.result` that trackers and callbacks keep, checked.

    Examples
    --------
    >>> kernel_options(None, "sqrt", False)
    {'rtol': None, 'output_kernel': 'sqrt', 'center_logits': False}
    """
    return dict(rtol=rtol, output_kernel=check_output_kernel(output_kernel),
                center_logits=check_center_logits(center_logits))


def check_center_logits(center_logits: object) -> bool:
    """Validate a ``center_logits`` argument (a bool, NumPy's included) and return it as a bool."""
    if not isinstance(center_logits, (bool, np.bool_)):
        raise TypeError(f"center_logits must be True or False, got {center_logits!r}")
    return bool(center_logits)


#: Class-centering the stored moments cancels when per-sample shifts dominate the logits: D_half then carries an
#: error of about ``eps64 / share`` (share: the part of the outputs' variance the centered logits keep; measured
#: 2.6e-8 at a share of 2.3e-8, 3.7e-7 at 2.3e-10, 2.1e-4 at 2.3e-12). Results warn when ``4 eps64 / share`` exceeds
#: this.
CENTERED_ERROR_WARN = 1e-6


def sqrt_tolerance(C: int, work_eps: float) -> float:
    """Relative eigenvalue floor below which centered output directions are left out of D_half.

    Eigenvalues of the float64 output Gram carry errors near ``C * eps64 * lam_1``, and cross moments formed from
    products in precision ``work_eps`` make a direction's term ``||v_i^T Mfp||^2 / sqrt(lam_i)`` uncertain by about
    ``work_eps^2 sqrt(lam_1 / lam_i)`` of the total. Directions below ``100 max(C eps64, work_eps^2) lam_1`` are
    therefore noise; leaving one out changes D_half by at most ``sqrt`` of that floor (its term is at most
    ``sqrt(lam_i / lam_1)`` of the total by Cauchy-Schwarz): under 1.5e-7 sqrt(C) for float64 products, 1.2e-6
    for float32 products.

    Examples
    --------
    >>> sqrt_tolerance(10, float(np.finfo(np.float64).eps)) < 1e-12
    True
    """
    return float(100.0 * max(max(int(C), 1) * EPS64, float(work_eps) ** 2))


def class_centering(m: np.ndarray) -> np.ndarray:
    """``P m`` with ``P = I - 1 1^T / C``: each column of ``m`` (C rows) centered across the C classes.

    Applied to ``Fc^T Phic`` it gives the cross moments of the class-centered logits ``F P``; ``P (P M)^T`` gives
    their Gram from ``M = Fc^T Fc``.
    """
    centered: np.ndarray = m - m.mean(axis=0, keepdims=True)
    return centered


@dataclass(frozen=True)
class SqrtKernel:
    """The square-root output kernel ``L = (Fc Fc^T)^(1/2)`` in the coordinates of the centered output moments.

    With ``Fc^T Fc = V diag(lam) V^T``, ``basis = V_r diag(lam_r)^(-1/4)`` (C x r) gives
    ``<K, L>_F = ||basis^T (Fc^T Phic)||_F^2``, and ``norm_l2 = ||L||_F^2 = tr(Fc^T Fc)``. ``rank`` directions
    are above the relative floor ``tol`` (:func:`sqrt_tolerance`); ``ev`` holds their eigenvalues. With
    ``centered`` the logits were centered across classes first (``F -> F (I - 1 1^T / C)``); the basis is then
    projected orthogonal to the all-ones vector, so that applied to the uncentered cross moments it gives those of
    the centered logits.
    """

    basis: np.ndarray
    ev: np.ndarray
    rank: int
    tol: float
    norm_l2: float
    centered: bool
    share: float = 1.0  # with ``centered``: the share of the outputs' variance the class-centered logits keep


def sqrt_kernel(
    m_ff: np.ndarray,
    *,
    work_eps: float,
    center: bool = False,
    eig: tuple[np.ndarray, np.ndarray] | None = None,
) -> SqrtKernel:
    """The square-root output kernel from the full symmetric ``Fc^T Fc`` (C x C, float64).

    Parameters
    ----------
    m_ff : ndarray
        ``Fc^T Fc``, both triangles valid.
    work_eps : float
        Machine epsilon of the products the cross moments were formed in (sets :func:`sqrt_tolerance`).
    center : bool
        Center the logits across classes first (``F (I - 1 1^T / C)``), which removes per-sample shifts common to
        every class (softmax ignores them). Needs C >= 2.
    eig : (ndarray, ndarray), optional
        The eigenvalues (descending) and eigenvectors of ``m_ff`` when already computed (not with ``center``).

    Returns
    -------
    SqrtKernel
    """
    C = m_ff.shape[0]
    if center:
        check_centering(C)
        m = class_centering(class_centering(m_ff).T)
        m = 0.5 * (m + m.T)
        lam, v = eigh_desc(m)
    else:
        m = m_ff
        lam, v = eig if eig is not None else eigh_desc(m_ff)
    lam = np.clip(lam, 0.0, None)
    tol = sqrt_tolerance(C, work_eps)
    r = rank_cut(lam, tol)
    norm_l2 = float(max(np.trace(m), 0.0))
    basis = v[:, :r] * lam[:r] ** -0.25
    share = 1.0
    if center:
        plain = float(np.trace(m_ff))
        check_centered_trace(norm_l2, plain, tol)
        share = norm_l2 / plain
        # P basis: eigenvectors of P M P that belong to tiny eigenvalues carry rounding along the all-ones vector,
        # through which the per-sample shift in Fc^T Phic would leak in
        basis = class_centering(basis)
    return SqrtKernel(basis=basis, ev=lam[:r], rank=r, tol=tol, norm_l2=norm_l2, centered=bool(center), share=share)


def check_centering(C: int) -> None:
    if C < 2:
        raise DLRInputError(
            "center_logits: centering logits across classes needs C >= 2 outputs (it would zero a single "
            "output); pass center_logits=False"
        )


def check_centered_trace(centered: float, plain: float, tol: float) -> None:
    """The class-centered outputs must keep more than the rounding floor ``tol`` of the outputs' variance."""
    if not centered > tol * plain:
        raise DLRInputError(
            "outputs differ across samples only by a shift common to every class: the class-centered logits are "
            f"constant, or too small against that shift (a share {max(centered, 0.0) / plain:.1e} of the outputs' "
            "variance) to be told from rounding. Center the logits before passing them "
            "(F - F.mean(axis=1, keepdims=True)), or pass center_logits=False"
        )


@dataclass(frozen=True)
class KernelTerms:
    """``<K, L>_F`` and ``||L||_F^2`` of one output kernel, and the error estimate of its value (approximate
    methods; None for exact ones)."""

    inner: float
    norm_l2: float
    error: float | None = None
