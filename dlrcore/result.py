"""The result objects: :class:`DLRResult` and its random-readout :class:`Baseline`, :class:`CKAResult` and
:class:`NC1Result`, all on one dict/JSON protocol (:class:`~dlrcore.record.Record`). :class:`~dlrcore.Spectrum`
lives beside the spectral algebra on the same protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .record import Record

__all__ = ["Baseline", "CKAResult", "DLRResult", "NC1Result", "jackknife_interval"]

#: How both numbers read, printed under every result.
READING = (
    "lower = richer; D_LR counts every output direction equally, D_half weighs them by strength "
    "(read D_half for cross-entropy logits; docs/output-kernel.md)"
)


@dataclass(frozen=True)
class Baseline(Record):
    """Both measures for random Gaussian readouts of the same features: what an untrained readout would score.

    Computed from the feature moments alone (:meth:`dlrcore.DLRStats.baseline`): each draw is a readout
    ``W`` (C x p) with independent standard normal entries and no bias, ``F = Phi W^T``.

    Attributes
    ----------
    draws : int
        Number of random readouts.
    seed : int
        Seed of the draws.
    C : int
        Their width (the width of the measured outputs).
    span_mean, span_std, sqrt_mean, sqrt_std : float
        Mean and standard deviation (ddof 1; 0 for one draw) over the draws of the literal D_LR and D_half.
    logits_centered : bool
        Whether D_half centered the random logits across classes, as for the measured ones.
    """

    draws: int
    seed: int
    C: int
    span_mean: float
    span_std: float
    sqrt_mean: float
    sqrt_std: float
    logits_centered: bool = False

    def summary(self) -> str:
        """One line: both baselines with their spread."""
        return (
            f"random-readout baseline ({self.draws} draws of C = {self.C}): D_LR {self.span_mean:.3f} +- "
            f"{self.span_std:.3f}, D_half {self.sqrt_mean:.3f} +- {self.sqrt_std:.3f}"
        )

    @property
    def value(self) -> float:
        """The mean D_half of the random readouts (the number a D_half reading is compared with)."""
        return self.sqrt_mean

@dataclass(frozen=True)
class DLRResult(Record):
    """D_LR and the diagnostics needed to judge it.

    Attributes
    ----------
    value : float
        The measure chosen by ``output_kernel``, in [0, 1]; lower is richer.
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
        For the randomized and sketch methods, an a-posteriori bound on ``|value - exact value|``: three standard
        errors of the stochastic part (delta method over the probes) plus a rounding floor. None for exact methods.
    sketch_size : int or None
        Random directions the sketch captured exactly (range-finder / Nystrom columns); None for exact methods.
    probes : int or None
        Stochastic probes of the residual; None for exact methods.
    passes : int or None
        Passes over the data (1 for the one-pass sketch); None for exact methods.
    output_kernel : str
        Which measure ``value`` holds: ``"span"``, the paper's literal D_LR (``L`` the centered projection onto the
        output span), or ``"sqrt"``, D_half (``L = (Fc Fc^T)^(1/2)``, output directions weighed by strength).
    value_span, value_sqrt : float
        Both measures, always computed: the literal D_LR and D_half.
    error_span, error_sqrt : float or None
        Their error estimates (approximate methods; None for exact ones).
    sqrt_rank : int
        Centered output directions D_half used (those above ``sqrt_tol`` times the largest eigenvalue).
    sqrt_tol : float
        Relative eigenvalue floor of D_half (:func:`dlrcore.exact.sqrt_tolerance`).
    logits_centered : bool
        Whether D_half centered the logits across classes first (``center_logits``).
    baseline : Baseline or None
        The same measures for random Gaussian readouts of the same features (``baseline=True``), else None.
    blocks : int or None
        Jackknife blocks of the statistics (``DLRStats(blocks=B)``), None without them.
    stderr_span, stderr_sqrt : float or None
        Block-jackknife standard errors of ``value_span`` and ``value_sqrt`` (sampling noise: what another sample
        of the same size would change), None without blocks or where the jackknife was not possible (the reason
        is then in ``warnings``). ``stderr`` is the chosen kernel's.
    bias_span, bias_sqrt : float or None
        Their jackknife bias estimates; ``value - bias`` is the bias-corrected estimate (``bias_corrected``).
        docs/uncertainty.md says how to read both.

    Examples
    --------
    >>> import numpy as np, dlrcore
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(2000, 8)); out = phi[:, :2] + 0.5 * rng.normal(size=(2000, 2))
    >>> res = dlrcore.DLRStats(blocks=10).update(phi, out).result()
    >>> res.blocks, 0 < res.stderr < 0.05, res.stderr == res.stderr_span
    (10, True, True)
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
    output_kernel: str = "span"
    value_span: float = math.nan
    value_sqrt: float = math.nan
    error_span: float | None = None
    error_sqrt: float | None = None
    sqrt_rank: int = 0
    sqrt_tol: float = 0.0
    logits_centered: bool = False
    baseline: Baseline | None = None
    blocks: int | None = None
    stderr_span: float | None = None
    stderr_sqrt: float | None = None
    bias_span: float | None = None
    bias_sqrt: float | None = None

    @property
    def stderr(self) -> float | None:
        """Jackknife standard error of ``value`` (the chosen output kernel's), None without blocks."""
        return self.stderr_sqrt if self.output_kernel == "sqrt" else self.stderr_span

    @property
    def bias(self) -> float | None:
        """Jackknife bias estimate of ``value`` (the chosen output kernel's), None without blocks."""
        return self.bias_sqrt if self.output_kernel == "sqrt" else self.bias_span

    @property
    def bias_corrected(self) -> float | None:
        """The bias-corrected estimate ``value - bias``, None without blocks."""
        return _corrected(self.value, self.bias)

    def interval(self, level: float = 0.95) -> tuple[float, float] | None:
        """The jackknife ``level`` interval of ``value`` (the chosen output kernel's): ``bias_corrected +- t SE``
        with ``blocks - 1`` degrees of freedom (:func:`jackknife_interval`); None without blocks."""
        return jackknife_interval(self.value, self.stderr, self.bias, self.blocks, level)

    def with_baseline(self, baseline: Baseline) -> DLRResult:
        """The same result carrying ``baseline``."""
        return replace(self, baseline=baseline)

    def with_warnings(self, *extra: str) -> DLRResult:
        """The same result with ``extra`` warnings appended."""
        return replace(self, warnings=(*self.warnings, *extra)) if extra else self

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        d.setdefault("value_span", d.get("value", math.nan))  # saved before D_half existed: value was the literal
        return d

    def __str__(self) -> str:
        def line(name: str, kernel: str, value: float, err: float | None, se: float | None, bias: float | None,
                 what: str) -> str:
            est = "" if err is None else f" +- {err:.2g}"
            jk = _jackknife_note(se, bias, self.blocks)
            mark = "  <- value" if kernel == self.output_kernel else ""
            return f"{name} = {value:.6f}{est}{jk}   {what}{mark}"

        centered = ", logits centered across classes" if self.logits_centered else ""
        lines = [
            line("D_LR", "span", self.value_span, self.error_span, self.stderr_span, self.bias_span,
                 "literal: projection onto the output span"),
            line("D_half", "sqrt", self.value_sqrt, self.error_sqrt, self.stderr_sqrt, self.bias_sqrt,
                 f"square-root output kernel{centered}"),
            f"  {READING}",
            f"  {self.method}, {self.precision} products",
            f"  samples n = {self.n}, feature width p = {self.p} (rank {self.feature_rank}), outputs C = {self.C}",
            f"  output rank r = {self.output_rank} at rtol = {self.rtol:.3g}, "
            f"effective rank of centered outputs = {self.output_effective_rank:.2f}",
            f"  constant share a = {self.constant_share:.6f}; D_half used {self.sqrt_rank} centered output "
            f"directions (floor {self.sqrt_tol:.2g})",
        ]
        if self.baseline is not None:
            lines.append(f"  {self.baseline.summary()}")
        if self.sketch_size is not None:
            lines.append(
                f"  sketch: {self.sketch_size} directions, {self.probes} probes, {self.passes} pass(es) over the data"
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _corrected(value: float, bias: float | None) -> float | None:
    return None if bias is None else value - bias


def jackknife_interval(
    value: float, stderr: float | None, bias: float | None, blocks: int | None, level: float = 0.95
) -> tuple[float, float] | None:
    """The ``level`` interval ``(value - bias) +- t SE``, with ``t`` the Student quantile of ``blocks - 1`` degrees
    of freedom (2.26 at 10 blocks for 95 %), or None without a standard error.

    In the simulation of docs/uncertainty.md ("Coverage") these 95 % intervals held the population value in 0.90
    to 0.98 of the draws in every setting (n = 500 to 10000, p = 16 to 512, ten blocks).

    Examples
    --------
    >>> lo, hi = jackknife_interval(0.30, 0.01, 0.002, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.2754, 0.3206)
    """
    if stderr is None or blocks is None:
        return None
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2.0, blocks - 1)) * stderr
    center = value - (bias or 0.0)
    return center - half, center + half


class _Jackknifed:
    """``bias_corrected`` and the printed note of a record with ``value``, ``stderr``, ``bias`` and ``blocks``."""

    value: float
    stderr: float | None
    bias: float | None
    blocks: int | None

    @property
    def bias_corrected(self) -> float | None:
        """The bias-corrected estimate ``value - bias``, None without blocks."""
        return _corrected(self.value, self.bias)

    def _note(self) -> str:
        return _jackknife_note(self.stderr, self.bias, self.blocks)

    def interval(self, level: float = 0.95) -> tuple[float, float] | None:
        """The jackknife ``level`` interval of ``value`` (:func:`jackknife_interval`), None without blocks."""
        return jackknife_interval(self.value, self.stderr, self.bias, self.blocks, level)


def _jackknife_note(se: float | None, bias: float | None, blocks: int | None) -> str:
    """`` +- 0.012 (jackknife SE, 10 blocks; bias -0.003)``, or "" without a jackknife standard error."""
    if se is None:
        return ""
    tail = "" if bias is None else f"; bias {bias:.2g}"
    return f" +- {se:.2g} (jackknife SE, {blocks} blocks{tail})"


@dataclass(frozen=True)
class CKAResult(_Jackknifed, Record):
    """Linear CKA between two representations, with its sample count and the widths ``p_x`` and ``p_y`` of the
    two (CKA compares two feature matrices, so there is no output width C).

    With ``CKAStats(blocks=B)``, ``blocks`` is B and ``stderr`` and ``bias`` are the block-jackknife standard error
    and bias estimate of ``value`` (None without blocks, or with fewer samples than blocks); ``value - bias`` is
    the bias-corrected estimate (``bias_corrected``).

    Examples
    --------
    >>> import numpy as np, dlrcore
    >>> x = np.random.default_rng(0).normal(size=(500, 4))
    >>> res = dlrcore.CKAStats(blocks=10).update(x, x[:, :2]).result()
    >>> res.blocks, res.stderr is not None
    (10, True)
    """

    value: float
    n: int
    p_x: int
    p_y: int
    precision: str
    blocks: int | None = None
    stderr: float | None = None
    bias: float | None = None

    def __str__(self) -> str:
        jk = self._note()
        return f"linear CKA = {self.value:.6f}{jk}   (n = {self.n}, widths {self.p_x} and {self.p_y})"


@dataclass(frozen=True)
class NC1Result(_Jackknifed, Record):
    """NC1 = tr(Sigma_W Sigma_B^+) / C with the class counts it was computed from.

    With ``DLRStats(blocks=B)``, ``blocks`` is B and ``stderr`` and ``bias`` the block-jackknife standard error and
    bias estimate of ``value`` (None without blocks, or where a block left out leaves fewer than two classes).

    Examples
    --------
    >>> import numpy as np, dlrcore
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, size=600); x = 3 * np.eye(3)[y] + rng.normal(size=(600, 3))
    >>> res = dlrcore.DLRStats(blocks=10).update(x, x, labels=y).nc1()
    >>> res.blocks, res.stderr is not None
    (10, True)
    """

    value: float
    n: int
    p: int
    num_classes: int
    classes_present: int
    between_rank: int
    blocks: int | None = None
    stderr: float | None = None
    bias: float | None = None

    def __str__(self) -> str:
        jk = self._note()
        return (
            f"NC1 = {self.value:.6g}{jk}   (n = {self.n}, p = {self.p}, {self.classes_present} of "
            f"{self.num_classes} classes present, rank of Sigma_B {self.between_rank})"
        )
