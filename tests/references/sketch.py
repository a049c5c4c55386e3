"""Plain float64 NumPy references for the sketch tests (nothing here imports dlrcore).

``ref_dlr64`` is the algebraic form of docs/dlr.md ("Algebra that never forms an n x n matrix"), computed
directly from the data rather than from sufficient statistics:

    Phic = Phi - mean(Phi)                       (centered features)
    Q    = orthonormal basis of span(F)          (thin SVD of the raw F, sigma_i > rtol * sigma_1 kept)
    q    = Q^T 1 / sqrt(n)
    D    = 1 - ||Q^T Phic||_F^2 / (||Phic^T Phic||_F * ||I_r - q q^T||_F)

It is O(n (p + C)^2), so it runs at the sizes the sketch tests use (n of a few thousand), where the dense
n x n reference of ``tests/references/dlr.py`` would be slow.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["covariance_eigenvalues", "make_problem", "ref_dlr64", "ref_utilization"]


def _as2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def ref_dlr64(phi, f, rtol: float) -> float:
    """D_LR in float64 from the definition's algebra (see the module docstring)."""
    phi, f = _as2d(phi), _as2d(f)
    n = phi.shape[0]
    phic = phi - phi.mean(axis=0)
    u, s, _ = scipy.linalg.svd(f, full_matrices=False)
    r = int(np.sum(s > rtol * s[0]))
    q_basis = u[:, :r]
    q = q_basis.T @ np.ones(n) / np.sqrt(n)
    inner = float(np.sum((q_basis.T @ phic) ** 2))
    norm_k = float(np.linalg.norm(phic.T @ phic, "fro"))
    norm_l = float(np.linalg.norm(np.eye(r) - np.outer(q, q), "fro"))
    return 1.0 - inner / (norm_k * norm_l)


def covariance_eigenvalues(phi) -> np.ndarray:
    """Eigenvalues of Phic^T Phic / n, descending (numpy.linalg.eigvalsh)."""
    phi = _as2d(phi)
    phic = phi - phi.mean(axis=0)
    return np.linalg.eigvalsh(phic.T @ phic / phi.shape[0])[::-1]


def ref_utilization(phi, f) -> np.ndarray:
    """Cumulative utilization sum_{i<=k} ||Fc^T u_i||^2 / ||Fc||_F^2 over all feature modes (docs/dlr.md)."""
    phi, f = _as2d(phi), _as2d(f)
    n = phi.shape[0]
    phic = phi - phi.mean(axis=0)
    fc = f - f.mean(axis=0)
    rho, v = np.linalg.eigh(phic.T @ phic / n)
    rho, v = rho[::-1], v[:, ::-1]
    u = phic @ v / np.sqrt(n * rho)
    inc = np.sum((fc.T @ u) ** 2, axis=0)
    return np.cumsum(inc) / float(np.sum(fc * fc))


def make_problem(seed: int, n: int, p: int, C: int, spectrum: str = "flat", dtype=np.float64, noise: float = 0.1):
    """Features with a nonzero mean and a flat (all scales 1) or decaying (scale 1/k) spectrum; noisy linear outputs
    with a bias, so the outputs' span includes directions outside the features' top modes and the constant."""
    rng = np.random.default_rng(seed)
    if spectrum == "flat":
        scales = np.ones(p)
    elif spectrum == "decay":
        scales = 1.0 / np.arange(1, p + 1)
    else:
        raise ValueError(spectrum)
    phi = rng.normal(size=(n, p)) * scales + rng.normal(size=p)
    f = phi @ rng.normal(size=(p, C)) + rng.normal(size=C) + noise * rng.normal(size=(n, C))
    return phi.astype(dtype), f.astype(dtype)
