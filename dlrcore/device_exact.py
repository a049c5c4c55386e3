"""The exact D_LR of CuPy and other array-API arrays, accumulated on their own device: :func:`exact_arrays`.

The p x p, C x p and C x C centered moments are accumulated in float64 in the arrays' namespace by an
:class:`~dlrcore.accumulate.Accumulator` (with the identity for ``Omega``); only they travel to the host, once, for
the finishing algebra of :mod:`dlrcore.exact`. :func:`dlrcore.dlr` sends device arrays here.
"""

from __future__ import annotations

from typing import Any

from .accumulate import Accumulator, block_rows, validate_pair
from .backend import to_numpy
from .baseline import random_readout_baseline
from .exact import dlr_from_moments
from .inputs import CLASS_ID_OUTPUTS, looks_like_class_ids
from .output_kernels import CENTER_LOGITS
from .precision import dtype_eps, dtype_name, work_dtype

__all__ = ["exact_arrays"]


def exact_arrays(
    features: Any,
    outputs: Any,
    *,
    rtol: float | None = None,
    precision: str = "auto",
    batch_rows: int | None = None,
    output_kernel: str = "span",
    center_logits: bool = CENTER_LOGITS,
    baseline: bool = False,
) -> Any:
    """Exact D_LR of arrays of any array-API namespace (CuPy on a GPU), accumulated on their own device.

    The p x p, C x p and C x C centered moments are accumulated in float64 in the arrays' namespace (an
    :class:`Accumulator` with the identity for ``Omega``); only they travel to the host, once, for the same
    finishing algebra as :class:`~dlrcore.DLRStats`.

    Examples
    --------
    >>> import numpy as np, dlrcore
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(500, 20)); out = phi @ rng.normal(size=(20, 3))
    >>> abs(exact_arrays(phi, out).value - dlrcore.dlr(phi, out).value) < 1e-10
    True
    """
    xp, x, f = validate_pair(features, outputs, None, None)
    p = x.shape[1]
    rows = int(batch_rows) if batch_rows else block_rows(p)
    work = work_dtype([x.dtype, f.dtype], precision=precision, width=p + f.shape[1], xp=xp)
    acc = Accumulator(xp, None, work, need_z=False, need_ff=True, need_cross=True)
    acc.stream(x, f, rows)
    m_pp = to_numpy(acc.y)
    m_pp = 0.5 * (m_pp + m_pp.T)
    res = dlr_from_moments(
        n=acc.n,
        m_pp=m_pp,
        m_fp=to_numpy(acc.mfp),
        m_ff=to_numpy(acc.mff),
        mean_f=to_numpy(acc.mean_f),
        rtol=rtol,
        data_eps=max(dtype_eps(x.dtype), dtype_eps(f.dtype)),
        feature_rel_tol=100.0 * dtype_eps(acc.work),
        precision=dtype_name(acc.work),
        output_kernel=output_kernel,
        center_logits=center_logits,
        work_eps=dtype_eps(acc.work),
    )
    if baseline:
        res = res.with_baseline(random_readout_baseline(
            n=acc.n, mean_phi=to_numpy(acc.mean_x), m_pp=m_pp, C=f.shape[1], center_logits=center_logits
        ))
    return res.with_warnings(CLASS_ID_OUTPUTS) if looks_like_class_ids(outputs) else res
