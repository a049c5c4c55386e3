"""The algebra of the sketch estimators: from sketched products of the feature Gram to D_LR, D_half, their error
estimates and the top of the spectrum (host float64). The estimators that accumulate the products are
:class:`dlrcore.DLRSketch` (one pass) and :func:`dlrcore.randomized_dlr` (several passes).

D_LR needs three numbers (``docs/dlr.md``): ``A = ||Q^T Phic||_F^2``, ``B = ||G||_F^2`` with ``G = Phic^T Phic``,
and ``||L||_F`` from the outputs alone. The outputs' C x C statistics are kept exactly; ``A`` and ``B`` are
estimated from products of ``G`` (and of ``Fc^T Phic``) with a few random directions, accumulated batch by
batch in O(p s) memory:

* **one-pass sketch** (:class:`DLRSketch`, ``method="sketch"``): ``Y = G Omega`` and ``Z = Fc^T Phic Omega``
  for a Gaussian ``Omega = [Omega_1, Omega_2]`` (Tropp, Yurtsever, Udell and Cevher 2017). ``Omega_1`` gives
  the Nystrom approximation ``G_hat = Y_1 (Omega_1^T Y_1)^+ Y_1^T`` (the top of the spectrum); the probes
  ``Omega_2`` estimate what it misses with control variates (Nystrom++, Persson, Cortinovis and Kressner 2022):
  ``b_j = ||G_hat||^2 + ||G w_j||^2 - ||G_hat w_j||^2`` is unbiased for ``B`` whatever ``G_hat`` is, and
  likewise for ``A``. The state adds up over batches and merges across processes (Chan's update; the rank-one
  corrections multiply ``Omega``).
* **randomized** (``method="randomized"``, several passes over an array): a randomized range finder with
  QR-normalised power iterations (Halko, Martinsson and Tropp 2011) run on ``G``, so that every pass streams the
  rows; a last pass gives ``G V`` for the orthonormal basis ``V`` and ``G w_j`` for probes orthogonal to it,
  so ``B = 2 ||G V||^2 - ||V^T G V||^2 + ||P G P||^2`` and ``A = ||Q^T Phic V||^2 + ||Q^T Phic P||^2``
  (``P = I - V V^T``) with only the ``P``-parts estimated stochastically (Hutch++, Meyer, Musco, Musco and
  Woodruff 2021).

Both report an a-posteriori error estimate of D_LR: the per-probe estimates are independent given the data and
the first random matrix, so their sample covariance gives the standard error of ``A`` and ``B``, propagated to
D_LR by the delta method and multiplied by a Student-t quantile (:func:`error_multiplier`, three standard errors
for many probes) plus a rounding floor.

All accumulation runs in the arrays' own namespace (NumPy, CuPy, any array-API library), so GPU arrays stay on
the GPU; the final factorisations (s x s and p x s) run on the host in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg

from .backend import is_numpy
from .checks import check_int
from .exact import finish_result
from .inputs import DLRInputError
from .output_kernels import CENTER_LOGITS, KernelTerms, check_center_logits, sqrt_kernel
from .output_span import output_span
from .result import DLRResult
from .spectral import Spectrum, cumulative_share, kernel_fields

__all__ = [
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_PROBES",
    "DEFAULT_RANK",
    "ERROR_LEVEL",
    "check_sketch_params",
    "error_multiplier",
    "estimate_from_sketch",
    "exact_cross",
    "gaussian_test_matrix",
    "orthonormal_columns",
]

#: Default number of leading feature directions captured exactly (Nystrom / range-finder rank).
DEFAULT_RANK = 64
#: Default extra random directions of the range finder.
DEFAULT_OVERSAMPLE = 16
#: Default number of stochastic probes for the residual.
DEFAULT_PROBES = 32
#: Two-sided confidence level of the reported error estimate (three standard deviations under normality).
ERROR_LEVEL = 0.9973


def error_multiplier(probes: int) -> float:
    """Multiplier of the standard error in ``error_estimate``: the Student-t quantile at :data:`ERROR_LEVEL` with
    ``probes - 1`` degrees of freedom (3.26 for 32 probes, 3.85 for 12), so that few probes widen the estimate.

    Examples
    --------
    >>> round(error_multiplier(32), 2), round(error_multiplier(10**6), 2)
    (3.26, 3.0)
    """
    from scipy.stats import t

    return float(t.ppf(0.5 + ERROR_LEVEL / 2.0, max(int(probes) - 1, 1)))


def gaussian_test_matrix(seed: int, shape: tuple[int, int], stream: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(stream)]).standard_normal(shape)


def check_sketch_params(rank: int, oversample: int, probes: int) -> None:
    check_int(rank, "rank")
    check_int(oversample, "oversample", minimum=0)
    check_int(probes, "probes", minimum=4, why="the error estimate needs a sample variance")


# ---------------------------------------------------------------------------------------------- estimator


@dataclass(frozen=True)
class _Nystrom:
    bn: np.ndarray  # p x k', G_hat = bn bn^T
    w: np.ndarray  # s1 x k', maps Omega_1 coordinates: G_hat = Y1 w w^T Y1^T
    h: np.ndarray  # bn^T bn


def _nystrom(omega1: np.ndarray, y1: np.ndarray, rel_tol: float) -> _Nystrom:
    c1 = omega1.T @ y1
    c1 = 0.5 * (c1 + c1.T)
    d, u = scipy.linalg.eigh(c1, check_finite=False)
    top = float(d[-1]) if d.size else 0.0
    keep = d > rel_tol * top if top > 0 else np.zeros(d.shape, bool)
    w = u[:, keep] / np.sqrt(d[keep])
    bn = y1 @ w
    return _Nystrom(bn=bn, w=w, h=bn.T @ bn)


def _colsq(a: np.ndarray) -> np.ndarray:
    sq: np.ndarray = np.einsum("ij,ij->j", a, a)
    return sq


def estimate_from_sketch(
    *,
    mode: str,
    n: int,
    p: int,
    mean_f: np.ndarray,
    mff: np.ndarray,
    mfp: np.ndarray | None,
    omega1: np.ndarray,
    y1: np.ndarray,
    z1: np.ndarray,
    omega2: np.ndarray,
    y2: np.ndarray,
    z2: np.ndarray,
    trace: float,
    rtol: float | None,
    data_eps: float,
    work_eps: float,
    precision: str,
    method: str,
    passes: int,
    k: int | None = None,
    output_kernel: str = "span",
    center_logits: bool = CENTER_LOGITS,
) -> tuple[DLRResult, Spectrum]:
    """D_LR with its error estimate, and the top of the spectrum, from the sketched products (host float64)."""
    center_logits = check_center_logits(center_logits)
    if n < 2:
        raise DLRInputError(f"D_LR needs at least 2 samples, got n = {n}")
    if rtol is not None and not (0.0 <= rtol < 1.0):
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")
    if not math.isfinite(trace):
        raise DLRInputError("features: the centered feature Gram overflows float64; rescale the features")
    if not trace > 0:
        raise DLRInputError("features are constant across samples: the centered feature kernel is zero")
    # D_LR is scale invariant: work with G / tr(G) so that squares of Gram entries cannot overflow
    scale = trace
    root = math.sqrt(scale)
    y1, y2, z1, z2 = y1 / scale, y2 / scale, z1 / root, z2 / root
    mfp = None if mfp is None else mfp / root
    mff = 0.5 * (mff + mff.T)
    trace = 1.0
    floor = 10.0 * work_eps * math.sqrt(max(p, mff.shape[0]))  # rounding floor of the error estimate
    # the output span's own rounding may use up at most 1 % of that floor (output_span.offset_svd)
    span = output_span(n=n, m_ff=mff, mean_f=mean_f, rtol=rtol, data_eps=data_eps, max_rel_err=0.01 * floor)
    half = sqrt_kernel(mff, work_eps=work_eps, center=center_logits, eig=(span.centered_ev, span.centered_vecs))
    ny = _nystrom(omega1, y1, rel_tol=max(1e3 * work_eps, 1e-12))
    c = ny.bn.T @ omega2  # k' x m
    g_hat_w = ny.bn @ c  # G_hat w_j, p x m
    if mode == "orth":
        # V = omega1 orthonormal, probes orthogonal to V: only the P-blocks are stochastic
        a11 = omega1.T @ y1
        pg = y2 - omega1 @ (omega1.T @ y2)
        b_j = 2.0 * float(np.sum(y1 * y1)) - float(np.sum(a11 * a11)) + _colsq(pg)
    else:
        b_j = float(np.sum(ny.h * ny.h)) + _colsq(y2) - _colsq(g_hat_w)
    m = b_j.size
    # ||G||_F^2 >= tr(G)^2 / p = 1 / p here (Cauchy-Schwarz over the eigenvalues): an estimate below that bound is
    # noise (or a damaged file), and the bound is the better value
    b_bar = max(float(b_j.mean()), 1.0 / p)
    norm_k = math.sqrt(b_bar)

    def a_samples(basis: np.ndarray) -> np.ndarray:
        """Per-probe estimates of ``A = ||basis^T Fc^T Phic||_F^2`` (exact when the cross moments are kept)."""
        if mfp is not None:  # exact cross moments (small C): A is exact, only B is estimated
            q_phi = basis.T @ mfp
            return np.full(m, float(np.sum(q_phi * q_phi)))
        t1 = basis.T @ z1  # basis^T Fc^T Phic Omega_1, r x s1
        t2 = basis.T @ z2
        if mode == "orth":
            return float(np.sum(t1 * t1)) + _colsq(t2)
        tn = t1 @ ny.w  # in Nystrom coordinates, r x k'
        samples: np.ndarray = float(np.sum(tn * (tn @ ny.h))) + _colsq(t2) - _colsq(tn @ c)
        return samples

    def terms(basis: np.ndarray, norm_l2: float) -> KernelTerms:
        """``A`` with the delta-method error of ``D = 1 - A / (sqrt(L2) sqrt(B))`` over the probes."""
        a_j = a_samples(basis)
        a_bar = float(a_j.mean())
        sl = math.sqrt(norm_l2) if norm_l2 > 0 else 0.0
        var = 0.0
        if sl > 0:
            grad = np.array([-1.0 / (sl * norm_k), a_bar / (2.0 * sl * b_bar * norm_k)])
            cov = np.cov(np.vstack([a_j, b_j]), ddof=1)
            var = max(float(grad @ cov @ grad) / m, 0.0)
        return KernelTerms(a_bar, norm_l2, float(error_multiplier(m) * math.sqrt(var) + floor))

    res = finish_result(
        span=terms(span.basis, span.norm_l2),
        half=terms(half.basis, half.norm_l2),
        norm_k=norm_k,
        r=span.rank,
        a=span.constant_share,
        sqrt=half,
        output_kernel=output_kernel,
        centered_output_ev=span.centered_ev,
        n=n,
        p=p,
        C=span.C,
        method=method,
        rtol=span.rtol,
        precision=precision,
        feature_rank=None,
        notes=span.notes,
        extra=dict(sketch_size=int(omega1.shape[1]), probes=int(m), passes=int(passes)),
    )
    # spectrum: eigenpairs of G_hat, utilization from Fc^T Phic on the sketched subspace
    lam, e = scipy.linalg.eigh(ny.h, check_finite=False)
    lam, e = np.clip(lam[::-1], 0.0, None), e[:, ::-1]
    resid = y2 - g_hat_w
    resid_fro = math.sqrt(max(float(_colsq(resid).mean()), 0.0))
    z1n = z1 @ ny.w @ e  # Fc^T u_i for the Nystrom eigenvectors, C x k'
    inc = _colsq(z1n)
    total_f = float(np.trace(mff))
    kk = lam.size if k is None else min(int(k), lam.size)
    rho = lam * (scale / n)
    top = rho[0] if rho.size and rho[0] > 0 else 1.0
    # tr(G)^2 / ||G||_F^2 with tr(G) exact and ||G||_F^2 estimated
    pr = trace**2 / b_bar
    live = int(np.count_nonzero(rho > 100.0 * work_eps * top))
    spec = Spectrum(
        eigenvalues=rho[:kk].copy(),
        relative_eigenvalue=(rho / top)[:kk].copy(),
        cumulative_utilization=cumulative_share(inc, total_f)[:kk].copy(),
        cumulative_quality=None,
        effective_rank=float("nan"),
        participation_ratio=float(pr),
        feature_rank=live,
        dlr=res.value,
        n=int(n),
        p=int(p),
        C=int(span.C),
        k=int(kk),
        rank_tol=100.0 * work_eps,
        method=method,
        eigenvalue_error=float(resid_fro * scale / n),
        **kernel_fields(res),
    )
    return res, spec


# ---------------------------------------------------------------------------------------------- one pass


def exact_cross(C: int, sketch_columns: int) -> bool:
    """Keep the exact cross moments ``Fc^T Phic`` (C x p) when they cost no more than the sketch's own products.

    Then ``A = ||Q^T Phic||^2`` is exact and only ``||G||_F`` is estimated.
    """
    return int(C) <= int(sketch_columns)


def orthonormal_columns(xp: ModuleType, y: Any) -> Any:
    if is_numpy(xp):  # numpy.linalg runs its own BLAS threads; scipy's QR is the fast one here
        return scipy.linalg.qr(y, mode="economic", check_finite=False)[0]
    q, _ = xp.linalg.qr(y)
    return q
