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

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.linalg

from .checks import check_choice
from .eigen import effective_rank
from .inputs import DLRInputError
from .precision import EPS64
from .record import Record
from .result import DLRResult

__all__ = ["Spectrum", "in_data_units", "spectrum_from_moments", "top_eigh"]



@dataclass(frozen=True, eq=False)
class Spectrum(Record):
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
        The measure chosen by ``output_kernel`` for the same statistics (the literal D_LR by default).
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
        below the true one (Weyl). For the randomized spectrum of exact statistics
        (``DLRStats.spectrum(k, method="randomized")``) the same quantity summed from the residual itself plus a
        rounding allowance: a bound, not an estimate.
        None for exact spectra.
    output_kernel : str
        Which measure ``dlr`` holds (``"span"`` literal D_LR, ``"sqrt"`` D_half).
    dlr_span, dlr_sqrt : float
        Both measures of the same statistics.
    logits_centered : bool
        Whether D_half centered the logits across classes first.
    blocks : int or None
        With ``DLRStats(blocks=B)``: B, and the ``stderr_*`` fields hold the block-jackknife standard errors of
        the summary numbers and of each curve, mode by mode (None without blocks, or where a block left out
        changes the number of modes).
    stderr_effective_rank, stderr_participation_ratio : float or None
    stderr_relative_eigenvalue, stderr_cumulative_utilization, stderr_cumulative_quality : ndarray or None
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
    output_kernel: str = field(default="span")
    dlr_span: float = field(default=math.nan)
    dlr_sqrt: float = field(default=math.nan)
    logits_centered: bool = field(default=False)
    blocks: int | None = field(default=None)
    stderr_effective_rank: float | None = field(default=None)
    stderr_participation_ratio: float | None = field(default=None)
    stderr_relative_eigenvalue: np.ndarray | None = field(default=None)
    stderr_cumulative_utilization: np.ndarray | None = field(default=None)
    stderr_cumulative_quality: np.ndarray | None = field(default=None)

    @property
    def modes(self) -> np.ndarray:
        """Mode indices 1..k (the x axis of the figure)."""
        return np.arange(1, self.k + 1)

    def with_name(self, name: str) -> Spectrum:
        """The same spectrum under another legend label."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["name"] = name
        return Spectrum(**d)

    @property
    def value(self) -> float:
        """The measure the spectrum carries (``dlr``), under the name every result uses."""
        return self.dlr

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        d.setdefault("dlr_span", d.get("dlr", math.nan))  # saved before D_half existed: dlr was the literal value
        return d

    def utilization_at(self, k: int) -> float:
        """Cumulative utilization of the top ``k`` modes (``k`` beyond the returned modes gives the last value)."""
        return float(self.cumulative_utilization[min(k, self.k) - 1])

    def __str__(self) -> str:
        def at(curve: np.ndarray | None, k: int) -> str:
            return "-" if curve is None or self.k == 0 else f"{curve[min(k, self.k) - 1]:.3f}"

        c = max(self.C, 1)
        lines = [
            f"Spectrum{f' {self.name!r}' if self.name else ''}: D_LR = {self.dlr_span:.4f}, "
            f"D_half = {self.dlr_sqrt:.4f}{' (centered logits)' if self.logits_centered else ''} (lower = richer), "
            f"n = {self.n}, p = {self.p}, C = {self.C}, {self.k} modes",
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


def cumulative_share(increments: np.ndarray, total: float) -> np.ndarray:
    if not total > 0:
        return np.zeros_like(increments)
    return np.minimum(np.cumsum(increments) / total, 1.0)


def top_eigh(
    m: np.ndarray, k: int, *, oversample: int = 16, power_iters: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Top-k eigenpairs of a symmetric PSD matrix by randomized subspace iteration, with an error bound.

    A Gaussian start of ``k + oversample`` columns, ``power_iters`` QR-normalised products with ``m`` and a
    Rayleigh-Ritz step (Halko, Martinsson and Tropp 2011, algorithms 4.4 and 5.3): O(p^2 (k + oversample)
    (power_iters + 1)) against O(p^3) for the full ``eigh``.

    Returns
    -------
    theta : ndarray
        The k largest Ritz values, descending. Each is at most the true eigenvalue of the same index (Cauchy
        interlacing) and at least that eigenvalue minus ``bound``.
    v : ndarray
        Their Ritz vectors (p x k, orthonormal columns).
    bound : float
        ``||M - P M P||_F`` for the projector P on the final subspace Q, summed from the residual itself in column
        blocks (a difference of squares would cancel), plus a rounding allowance ``10 p eps ||M||_F``; hence
        ``0 <= lambda_i - theta_i <= bound`` (Weyl), up to rounding of the same order.

    Examples
    --------
    >>> m = np.diag([5.0, 3.0, 1.0, 0.5, 0.1])
    >>> theta, v, bound = top_eigh(m, 2, oversample=3, power_iters=1)
    >>> np.allclose(theta, [5.0, 3.0]) and bound < 1e-12
    True
    """
    p = m.shape[0]
    k = int(k)
    if not 1 <= k <= p:
        raise ValueError(f"k must be in [1, {p}], got {k}")
    if oversample < 0 or power_iters < 0:
        raise ValueError(f"oversample and power_iters must be >= 0, got {oversample} and {power_iters}")
    s = min(p, k + int(oversample))
    q = np.random.default_rng(seed).standard_normal((p, s))
    for _ in range(int(power_iters) + 1):
        q, _ = scipy.linalg.qr(m @ q, mode="economic", check_finite=False)
    mq = m @ q
    t = q.T @ mq
    t = (t + t.T) / 2.0
    theta, w = scipy.linalg.eigh(t, check_finite=False)
    theta, w = np.clip(theta[::-1], 0.0, None), w[:, ::-1]
    qt = q @ t  # M - P M P = M - (Q T) Q^T, formed a block of columns at a time
    sq = 0.0
    step = max(1, (1 << 24) // max(p, 1))  # about 128 MB of float64 per block
    for j in range(0, p, step):
        e = m[:, j : j + step] - qt @ q[j : j + step].T
        sq += float(np.einsum("ij,ij->", e, e))
    norm_m = math.sqrt(float(np.einsum("ij,ij->", m, m)))
    bound = math.sqrt(sq) + 10.0 * p * EPS64 * norm_m
    return theta[:k], q @ w[:, :k], bound


def spectrum_from_moments(
    *,
    n: int,
    m_pp: np.ndarray,
    result: DLRResult,
    C: int,
    m_fp: np.ndarray | None = None,
    trace_ff: float | None = None,
    wtw: np.ndarray | None = None,
    m_yp: np.ndarray | None = None,
    trace_yy: float | None = None,
    k: int | None = None,
    rank_tol: float = 1e-12,
    name: str = "",
    method: str = "exact",
    oversample: int = 16,
    power_iters: int = 2,
    seed: int = 0,
) -> Spectrum:
    """Spectrum from centered moments.

    Parameters
    ----------
    n : int
        Samples.
    m_pp : ndarray
        ``Phic^T Phic`` (p x p, symmetric).
    result : DLRResult
        D_LR and D_half of the same statistics (carried for legends).
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
    method : {"exact", "randomized"}
        ``"exact"``: the full ``eigh`` of ``m_pp`` (O(p^3)). ``"randomized"``: the top ``k`` modes from
        :func:`top_eigh` (O(p^2 k)), with ``eigenvalue_error`` its bound divided by n; the participation ratio
        stays exact (``tr(M)^2 / ||M||_F^2``), the effective rank, which needs every eigenvalue, is NaN, and
        ``feature_rank`` counts the live modes among the top k.
    oversample, power_iters, seed
        Parameters of the randomized method.

    Returns
    -------
    Spectrum
    """
    check_choice(method, "method", ("exact", "randomized"))
    p = m_pp.shape[0]
    k_max = max(min(p, n - 1), 1)
    if k is None:
        if method == "randomized":
            raise ValueError("method='randomized' needs k, the number of top modes to compute")
        k = k_max
    if not (1 <= int(k) <= p):
        raise ValueError(f"k must be in [1, {p}], got {k}")
    k = min(int(k), k_max)
    bound = None
    if method == "randomized":
        s, v, bound = top_eigh(m_pp, k, oversample=oversample, power_iters=power_iters, seed=seed)
    else:
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
        total_f = float(trace_ff or 0.0)
    util = cumulative_share(inc_f, total_f)
    quality = None
    if m_yp is not None:
        proj = m_yp @ v
        inc_y = np.where(live, np.einsum("ij,ij->j", proj, proj) / safe, 0.0)
        quality = cumulative_share(inc_y, float(trace_yy or 0.0))[:k]
    if bound is None:
        sum_rho, sum_sq = float(rho.sum()), float((rho**2).sum())
    else:  # the whole spectrum's sums from the moments themselves
        sum_rho, sum_sq = float(np.trace(m_pp)) / n, float(np.einsum("ij,ij->", m_pp, m_pp)) / n**2
    pr = sum_rho**2 / sum_sq if sum_rho > 0 else 0.0
    rel = rho / top if top > 0 else np.zeros_like(rho)
    return Spectrum(
        eigenvalues=rho[:k].copy(),
        relative_eigenvalue=rel[:k].copy(),
        cumulative_utilization=util[:k].copy(),
        cumulative_quality=quality,
        effective_rank=effective_rank(s, rel_tol=rank_tol) if bound is None else float("nan"),
        participation_ratio=float(pr),
        feature_rank=feature_rank,
        dlr=float(result.value),
        n=int(n),
        p=int(p),
        C=int(C),
        k=int(k),
        rank_tol=float(rank_tol),
        name=name,
        method=method,
        eigenvalue_error=None if bound is None else bound / n,
        **kernel_fields(result),
    )


def kernel_fields(result: DLRResult) -> dict[str, Any]:
    """The output-kernel fields a :class:`Spectrum` carries from the result of the same statistics."""
    return dict(
        output_kernel=result.output_kernel,
        dlr_span=result.value_span,
        dlr_sqrt=result.value_sqrt,
        logits_centered=result.logits_centered,
    )


def in_data_units(spec: Spectrum, exponent: int) -> Spectrum:
    """``spec`` computed from features scaled by ``2**-exponent`` (:mod:`dlrcore.scaling`), with its eigenvalues
    (and their error) given back in the features' own units.

    Raises
    ------
    DLRInputError
        When those eigenvalues lie outside the float64 range; everything else in the spectrum is scale-free.
    """
    if exponent == 0:
        return spec
    with np.errstate(over="ignore", under="ignore"):
        ev = np.ldexp(spec.eigenvalues, np.int32(2 * exponent))
        err = None if spec.eigenvalue_error is None else float(np.ldexp(spec.eigenvalue_error, np.int32(2 * exponent)))
    lost = (ev == 0) & (spec.eigenvalues != 0)
    if not np.isfinite(ev).all() or (err is not None and not np.isfinite(err)) or lost.any():
        direction = "above" if not np.isfinite(ev).all() else "below"
        raise DLRInputError(
            f"features: the covariance eigenvalues (about 2**{2 * exponent} times {float(spec.eigenvalues[0]):.3g}) "
            f"lie {direction} the float64 range, so the spectrum cannot be given in the features' units; D_LR, "
            "D_half and every ratio are unaffected. Rescale the features (the measures are scale invariant)"
        )
    return replace(spec, eigenvalues=ev, eigenvalue_error=err)
