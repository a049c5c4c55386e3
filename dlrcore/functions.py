"""The front-door functions: :func:`dlr`, :func:`dlr_from_weights` and :func:`spectrum` on arrays in memory.

Each picks an estimator (:class:`~dlrcore.DLRStats`, :class:`~dlrcore.DLRSketch`, the randomized range finder or
the device accumulator) and returns its result; ``dlrcore`` re-exports them.
"""

from __future__ import annotations

from typing import Any, cast

from .backend import is_device_input
from .checks import check_choice
from .device_exact import exact_arrays
from .inputs import DLRInputError
from .output_kernels import CENTER_LOGITS, check_output_kernel
from .randomized import randomized_dlr
from .result import DLRResult
from .sketch import DEFAULT_OVERSAMPLE, DEFAULT_PROBES, DEFAULT_RANK, choose_method, sketch_arrays
from .spectral import Spectrum
from .stats import DLRStats

__all__ = ["METHODS", "dlr", "dlr_from_weights", "spectrum"]

#: The ``method`` names :func:`dlr` accepts.
METHODS = ("exact", "randomized", "sketch", "auto")


def dlr(
    features: Any,
    outputs: Any,
    *,
    rtol: float | None = None,
    precision: str = "auto",
    method: str = "exact",
    rank: int = DEFAULT_RANK,
    oversample: int = DEFAULT_OVERSAMPLE,
    power_iters: int = 1,
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    max_memory: int | None = None,
    progress: bool = False,
    output_kernel: str = "span",
    center_logits: bool = CENTER_LOGITS,
    baseline: bool = False,
) -> DLRResult:
    """D_LR of penultimate ``features`` (n x p) against the last layer's ``outputs`` (n x C), with D_half beside it.

    Parameters
    ----------
    features : array_like
        n x p features: the input of the network's last linear layer, one row per sample. NumPy (also
        memory-mapped), anything exposing ``__array__``/``__dlpack__``, or, for the randomized and sketch methods,
        CuPy and other array-API arrays, which are processed on their own device.
    outputs : array_like
        n x C outputs of that layer (logits or regression outputs); 1-D means C = 1.
    rtol : float, optional
        Relative singular-value tolerance that decides the output span (``sigma_i > rtol * sigma_1``).
        None picks a default from the data precision; the value used and the rank are in the result.
    precision : {"auto", "float32", "float64"}
        Precision of the products, see :class:`DLRStats`.
    method : {"exact", "randomized", "sketch", "auto"}
        ``"exact"``: sufficient statistics, O((p + C)^2) memory. ``"randomized"``: range finder with power
        iterations on the feature Gram, ``power_iters + 2`` passes (:func:`dlrcore.randomized_dlr`).
        ``"sketch"``: one pass, O((p + C) s) memory (:class:`DLRSketch`). ``"auto"``: exact when its state fits
        in ``max_memory``, else the sketch; ``result.method`` says which ran. The approximate methods report
        ``error_estimate``.
    rank, oversample, power_iters, probes, seed : int
        Parameters of the randomized and sketch methods (``power_iters`` only for ``"randomized"``).
    max_memory : int, optional
        Byte budget for ``"auto"`` (default half the available memory).
    progress : bool
        Progress bar on stderr (randomized and sketch methods over long arrays).
    output_kernel : {"span", "sqrt"}
        Which measure ``value`` holds: ``"span"``, the paper's literal D_LR (the centered projection onto the output
        span), or ``"sqrt"``, D_half (``L = (Fc Fc^T)^(1/2)``), which weighs output directions by their strength
        and reads right for cross-entropy classifiers (docs/output-kernel.md). Both are always computed.
    center_logits : bool
        Center the logits across classes before D_half, removing per-sample shifts common to every class.
    baseline : bool
        Also compute the random-readout baseline into ``result.baseline`` (exact method only).

    Returns
    -------
    DLRResult
        ``value`` in [0, 1] (lower is richer), ``value_span`` and ``value_sqrt``, with n, p, C, output rank,
        constant share and warnings.

    See Also
    --------
    DLRStats : the exact estimate accumulated over batches.
    DLRSketch : the one-pass sketch accumulated over batches.
    dlr_from_weights : for huge output widths, from the last layer's weight and bias.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(300, 40))
    >>> res = dlr(phi, phi @ rng.normal(size=(40, 5)) + 1.0)
    >>> (res.n, res.p, res.C, res.output_rank)
    (300, 40, 5, 5)
    >>> approx = dlr(phi, phi @ rng.normal(size=(40, 5)), method="sketch", rank=8)
    >>> approx.method, approx.error_estimate > 0
    ('sketch', True)
    >>> ce = dlr(phi, phi @ rng.normal(size=(40, 5)) * [10, 1, 0.1, 0.1, 0.1], output_kernel="sqrt")
    >>> ce.output_kernel, ce.value == ce.value_sqrt, 0.0 <= ce.value_span <= 1.0
    ('sqrt', True, True)
    """
    check_choice(method, "method", METHODS)
    check_output_kernel(output_kernel)
    kernel: dict[str, Any] = dict(rtol=rtol, output_kernel=output_kernel, center_logits=center_logits)
    if method == "auto":
        method = choose_method(features, outputs, max_memory=max_memory, rank=rank, oversample=oversample,
                               probes=probes)
    if baseline and method != "exact":
        raise DLRInputError(
            f"baseline=True needs the exact feature moments; method={method!r} keeps only a sketch of them "
            "(use method='exact', or DLRStats(...).baseline() on exact statistics)"
        )
    if method == "exact":
        if is_device_input(features):  # CuPy / array-API arrays: moments on their device
            return exact_arrays(features, outputs, precision=precision, baseline=baseline, **kernel)
        return DLRStats(precision=precision).update(features, outputs).result(baseline=baseline, **kernel)
    if method == "randomized":
        return cast(DLRResult, randomized_dlr(  # without return_spectrum: the result alone
            features, outputs, rank=rank, oversample=oversample, power_iters=power_iters, probes=probes,
            seed=seed, precision=precision, progress=progress, **kernel,
        ))
    return sketch_arrays(
        features, outputs, rank=rank, oversample=oversample, probes=probes, seed=seed, precision=precision,
        progress=progress,
    ).result(**kernel)


def dlr_from_weights(
    features: Any,
    weight: Any,
    bias: Any = None,
    *,
    rtol: float | None = None,
    precision: str = "auto",
    output_kernel: str = "span",
    center_logits: bool = CENTER_LOGITS,
    baseline: bool = False,
) -> DLRResult:
    """Exact D_LR and D_half for outputs ``features @ weight.T + bias`` without forming them.

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
    rtol, precision, output_kernel, center_logits, baseline
        As in :func:`dlr`. D_half comes from ``Phic^T Phic`` and ``W^T W`` alone as well.

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
    return DLRStats(weight=weight, bias=bias, precision=precision).update(features).result(
        rtol=rtol, output_kernel=output_kernel, center_logits=center_logits, baseline=baseline
    )


def spectrum(
    features: Any,
    outputs: Any,
    labels: Any = None,
    k: int | None = None,
    *,
    num_classes: int | None = None,
    rtol: float | None = None,
    precision: str = "auto",
    name: str = "",
    method: str = "exact",
    seed: int = 0,
    output_kernel: str = "span",
    center_logits: bool = CENTER_LOGITS,
) -> Spectrum:
    """Eigen-visualisation data of the paper: relative eigenvalue, cumulative utilization and quality.

    Parameters
    ----------
    features : array_like
        n x p features.
    outputs : array_like
        n x C outputs.
    labels : array_like, optional
        Integer class ids (one-hot encoded with ``num_classes`` classes, default C) or an n x C_y target matrix;
        gives the cumulative quality curve.
    k : int, optional
        Modes to return (default all supported).
    num_classes : int, optional
        Number of classes for integer labels.
    rtol, precision, output_kernel, center_logits
        As in :func:`dlr`; they set the D_LR and D_half values the spectrum carries.
    name : str
        Legend label for :func:`dlrcore.plot.spectrum`.
    method : {"exact", "randomized"}
        ``"randomized"`` computes only the top ``k`` modes (O(p^2 k) instead of O(p^3), with a bound on each
        eigenvalue's error); see :meth:`DLRStats.spectrum`.
    seed : int
        Random seed of ``method="randomized"``.

    Returns
    -------
    Spectrum

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(500, 20)); out = phi @ rng.normal(size=(20, 3))
    >>> sp = spectrum(phi, out)
    >>> sp.k, round(float(sp.cumulative_utilization[-1]), 6)
    (20, 1.0)
    """
    st = DLRStats(num_classes=num_classes, precision=precision).update(features, outputs, labels=labels)
    return st.spectrum(
        k, rtol=rtol, name=name, method=method, seed=seed, output_kernel=output_kernel, center_logits=center_logits
    )
