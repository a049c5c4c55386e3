"""The paper's eigen-visualisation: relative eigenvalue, cumulative utilization and cumulative quality.

Everything comes from the sufficient statistics of :class:`~dlrcore.DLRStats` (no second pass over the data).
With the feature covariance ``Phic^T Phic / n = sum_k rho_k v_k v_k^T`` and the sample-space eigenvectors
``u_k = Phic v_k / sqrt(n rho_k)`` (Nystrom extension),

* relative eigenvalue ``rho_k / rho_1``;
* cumulative utilization ``sum_{i<=k} ||Fc^T u_i||^2 / ||Fc||_F^2``, where ``Fc^T u_i = (Fc^T Phic) v_i /
  sqrt(n rho_i)``: how much of the learned function the top-k feature directions carry;
* cumulative quality, the same with the centered targets ``Yc`` in place of ``Fc``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from .exact import effective_rank

__all__ = ["Spectrum", "spectrum_from_moments"]


def _array_field(a: np.ndarray | None) -> list[float] | None:
    return None if a is None else [float(v) for v in a]


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Feature spectrum with utilization and quality curves, for the three-panel figure.

    Attributes
    ----------
    eigenvalues : ndarray
        ``rho_1 >= ... >= rho_k``, eigenvalues of the feature covariance ``Phic^T Phic / n``.
    relative_eigenvalue : ndarray
        ``rho_k / rho_1``.
    cumulative_utilization : ndarray
        Share of ``||Fc||_F^2`` carried by the top-k feature directions; non-decreasing, 1 at the feature rank
        when the outputs are a linear function of the features.
    cumulative_quality : ndarray or None
        The same for the centered targets (None without labels); its limit is the R^2 of the best linear readout.
    effective_rank : float
        Roy and Vetterli effective rank ``exp(H(s / sum s))`` of the singular values of ``Phic``.
    participation_ratio : float
        ``(sum rho)^2 / sum rho^2``.
    feature_rank : int
        Number of eigenvalues above the relative tolerance ``rank_tol``.
    dlr : float
        D_LR of the same statistics.
    n, p, C, k : int
        Samples, feature width, output width, modes returned.
    rank_tol : float
        Relative eigenvalue tolerance: modes with ``rho_k <= rank_tol * rho_1`` carry no utilization or quality.
    name : str
        Label for legends (for example "rich", "epoch 10").
    method : str
        ``"exact"``, or ``"sketch"`` / ``"randomized"`` for the top of the spectrum from a sketch.
    eigenvalue_error : float or None
        For sketches: estimate of ``||G - G_hat||_F / n``, which bounds how far each returned eigenvalue may lie
        below the true one (Weyl). None for exact spectra.
    """

    eigenvalues: np.ndarray
    relative_eigenvalue: np.ndarray
    cumulative_utilization: np.ndarray
    cumulative_quality: np.ndarray | None
    effective_rank: float
    participation_ratio: float
    feature_rank: int
    dlr: float
    n: int
    p: int
    C: int
    k: int
    rank_tol: float
    name: str = field(default="")
    method: str = field(default="exact")
    eigenvalue_error: float | None = field(default=None)

    @property
    def modes(self) -> np.ndarray:
        """Mode indices 1..k (the x axis of the figure)."""
        return np.arange(1, self.k + 1)

    def with_name(self, name: str) -> "Spectrum":
        """The same spectrum under another legend label."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["name"] = name
        return Spectrum(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON-compatible values (arrays become lists)."""
        out: dict[str, Any] = {}
        for f in self.__dataclass_fields__:
            v = getattr(self, f)
            out[f] = _array_field(v) if isinstance(v, np.ndarray) else v
        return out

    def to_json(self, **kwargs: Any) -> str:
        """JSON string of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Spectrum":
        """Rebuild from :meth:`to_dict`."""
        d = dict(d)
        for f in ("eigenvalues", "relative_eigenvalue", "cumulative_utilization", "cumulative_quality"):
            if d.get(f) is not None:
                d[f] = np.asarray(d[f], dtype=np.float64)
        return cls(**d)

    def utilization_at(self, k: int) -> float:
        """Cumulative utilization of the top ``k`` modes (``k`` beyond the returned modes gives the last value)."""
        return float(self.cumulative_utilization[min(k, self.k) - 1])

    def __str__(self) -> str:
        def at(curve: np.ndarray | None, k: int) -> str:
            return "-" if curve is None or self.k == 0 else f"{curve[min(k, self.k) - 1]:.3f}"

        c = max(self.C, 1)
        lines = [
            f"Spectrum{f' {self.name!r}' if self.name else ''}: D_LR = {self.dlr:.4f}, n = {self.n}, p = {self.p}, "
            f"C = {self.C}, {self.k} modes",
            f"  effective rank {self.effective_rank:.2f}, participation ratio {self.participation_ratio:.2f}, "
            f"feature rank {self.feature_rank}",
            f"  at k = C = {c}: relative eigenvalue {at(self.relative_eigenvalue, c)}, utilization "
            f"{at(self.cumulative_utilization, c)}, quality {at(self.cumulative_quality, c)}",
        ]
        if self.eigenvalue_error is not None:
            lines.append(
                f"  {self.method}: top {self.k} modes; each eigenvalue may be low by up to {self.eigenvalue_error:.3g} "
                "(effective rank needs the whole spectrum)"
            )
        return "\n".join(lines)


def _cumulative_share(increments: np.ndarray, total: float) -> np.ndarray:
    if not total > 0:
        return np.zeros_like(increments)
    return np.minimum(np.cumsum(increments) / total, 1.0)


def spectrum_from_moments(
    *,
    n: int,
    m_pp: np.ndarray,
    dlr: float,
    C: int,
    m_fp: np.ndarray | None = None,
    trace_ff: float | None = None,
    wtw: np.ndarray | None = None,
    m_yp: np.ndarray | None = None,
    trace_yy: float | None = None,
    k: int | None = None,
    rank_tol: float = 1e-12,
    name: str = "",
) -> Spectrum:
    """Spectrum from centered moments.

    Parameters
    ----------
    n : int
        Samples.
    m_pp : ndarray
        ``Phic^T Phic`` (p x p, symmetric).
    dlr : float
        D_LR of the same statistics (carried for legends).
    C : int
        Output width.
    m_fp, trace_ff : ndarray, float
        ``Fc^T Phic`` (C x p) and ``||Fc||_F^2``, for outputs accumulated explicitly.
    wtw : ndarray
        ``W^T W`` (p x p) instead of ``m_fp`` when outputs are ``Phi W^T + b`` (weights-aware statistics).
    m_yp, trace_yy : ndarray, float, optional
        ``Yc^T Phic`` and ``||Yc||_F^2`` for the quality curve.
    k : int, optional
        Modes to return; default all supported modes, ``min(p, n - 1)``.
    rank_tol : float
        Relative eigenvalue tolerance below which modes carry no utilization or quality.
    name : str
        Legend label.

    Returns
    -------
    Spectrum
    """
    p = m_pp.shape[0]
    k_max = max(min(p, n - 1), 1)
    if k is None:
        k = k_max
    if not (1 <= int(k) <= p):
        raise ValueError(f"k must be in [1, {p}], got {k}")
    k = min(int(k), k_max)
    s, v = scipy.linalg.eigh(m_pp, check_finite=False)
    s, v = np.clip(s[::-1], 0.0, None), v[:, ::-1]
    rho = s / n
    top = rho[0] if rho.size else 0.0
    live = rho > rank_tol * top if top > 0 else np.zeros_like(rho, dtype=bool)
    feature_rank = int(live.sum())
    safe = np.where(live, n * rho, 1.0)
    if wtw is not None:
        # Fc^T u_i = W Phic^T u_i = sqrt(n rho_i) W v_i
        inc_f = np.where(live, n * rho * np.einsum("ij,ij->j", v, wtw @ v), 0.0)
        total_f = float(np.einsum("ij,ij->", wtw, m_pp))  # tr(W M_pp W^T)
    else:
        proj = m_fp @ v
        inc_f = np.where(live, np.einsum("ij,ij->j", proj, proj) / safe, 0.0)
        total_f = float(trace_ff)
    util = _cumulative_share(inc_f, total_f)
    quality = None
    if m_yp is not None:
        proj = m_yp @ v
        inc_y = np.where(live, np.einsum("ij,ij->j", proj, proj) / safe, 0.0)
        quality = _cumulative_share(inc_y, float(trace_yy))[:k]
    sum_rho = float(rho.sum())
    pr = sum_rho**2 / float((rho**2).sum()) if sum_rho > 0 else 0.0
    rel = rho / top if top > 0 else np.zeros_like(rho)
    return Spectrum(
        eigenvalues=rho[:k].copy(),
        relative_eigenvalue=rel[:k].copy(),
        cumulative_utilization=util[:k].copy(),
        cumulative_quality=quality,
        effective_rank=effective_rank(s, rel_tol=rank_tol),
        participation_ratio=float(pr),
        feature_rank=feature_rank,
        dlr=float(dlr),
        n=int(n),
        p=int(p),
        C=int(C),
        k=int(k),
        rank_tol=float(rank_tol),
        name=name,
    )
