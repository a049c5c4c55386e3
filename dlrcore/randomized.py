"""The randomized range finder for D_LR over arrays: :func:`randomized_dlr` (``power_iters + 2`` passes).

The passes stream row blocks into :class:`~dlrcore.accumulate.Accumulator` objects; the estimate itself is
:func:`dlrcore.sketch_algebra.estimate_from_sketch` (module docs there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .accumulate import Accumulator, block_rows, validate_pair
from .backend import device_array, to_numpy
from .checks import check_int
from .inputs import CLASS_ID_OUTPUTS, looks_like_class_ids
from .output_kernels import CENTER_LOGITS, check_output_kernel
from .precision import dtype_eps, dtype_name, work_dtype
from .progress import Progress
from .result import DLRResult
from .sketch_algebra import (
    DEFAULT_OVERSAMPLE,
    DEFAULT_PROBES,
    DEFAULT_RANK,
    check_sketch_params,
    estimate_from_sketch,
    exact_cross,
    gaussian_test_matrix,
    orthonormal_columns,
)
from .spectral import Spectrum, in_data_units

__all__ = ["randomized_dlr"]


def randomized_dlr(
    features: Any,
    outputs: Any,
    *,
    rank: int = DEFAULT_RANK,
    oversample: int = DEFAULT_OVERSAMPLE,
    power_iters: int = 1,
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    rtol: float | None = None,
    precision: str = "auto",
    batch_rows: int | None = None,
    progress: bool = False,
    return_spectrum: bool = False,
    output_kernel: str = "span",
    center_logits: bool = CENTER_LOGITS,
) -> DLRResult | tuple[DLRResult, Spectrum]:
    """D_LR by a randomized range finder on the feature Gram, streaming row blocks of the arrays.

    ``power_iters + 2`` passes over the rows: one for the means, the output statistics and ``G Omega``, one per
    power iteration (``G V`` for the QR-orthonormalised previous product), and a last one for ``G V``,
    ``Fc^T Phic V`` and the probes (orthogonal to ``V``). Memory is O((p + C) s + C^2) beyond one block of rows.

    Parameters
    ----------
    features, outputs : array_like
        n x p and n x C arrays (NumPy, memory-mapped, CuPy or any array-API array); never copied whole.
    rank, oversample : int
        The range finder keeps ``rank + oversample`` directions.
    power_iters : int
        QR-normalised power iterations (each one more pass); 1 is plenty for D_LR, more sharpens the spectrum.
    probes : int
        Stochastic probes of the residual (at least 4).
    seed : int
        Random seed.
    rtol, precision, output_kernel, center_logits
        As in :func:`dlrcore.dlr`.
    batch_rows : int, optional
        Rows per block (default about 64 MiB of features).
    progress : bool
        Show a progress bar on stderr for long runs.
    return_spectrum : bool
        Also return the top-``rank`` :class:`~dlrcore.Spectrum`.

    Returns
    -------
    DLRResult or (DLRResult, Spectrum)
        ``method == "randomized"`` with ``error_estimate``.

    References
    ----------
    N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness", SIAM Review 53 (2011).
    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: optimal stochastic trace estimation", SOSA 2021.

    Examples
    --------
    >>> import numpy as np, dlrcore
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(3000, 200)) / np.arange(1, 201); out = phi @ rng.normal(size=(200, 5))
    >>> res = randomized_dlr(phi, out, rank=16)
    >>> abs(res.value - dlrcore.dlr(phi, out).value) <= res.error_estimate
    True
    """
    check_sketch_params(rank, oversample, probes)
    check_output_kernel(output_kernel)
    check_int(power_iters, "power_iters", minimum=0)
    xp, x, f = validate_pair(features, outputs, None, None)
    n, p = x.shape
    s1 = min(rank + oversample, p)
    rows = int(batch_rows) if batch_rows else block_rows(p, columns=s1 + int(probes))
    work = work_dtype([x.dtype, f.dtype], precision=precision, width=p + f.shape[1], xp=xp)
    data_eps = max(dtype_eps(x.dtype), dtype_eps(f.dtype))
    total_passes = int(power_iters) + 2
    bar = Progress(n * total_passes, "randomized D_LR", enabled=progress, unit="rows")

    def run(
        omega: np.ndarray | Any, *, need_z: bool, need_ff: bool, need_cross: bool = False, like: Any = None
    ) -> Accumulator:
        om = device_array(xp, omega, x) if isinstance(omega, np.ndarray) else omega
        acc = Accumulator(xp, om, work, need_z=need_z, need_ff=need_ff, need_cross=need_cross)
        if like is not None:  # later passes over the same rows: at the first pass's scale, which they never change
            acc.exp_x, acc.exp_f, acc.fixed_x, acc.fixed_f = like.exp_x, like.exp_f, like.fixed_x, like.fixed_f
        acc.stream(x, f, rows, bar.advance)
        if like is not None and (acc.exp_x, acc.exp_f) != (like.exp_x, like.exp_f):
            raise RuntimeError("randomized_dlr: the data changed between passes (their scale differs)")
        return acc

    with bar:
        cross = exact_cross(f.shape[1], s1 + int(probes))
        first = run(gaussian_test_matrix(seed, (p, s1), 0), need_z=False, need_ff=True, need_cross=cross)
        y = first.y
        for _ in range(int(power_iters)):
            y = run(orthonormal_columns(xp, y), need_z=False, need_ff=False, like=first).y
        v = orthonormal_columns(xp, y)
        g = device_array(xp, gaussian_test_matrix(seed, (p, int(probes)), 1), x)
        g = g - v @ (v.T @ g)
        last = run(xp.concat([v, g], axis=1), need_z=not cross, need_ff=False, like=first)
    om = to_numpy(last.omega64)
    mfp = to_numpy(first.mfp) if cross else None
    yy = to_numpy(last.y)
    zz = mfp @ om if cross else to_numpy(last.z)
    res, spec = estimate_from_sketch(
        mode="orth",
        n=n,
        p=p,
        mean_f=to_numpy(first.mean_f),
        mff=to_numpy(first.mff),
        mfp=mfp,
        omega1=om[:, :s1],
        y1=yy[:, :s1],
        z1=zz[:, :s1],
        omega2=om[:, s1:],
        y2=yy[:, s1:],
        z2=zz[:, s1:],
        trace=float(first.trace),
        rtol=rtol,
        data_eps=data_eps,
        work_eps=dtype_eps(work),
        precision=dtype_name(work),
        method="randomized",
        passes=total_passes,
        k=rank,
        output_kernel=output_kernel,
        center_logits=center_logits,
    )
    if looks_like_class_ids(outputs):
        res = res.with_warnings(CLASS_ID_OUTPUTS)
    return (res, in_data_units(spec, first.exp_x)) if return_spectrum else res
