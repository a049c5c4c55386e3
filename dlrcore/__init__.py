"""dlrcore: the dynamical low-rank measure D_LR of Nam et al. (ICLR 2026), exact and streaming.

D_LR compares a network's penultimate features with the span of its outputs: near 0 when the features
concentrate in the few directions the outputs use (rich dynamics), near 1 when they spread over many (lazy).

Examples
--------
>>> import numpy as np, dlrcore
>>> rng = np.random.default_rng(0)
>>> phi = rng.normal(size=(300, 40)); out = phi @ rng.normal(size=(40, 5))
>>> 0.0 <= dlrcore.dlr(phi, out).value <= 1.0
True
"""

from __future__ import annotations

from typing import Any

from .inputs import DLRInputError
from .result import DLRResult
from .stats import DLRStats

__all__ = ["DLRInputError", "DLRResult", "DLRStats", "dlr", "dlr_from_weights", "__version__"]
__version__ = "0.1.0"


def dlr(features: Any, outputs: Any, *, rtol: float | None = None, precision: str = "auto") -> DLRResult:
    """Exact D_LR of penultimate ``features`` (n x p) against the last layer's ``outputs`` (n x C).

    Parameters
    ----------
    features : array_like
        n x p features: the input of the network's last linear layer, one row per sample.
    outputs : array_like
        n x C outputs of that layer (logits or regression outputs); 1-D means C = 1.
    rtol : float, optional
        Relative singular-value tolerance that decides the output span (``sigma_i > rtol * sigma_1``).
        None picks a default from the data precision; the value used and the rank are in the result.
    precision : {"auto", "float32", "float64"}
        Precision of the BLAS products, see :class:`DLRStats`.

    Returns
    -------
    DLRResult
        ``value`` is D_LR in [0, 1] (lower is richer), with n, p, C, output rank, constant share and warnings.

    See Also
    --------
    DLRStats : the same estimate accumulated over batches.
    dlr_from_weights : for huge output widths, from the last layer's weight and bias.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(300, 40))
    >>> res = dlr(phi, phi @ rng.normal(size=(40, 5)) + 1.0)
    >>> (res.n, res.p, res.C, res.output_rank)
    (300, 40, 5, 5)
    """
    return DLRStats(precision=precision).update(features, outputs).result(rtol=rtol)


def dlr_from_weights(
    features: Any,
    weight: Any,
    bias: Any = None,
    *,
    rtol: float | None = None,
    precision: str = "auto",
) -> DLRResult:
    """Exact D_LR for outputs ``features @ weight.T + bias`` without forming them.

    Only p x p feature statistics are accumulated, plus ``weight.T @ weight``; no n x C outputs and no
    C x C matrix are formed, so language-model heads with C = 50k to 256k are cheap. When C >= p + 1 and the
    weight has full column rank, the output span contains the whole centered feature span and
    D_LR = 1 - sqrt(PR / rank(Phic)), with PR the participation ratio of the feature covariance.

    Parameters
    ----------
    features : array_like
        n x p features.
    weight : array_like
        C x p weight of the last linear layer.
    bias : array_like, optional
        Bias (C,).
    rtol, precision
        As in :func:`dlr`.

    Returns
    -------
    DLRResult
        With ``method == "exact-weights"``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> phi, w, b = rng.normal(size=(200, 8)), rng.normal(size=(3, 8)), rng.normal(size=3)
    >>> abs(dlr_from_weights(phi, w, b).value - dlr(phi, phi @ w.T + b).value) < 1e-9
    True
    """
    return DLRStats(weight=weight, bias=bias, precision=precision).update(features).result(rtol=rtol)
