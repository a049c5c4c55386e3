"""Dense float64 reference implementation of D_LR, straight from the definition in docs/dlr.md.

Independent of the library's algebra: it builds the n x n matrices explicitly,

    K = H Phi Phi^T H,    L = H P_F H,    D_LR = 1 - <K, L>_F / (||K||_F ||L||_F),

with ``P_F`` the orthogonal projection onto the column span of the raw (uncentered) outputs F, obtained from
a thin SVD of F with a relative singular-value tolerance (``sigma_i > rtol * sigma_1`` kept). Memory and time
are O(n^2 (p + C)), so use it for small n only (a few hundred rows).

Nothing here imports dlrcore.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RefResult",
    "centering",
    "output_projection",
    "participation_ratio_dlr",
    "ref_dhalf",
    "ref_dlr",
    "ref_dlr_from_weights",
    "simplex_problem",
]

#: Default relative singular-value tolerance of the reference. Exactly rank-deficient F built in float64 has
#: spurious singular values near 1e-16 * sigma_1, well-conditioned random F none below ~1e-3 * sigma_1.
REF_RTOL = 1e-10

#: Refuse to build n x n matrices beyond this n (memory and time guard).
REF_MAX_N = 3000


@dataclass(frozen=True)
class RefResult:
    value: float  # D_LR
    alignment: float  # <K, L> / (||K|| ||L||)
    r: int  # rank of F kept under rtol
    a: float  # ||Q^T 1||^2 / n, the share of the constant function in span(F)
    inner: float  # <K, L>_F
    norm_k: float  # ||K||_F
    norm_l: float  # ||L||_F


def _as2d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D")
    return a


def centering(n: int) -> np.ndarray:
    """H = I - 1 1^T / n."""
    return np.eye(n) - np.full((n, n), 1.0 / n)


def output_projection(F, rtol: float = REF_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis Q (n x r) of span(F) from a thin SVD, and P_F = Q Q^T (n x n)."""
    F = _as2d(F, "F")
    U, s, _ = np.linalg.svd(F, full_matrices=False)
    if s.size == 0 or not s[0] > 0:
        raise ValueError("F is zero: the output span is empty")
    r = int(np.sum(s > rtol * s[0]))
    Q = U[:, :r]
    return Q, Q @ Q.T


def ref_dlr(Phi, F, rtol: float = REF_RTOL) -> RefResult:
    """D_LR of features Phi (n x p) against outputs F (n x C, or 1-D) from dense n x n matrices."""
    Phi = _as2d(Phi, "Phi")
    F = _as2d(F, "F")
    n = Phi.shape[0]
    if F.shape[0] != n:
        raise ValueError("Phi and F must have the same number of rows")
    if n > REF_MAX_N:
        raise ValueError(f"reference is dense O(n^2); n={n} is too large")
    H = centering(n)
    K = H @ Phi @ Phi.T @ H
    Q, P = output_projection(F, rtol)
    L = H @ P @ H
    inner = float(np.sum(K * L))  # Frobenius inner product
    nk = float(np.linalg.norm(K, "fro"))
    nl = float(np.linalg.norm(L, "fro"))
    if nk == 0 or nl == 0:
        raise ValueError("degenerate: K or L is zero")
    align = inner / (nk * nl)
    ones = np.ones(n)
    a = float(np.sum((Q.T @ ones) ** 2) / n)
    return RefResult(value=1.0 - align, alignment=align, r=Q.shape[1], a=a, inner=inner, norm_k=nk, norm_l=nl)


#: Relative eigenvalue floor of the n x n output kernel in :func:`ref_dhalf`. Its eigendecomposition puts rounding
#: noise near n * eps * lam_1 (about 1e-13 for n of a few hundred) on the null directions, whose square roots would
#: otherwise add spurious weight; genuine directions of the test data lie far above.
REF_HALF_FLOOR = 1e-11


def ref_dhalf(Phi, F, center_logits: bool = False, floor: float = REF_HALF_FLOOR) -> RefResult:
    """D_half of the square-root section of docs/dlr.md from dense n x n matrices: ``L = (Fc Fc^T)^(1/2)``.

    ``Fc Fc^T`` is eigendecomposed (n x n) and its square root built from the eigenvalues above ``floor`` times the
    largest; with ``center_logits`` the outputs are first centered across classes, ``F (I - 1 1^T / C)``.
    ``r`` is the number of eigenvalues kept, ``a`` is 0 (the kernel is centered).
    """
    Phi = _as2d(Phi, "Phi")
    F = _as2d(F, "F")
    n = Phi.shape[0]
    if n > REF_MAX_N:
        raise ValueError(f"reference is dense O(n^2); n={n} is too large")
    if center_logits:
        C = F.shape[1]
        F = F @ (np.eye(C) - np.full((C, C), 1.0 / C))
    H = centering(n)
    K = H @ Phi @ Phi.T @ H
    Fc = H @ F
    ev, U = np.linalg.eigh(Fc @ Fc.T)
    keep = ev > floor * ev.max()
    L = (U[:, keep] * np.sqrt(ev[keep])) @ U[:, keep].T
    inner = float(np.sum(K * L))
    nk = float(np.linalg.norm(K, "fro"))
    nl = float(np.linalg.norm(L, "fro"))
    align = inner / (nk * nl)
    return RefResult(value=1.0 - align, alignment=align, r=int(keep.sum()), a=0.0, inner=inner, norm_k=nk, norm_l=nl)


def ref_dlr_from_weights(Phi, W, b=None, rtol: float = REF_RTOL) -> RefResult:
    """D_LR for outputs F = Phi W^T + 1 b^T (W is C x p, b is (C,) or None), formed explicitly."""
    Phi = _as2d(Phi, "Phi")
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 1:
        W = W[None, :]
    F = Phi @ W.T
    if b is not None:
        F = F + np.asarray(b, dtype=np.float64).reshape(1, -1)
    return ref_dlr(Phi, F, rtol)


def participation_ratio_dlr(Phi, rel_tol: float = 1e-10) -> tuple[float, float, int]:
    """Closed form of D_LR when span(F) contains the whole centered feature span (and 1, or Phi is centered).

    Derivation: if span(H Phi) is inside span(F) and span(F) lies in span(H Phi) + span(1), then P_F equals
    P_c + (1 1^T / n) * [1 in span F] with P_c the projection onto span(H Phi); in both cases
    L = H P_F H = P_c, so ||L||_F^2 = rank(H Phi) = d, <K, L> = tr(P_c K) = tr(K) = sum s^2 and
    ||K||_F = sqrt(sum s^4) with s the singular values of H Phi. Hence
    CKA = sum s^2 / (sqrt(sum s^4) sqrt(d)) = sqrt(PR / d), PR = (sum s^2)^2 / sum s^4, and D_LR = 1 - sqrt(PR / d).

    Returns (D_LR, PR, d).
    """
    Phi = _as2d(Phi, "Phi")
    Phic = Phi - Phi.mean(axis=0, keepdims=True)
    s = np.linalg.svd(Phic, compute_uv=False)
    d = int(np.sum(s > rel_tol * s[0]))
    s2 = s[:d] ** 2
    pr = float(s2.sum() ** 2 / np.sum(s2**2))
    return 1.0 - float(np.sqrt(pr / d)), pr, d


def simplex_problem(C: int, per_class: int, dim: int | None = None, scale: float = 1.0, rng=None):
    """Neural-collapse data: features equal to their class mean, means forming a regular simplex.

    Balanced classes (``per_class`` rows each). The simplex vertices are e_c - 1/C in R^C, optionally rotated into
    R^dim (dim >= C) by a random orthonormal map. Returns (Phi, Y, F) where F is the least-squares fit of the
    one-hot targets Y by [Phi, 1] (a linear layer with bias), computed with lstsq.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    M = np.eye(C) - 1.0 / C  # rows: simplex vertices, centred, equal norms, equal pairwise angles
    if dim is not None and dim > C:
        R, _ = np.linalg.qr(rng.normal(size=(dim, C)))  # dim x C orthonormal columns
        M = M @ R.T
    labels = np.repeat(np.arange(C), per_class)
    rng.shuffle(labels)
    Phi = scale * M[labels]
    Y = np.eye(C)[labels]
    X = np.hstack([Phi, np.ones((Phi.shape[0], 1))])
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    F = X @ beta
    return Phi, Y, F
