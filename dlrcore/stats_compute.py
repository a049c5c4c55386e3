"""What :class:`~dlrcore.DLRStats` computes from its moments: pure functions of a flushed
:class:`~dlrcore.moments.Moments` (blocks ``[features, outputs, labels]``) and, in weights mode, the
:class:`~dlrcore.weights_head.WeightsHead`. The estimator holds state; these functions hold the orchestration of
the algebra (:mod:`dlrcore.exact`, :mod:`dlrcore.spectral`, :mod:`dlrcore.measures`) on top of it, in the
torchmetrics ``_compute`` style.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .blocked_moments import BlockedMoments
from .exact import dlr_from_moments, dlr_from_weight_moments
from .inputs import DLRInputError
from .jackknife import leave_one_block_out
from .measures import NC1Result, nc1_from_moments
from .moments import Moments
from .result import DLRResult
from .spectral import Spectrum, in_data_units, spectrum_from_moments
from .weights_head import WeightsHead

__all__ = [
    "BLOCK_NAMES",
    "measure",
    "measure_jackknife",
    "moments_in_data_units",
    "nc1_jackknife",
    "nc1_of",
    "spectrum_jackknife",
    "spectrum_of",
]

#: The blocks of the statistics' moments, in stacking order.
BLOCK_NAMES = ("features", "outputs", "labels")


def measure(
    mo: Moments,
    head: WeightsHead | None,
    *,
    C: int,
    data_eps: float,
    rtol: float | None,
    output_kernel: str,
    center_logits: bool,
    rank_features: bool = True,
) -> DLRResult:
    """Exact D_LR and D_half of the moments (outputs from ``head`` when given); ``rank_features=False`` skips the
    O(p^3) feature rank, which only the result's diagnostics and warnings use."""
    prec = "float32" if mo.work == np.float32 else "float64"
    eps_prod = float(np.finfo(mo.work).eps)
    kernel: dict[str, Any] = dict(
        rtol=rtol, feature_rel_tol=100.0 * eps_prod, precision=prec, output_kernel=output_kernel,
        center_logits=center_logits, work_eps=eps_prod,
    )
    if head is not None:
        wtw, wtb, btb, wtw_c = head.scaled(mo.block_exponent(0))
        return dlr_from_weight_moments(
            n=mo.n, mean_phi=mo.block_mean(0), m_pp=mo.block(0, 0), wtw=wtw, wtb=wtb, btb=btb, C=C,
            data_eps=max(data_eps, eps_prod), wtw_centered=wtw_c, **kernel,
        )
    return dlr_from_moments(
        n=mo.n, m_pp=mo.block(0, 0, upper=True), m_fp=mo.block(1, 0), m_ff=mo.block(1, 1, upper=True),
        mean_f=mo.block_mean(1), data_eps=data_eps, upper=True, rank_features=rank_features, **kernel,
    )


def measure_jackknife(
    blocked: BlockedMoments,
    full: DLRResult,
    head: WeightsHead | None,
    *,
    C: int,
    data_eps: float,
    rtol: float | None,
    center_logits: bool,
) -> DLRResult:
    """``full`` (the :func:`measure` of all blocks) with the block-jackknife standard errors and biases of both
    measures, each leave-one-block-out value finished exactly as ``full`` (same ``rtol`` rule and kernel options).
    Where no jackknife is possible the errors stay None and a warning says why."""

    def both(mo: Moments) -> tuple[float, float]:
        res = measure(mo, head, C=C, data_eps=data_eps, rtol=rtol, output_kernel="span", center_logits=center_logits,
                      rank_features=False)
        return res.value_span, res.value_sqrt

    jks, why = leave_one_block_out(blocked, (full.value_span, full.value_sqrt), both)
    out = replace(full, blocks=blocked.blocks)
    if jks is None:
        return out.with_warnings(why)
    span, half = jks
    return replace(out, stderr_span=span.stderr, stderr_sqrt=half.stderr, bias_span=span.bias, bias_sqrt=half.bias)


def nc1_jackknife(blocked: BlockedMoments, full: NC1Result, *, data_eps: float) -> NC1Result:
    """``full`` (the :func:`nc1_of` of all blocks) with its block-jackknife standard error and bias (None where a
    block left out leaves NC1 undefined, or with fewer samples than blocks)."""
    jks, _ = leave_one_block_out(blocked, (full.value,), lambda mo: (nc1_of(mo, data_eps=data_eps).value,))
    out = replace(full, blocks=blocked.blocks)
    return out if jks is None else replace(out, stderr=jks[0].stderr, bias=jks[0].bias)


def spectrum_jackknife(blocked: BlockedMoments, full: Spectrum, leave_out: Callable[[Moments], Spectrum]) -> Spectrum:
    """``full`` with the block-jackknife standard errors of its effective rank, participation ratio and curves,
    each leave-one-block-out spectrum made by ``leave_out`` (same k, rank rule and kernel options). Where a block
    left out gives fewer modes or an undefined spectrum, the errors stay None."""
    k = full.k
    curves = ["relative_eigenvalue", "cumulative_utilization"] + (
        ["cumulative_quality"] if full.cumulative_quality is not None else [])

    def flat(sp: Spectrum) -> list[float]:
        out = [sp.effective_rank, sp.participation_ratio]
        for name in curves:
            c = np.asarray(getattr(sp, name), dtype=np.float64)
            out += list(c) if c.size == k else [math.nan] * k
        return out

    jks, _ = leave_one_block_out(blocked, flat(full), lambda mo: flat(leave_out(mo)))
    out = replace(full, blocks=blocked.blocks)
    if jks is None:
        return out
    se = np.array([j.stderr for j in jks])
    errors: dict[str, Any] = {"stderr_effective_rank": float(se[0]), "stderr_participation_ratio": float(se[1])}
    for i, name in enumerate(curves):
        errors[f"stderr_{name}"] = se[2 + i * k : 2 + (i + 1) * k]
    return replace(out, **errors)


def spectrum_of(
    mo: Moments,
    head: WeightsHead | None,
    result: DLRResult,
    *,
    C: int,
    has_labels: bool,
    k: int | None,
    name: str,
    method: str,
    oversample: int,
    power_iters: int,
    seed: int,
) -> Spectrum:
    """The eigen-visualisation data of the moments, carrying ``result``, in the features' own units."""
    diag_sum = lambda i: float(np.trace(mo.block(i, i, upper=True)))
    common: dict[str, Any] = dict(
        n=mo.n, m_pp=mo.block(0, 0), result=result, C=C,
        m_yp=mo.block(2, 0) if has_labels else None, trace_yy=diag_sum(2) if has_labels else None,
        k=k, rank_tol=100.0 * float(np.finfo(mo.work).eps), name=name, method=method, oversample=oversample,
        power_iters=power_iters, seed=seed,
    )
    if head is not None:
        spec = spectrum_from_moments(wtw=head.scaled(mo.block_exponent(0))[0], **common)
    else:
        spec = spectrum_from_moments(m_fp=mo.block(1, 0), trace_ff=diag_sum(1), **common)
    return in_data_units(spec, mo.block_exponent(0))


def nc1_of(mo: Moments, *, data_eps: float) -> NC1Result:
    """NC1 from moments whose label block holds one-hot class ids."""
    rtol = max(1e-10, 100.0 * data_eps, 100.0 * float(np.finfo(mo.work).eps))
    ey = mo.block_exponent(2)  # class counts come from the label means: give the label block its own units
    return nc1_from_moments(
        n=mo.n, m_pp=mo.block(0, 0), m_yp=np.ldexp(mo.block(2, 0), np.int32(ey)),
        mean_y=np.ldexp(mo.block_mean(2), np.int32(ey)), rtol=rtol,
    )


def moments_in_data_units(mo: Moments, *, has_outputs: bool, has_labels: bool) -> dict[str, Any]:
    """``n``, the means and the centered co-moment blocks in the data's own units (absent blocks None).

    Raises
    ------
    DLRInputError
        If a block's moments lie outside the float64 range in those units (the measures are unaffected).
    """
    has = [True, has_outputs, has_labels]

    def unscaled(a: np.ndarray, e: int, what: str) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            out = np.ldexp(a, np.int32(e))
        if not np.isfinite(out).all() or np.any((out == 0) & (a != 0)):
            raise DLRInputError(
                f"{what}: the accumulated moments (stored scaled by 2**{-e}) lie outside the float64 range in "
                "the data's own units; the measures are unaffected. Rescale the data to read the moments"
            )
        return out

    def blk(i: int, j: int) -> np.ndarray | None:
        if not (has[i] and has[j]):
            return None
        return unscaled(mo.block(i, j), mo.block_exponent(i) + mo.block_exponent(j), BLOCK_NAMES[i])

    def mean(i: int) -> np.ndarray | None:
        return unscaled(mo.block_mean(i), mo.block_exponent(i), BLOCK_NAMES[i]) if has[i] else None

    return {
        "n": mo.n,
        "mean_features": mean(0),
        "mean_outputs": mean(1),
        "mean_labels": mean(2),
        "features_features": blk(0, 0),
        "outputs_features": blk(1, 0),
        "outputs_outputs": blk(1, 1),
        "labels_features": blk(2, 0),
        "labels_outputs": blk(2, 1),
        "labels_labels": blk(2, 2),
    }
