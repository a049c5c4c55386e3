"""The random-readout baseline: D_LR and D_half of the same features under random Gaussian readouts.

D_half reads low for any readout once the outputs span a large share of the feature directions; the literal
D_LR does too as C approaches p. What an *untrained* readout of the same width scores on the same features is
the scale against which a trained network's value should be read (docs/output-kernel.md). It needs only the
feature moments: for ``F = Phi W^T``, ``Fc^T Fc = W Mpp W^T``, ``Fc^T Phic = W Mpp`` and the output mean is
``W mu``, so each draw costs O(p^2 C) (the weights-mode algebra, O(p^2 C + p^3), when C > p).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import check_int
from .exact import dlr_from_moments, dlr_from_weight_moments
from .output_kernels import CENTER_LOGITS, check_center_logits
from .precision import EPS64
from .result import Baseline

__all__ = ["DEFAULT_DRAWS", "random_readout_baseline"]

#: Default number of random readouts.
DEFAULT_DRAWS = 5



def random_readout_baseline(
    *,
    n: int,
    mean_phi: np.ndarray,
    m_pp: np.ndarray,
    C: int,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    center_logits: bool = CENTER_LOGITS,
) -> Baseline:
    """Literal D_LR and D_half for ``draws`` readouts ``W`` (C x p) with independent standard normal entries.

    Parameters
    ----------
    n : int
        Samples.
    mean_phi : ndarray
        Feature mean (p,).
    m_pp : ndarray
        Full symmetric centered feature Gram ``Phic^T Phic`` (p x p, float64).
    C : int
        Readout width.
    draws : int
        Number of readouts (at least 1).
    seed : int
        Seed of the readouts.
    center_logits : bool
        Class-center the random logits before D_half, as for the measured ones.

    Returns
    -------
    Baseline

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(400, 16))
    >>> m = np.cov(phi.T, bias=True) * 400
    >>> b = random_readout_baseline(n=400, mean_phi=phi.mean(0), m_pp=m, C=2, draws=3)
    >>> b.draws, b.C, 0.0 < b.sqrt_mean < 1.0, b.sqrt_std > 0.0
    (3, 2, True, True)
    """
    center_logits = check_center_logits(center_logits)
    draws, C = check_int(draws, "draws"), check_int(C, "C")
    p = m_pp.shape[0]
    rng = np.random.default_rng([int(seed), 0x5EED])
    common: dict[str, Any] = dict(rtol=None, data_eps=EPS64, feature_rel_tol=100.0 * EPS64, precision="float64",
                  center_logits=center_logits, work_eps=EPS64)
    span, half = [], []
    for _ in range(int(draws)):
        w = rng.standard_normal((int(C), p))
        if p >= C:
            wm = w @ m_pp
            res = dlr_from_moments(n=n, m_pp=m_pp, m_fp=wm, m_ff=wm @ w.T, mean_f=w @ mean_phi, **common)
        else:
            wc = w - w.mean(axis=0)
            res = dlr_from_weight_moments(
                n=n, mean_phi=mean_phi, m_pp=m_pp, wtw=w.T @ w, wtb=np.zeros(p), btb=0.0, C=int(C),
                wtw_centered=wc.T @ wc, **common,
            )
        span.append(res.value_span)
        half.append(res.value_sqrt)

    def spread(v: list[float]) -> float:
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    return Baseline(
        draws=int(draws),
        seed=int(seed),
        C=int(C),
        span_mean=float(np.mean(span)),
        span_std=spread(span),
        sqrt_mean=float(np.mean(half)),
        sqrt_std=spread(half),
        logits_centered=bool(center_logits),
    )
