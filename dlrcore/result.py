"""The result object returned by every D_LR estimator."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DLRResult"]


@dataclass(frozen=True)
class DLRResult:
    """D_LR and the diagnostics needed to judge it.

    Attributes
    ----------
    value : float
        D_LR in [0, 1]; lower is richer.
    n, p, C : int
        Samples, feature width, output width.
    output_rank : int
        Rank r of the raw outputs kept under ``rtol`` (the dimension of the output span used).
    constant_share : float
        ``a = ||Q^T 1||^2 / n``: the share of the constant function inside the output span, in [0, 1].
    method : str
        ``"exact"`` (from output statistics), ``"exact-weights"`` (outputs derived from the last layer's weights),
        ``"randomized"`` (multi-pass range finder) or ``"sketch"`` (one-pass sketch).
    rtol : float
        Relative singular-value tolerance that decided ``output_rank``.
    precision : str
        Precision of the products the statistics were accumulated from (``"float32"`` or ``"float64"``).
    feature_rank : int or None
        Numerical rank of the centered features; None where it was not computed (the exact output path skips the
        O(p^3) factorisation for p > 1024).
    output_effective_rank : float
        Roy-Vetterli effective rank of the centered outputs. Far below ``output_rank - constant_share`` means the
        output span is anisotropic: some kept output directions are weak, and D_LR counts them fully.
    alignment : float
        ``<K, L>_F / (||K||_F ||L||_F)``, i.e. ``1 - value``.
    warnings : tuple of str
        Conditions under which the value should be read with care.
    error_estimate : float or None
        For the randomized and sketch methods, an a-posteriori bound on ``|value - exact D_LR|``: three standard
        errors of the stochastic part (delta method over the probes) plus a rounding floor. None for exact methods.
    sketch_size : int or None
        Random directions the sketch captured exactly (range-finder / Nystrom columns); None for exact methods.
    probes : int or None
        Stochastic probes of the residual; None for exact methods.
    passes : int or None
        Passes over the data (1 for the one-pass sketch); None for exact methods.
    """

    value: float
    n: int
    p: int
    C: int
    output_rank: int
    constant_share: float
    method: str
    rtol: float
    precision: str
    feature_rank: int | None
    output_effective_rank: float
    alignment: float
    warnings: tuple[str, ...] = field(default=())
    error_estimate: float | None = None
    sketch_size: int | None = None
    probes: int | None = None
    passes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain dict of JSON-compatible values."""
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d

    def to_json(self, **kwargs: Any) -> str:
        """Return the result as a JSON string (keyword arguments go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DLRResult":
        """Rebuild a result from :meth:`to_dict` output (for example read back from JSON)."""
        d = dict(d)
        d["warnings"] = tuple(d.get("warnings", ()))
        return cls(**d)

    def __str__(self) -> str:
        est = "" if self.error_estimate is None else f" +- {self.error_estimate:.2g}"
        lines = [
            f"D_LR = {self.value:.6f}{est}   ({self.method}, {self.precision} products)",
            f"  samples n = {self.n}, feature width p = {self.p} (rank {self.feature_rank}), outputs C = {self.C}",
            f"  output rank r = {self.output_rank} at rtol = {self.rtol:.3g}, "
            f"effective rank of centered outputs = {self.output_effective_rank:.2f}",
            f"  constant share a = {self.constant_share:.6f}",
        ]
        if self.sketch_size is not None:
            lines.append(
                f"  sketch: {self.sketch_size} directions, {self.probes} probes, {self.passes} pass(es) over the data"
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __float__(self) -> float:
        return float(self.value)
