"""Dense float64 NumPy references for the eigen-visualisation and the companion measures (docs/dlr.md).

Written from the definitions, independent of the library's algebra (no moments, no p x p shortcuts):

* spectrum: the thin SVD of the explicitly centered features ``Phic = H Phi`` gives the feature-covariance
  eigenpairs ``rho_k = s_k^2 / n``, ``v_k``; the sample-space eigenvectors are formed explicitly as n-vectors by
  the Nystrom extension ``u_k = Phic v_k / sqrt(n rho_k)``; the curves are sums of ``||Fc^T u_i||^2`` with
  ``Fc = H F`` (``Yc = H Y``) formed explicitly;
* effective rank (Roy and Vetterli 2007) from the singular values of ``Phic``; participation ratio
  ``(sum rho)^2 / sum rho^2``;
* linear CKA exactly as Kornblith et al. (2019): n x n Gram matrices ``K = X X^T``, ``L = Y Y^T``,
  ``HSIC(K, L) = tr(K H L H)``, ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``;
* NC1 (Papyan, Han and Donoho 2020) from explicit class means and scatter matrices with ``numpy.linalg.pinv``.

Use small n only (everything is O(n^2) or O(n p min(n, p))). Nothing here imports dlrcore.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RefSpectrum",
    "onehot",
    "ref_cka",
    "ref_effective_rank",
    "ref_nc1",
    "ref_participation_ratio",
    "ref_r2",
    "ref_spectrum",
]

#: Relative singular-value tolerance of Phic below which a mode counts as numerically zero (no u_k defined).
#: Exact float64 rank deficiency leaves singular values near 1e-16 * s_1; the test data keep real ones above 1e-4.
SV_RTOL = 1e-10

#: Relative tolerance (on the eigenvalues of Sigma_B) given to numpy.linalg.pinv in the NC1 reference. Sigma_B of
#: C classes has rank <= C - 1 (the deviations mu_c - mu_G sum to zero with weights n_c); in float64 its null
#: directions carry eigenvalues ~1e-16 relative, the test data's real ones are far above 1e-10. (The library keeps
#: at most C - 1 directions with singular values of the deviations above 1e-10 relative, as the common NC1 code does
#: with svds(Sigma_B, k=C-1); on well-conditioned data both give the same pseudo-inverse.)
PINV_RCOND = 1e-10

REF_MAX_N = 2000


def _as2d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D")
    if a.shape[0] > REF_MAX_N:
        raise ValueError(f"{name}: the dense reference is for small n, got {a.shape[0]}")
    return a


def centering(n: int) -> np.ndarray:
    """H = I - 1 1^T / n."""
    return np.eye(n) - np.full((n, n), 1.0 / n)


def onehot(labels, num_classes: int) -> np.ndarray:
    ids = np.asarray(labels)
    y = np.zeros((ids.shape[0], num_classes))
    y[np.arange(ids.shape[0]), ids] = 1.0
    return y


@dataclass(frozen=True)
class RefSpectrum:
    eigenvalues: np.ndarray  # rho_1 >= ... (all min(n, p) of them, numerically zero ones included)
    relative_eigenvalue: np.ndarray
    cumulative_utilization: np.ndarray
    cumulative_quality: np.ndarray | None
    effective_rank: float
    participation_ratio: float
    feature_rank: int
    u: np.ndarray  # n x rank, sample-space eigenvectors (Nystrom)
    v: np.ndarray  # p x rank, feature-space eigenvectors


def ref_effective_rank(singular_values) -> float:
    """Roy and Vetterli: exp of the Shannon entropy of s / sum(s) (0 log 0 = 0)."""
    s = np.asarray(singular_values, dtype=np.float64)
    total = s.sum()
    if not total > 0:
        return 0.0
    w = s / total
    w = w[w > 0]
    return float(np.exp(-np.sum(w * np.log(w))))


def ref_participation_ratio(rho) -> float:
    rho = np.asarray(rho, dtype=np.float64)
    return float(rho.sum() ** 2 / np.sum(rho**2))


def _cumulative(T: np.ndarray, u: np.ndarray, length: int) -> np.ndarray:
    """sum_{i<=k} ||T^T u_i||^2 / ||T||_F^2 for k = 1..length (modes beyond u's columns add nothing)."""
    inc = np.zeros(length)
    r = min(u.shape[1], length)
    for i in range(r):
        inc[i] = float(np.sum((T.T @ u[:, i]) ** 2))
    total = float(np.sum(T * T))
    return np.cumsum(inc) / total


def ref_spectrum(Phi, F, Y=None, sv_rtol: float = SV_RTOL) -> RefSpectrum:
    """The three panels of the paper from dense matrices.

    ``Phi`` n x p, ``F`` n x C (the raw outputs), ``Y`` n x C_y targets (one-hot for classes) or None.
    Curves have length ``min(n, p)``; the library reports ``min(p, n - 1)`` modes (centering removes one).
    """
    Phi = _as2d(Phi, "Phi")
    F = _as2d(F, "F")
    n, _p = Phi.shape
    H = centering(n)
    Phic = H @ Phi
    Fc = H @ F
    _, s, vt = np.linalg.svd(Phic, full_matrices=False)
    rho = s**2 / n
    rank = int(np.sum(s > sv_rtol * s[0])) if s[0] > 0 else 0
    v = vt[:rank].T
    # Nystrom extension: u_k = Phic v_k / sqrt(n rho_k), explicit n-vectors
    u = (Phic @ v) / np.sqrt(n * rho[:rank])
    length = s.size
    util = _cumulative(Fc, u, length)
    qual = None
    if Y is not None:
        Y = _as2d(Y, "Y")
        qual = _cumulative(H @ Y, u, length)
    return RefSpectrum(
        eigenvalues=rho,
        relative_eigenvalue=rho / rho[0],
        cumulative_utilization=util,
        cumulative_quality=qual,
        effective_rank=ref_effective_rank(s[:rank]),
        participation_ratio=ref_participation_ratio(rho),
        feature_rank=rank,
        u=u,
        v=v,
    )


def ref_r2(Phi, T) -> float:
    """R^2 of the best linear readout (with intercept) of targets T from features Phi, by least squares.

    ``1 - ||T - [1, Phi] beta||_F^2 / ||T - mean(T)||_F^2`` with beta from numpy.linalg.lstsq.
    """
    Phi = _as2d(Phi, "Phi")
    T = _as2d(T, "T")
    X = np.hstack([np.ones((Phi.shape[0], 1)), Phi])
    beta, *_ = np.linalg.lstsq(X, T, rcond=None)
    resid = T - X @ beta
    tot = T - T.mean(axis=0, keepdims=True)
    return 1.0 - float(np.sum(resid**2)) / float(np.sum(tot**2))


def ref_cka(X, Y) -> float:
    """Linear CKA of Kornblith et al. (2019) through n x n centered Gram matrices."""
    X = _as2d(X, "X")
    Y = _as2d(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError("X and Y must have the same rows")
    H = centering(X.shape[0])
    K = X @ X.T
    L = Y @ Y.T
    Kc = H @ K @ H
    Lc = H @ L @ H
    hsic_kl = float(np.sum(Kc * Lc))  # tr(K H L H) = <HKH, HLH>_F
    hsic_kk = float(np.sum(Kc * Kc))
    hsic_ll = float(np.sum(Lc * Lc))
    return hsic_kl / np.sqrt(hsic_kk * hsic_ll)


def ref_nc1(Phi, labels, rcond: float = PINV_RCOND) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C over the C classes present.

    mu_G is the global sample mean, mu_c the class means, ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T``,
    ``Sigma_W = (1/n) sum_i (phi_i - mu_{c(i)})(phi_i - mu_{c(i)})^T``.
    """
    Phi = _as2d(Phi, "Phi")
    labels = np.asarray(labels)
    n, p = Phi.shape
    classes = np.unique(labels)
    C = classes.size
    mu_g = Phi.mean(axis=0)
    sigma_b = np.zeros((p, p))
    sigma_w = np.zeros((p, p))
    for c in classes:
        rows = Phi[labels == c]
        mu_c = rows.mean(axis=0)
        d = mu_c - mu_g
        sigma_b += np.outer(d, d)
        for phi in rows:
            e = phi - mu_c
            sigma_w += np.outer(e, e)
    sigma_b /= C
    sigma_w /= n
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=rcond, hermitian=True)) / C)
