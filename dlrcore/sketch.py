"""Randomized and one-pass sketch estimators of D_LR for feature widths where a p x p Gram is too large.

D_LR needs three numbers (``docs/dlr.md``): ``A = ||Q^T Phic||_F^2``, ``B = ||G||_F^2`` with ``G = Phic^T Phic``,
and ``||L||_F`` from the outputs alone. The outputs' C x C statistics are kept exactly; ``A`` and ``B`` are
estimated from products of ``G`` (and of ``Fc^T Phic``) with a few random directions, accumulated batch by
batch in O(p s) memory:

* **one-pass sketch** (:class:`DLRSketch`, ``method="sketch"``): ``Y = G Omega`` and ``Z = Fc^T Phic Omega``
  for a Gaussian ``Omega = [Omega_1, Omega_2]`` (Tropp, Yurtsever, Udell and Cevher 2017). ``Omega_1`` gives
  the Nystrom approximation ``G_hat = Y_1 (Omega_1^T Y_1)^+ Y_1^T`` (the top of the spectrum); the probes
  ``Omega_2`` estimate what it misses with control variates (Nystrom++, Persson, Cortinovis and Kressner 2022):
  ``b_j = ||G_hat||^2 + ||G w_j||^2 - ||G_hat w_j||^2`` is unbiased for ``B`` whatever ``G_hat`` is, and
  likewise for ``A``. The state adds up over batches and merges across processes (Chan's update; the rank-one
  corrections multiply ``Omega``).
* **randomized** (``method="randomized"``, several passes over an array): a randomized range finder with
  QR-normalised power iterations (Halko, Martinsson and Tropp 2011) run on ``G``, so that every pass streams the
  rows; a last pass gives ``G V`` for the orthonormal basis ``V`` and ``G w_j`` for probes orthogonal to it,
  so ``B = 2 ||G V||^2 - ||V^T G V||^2 + ||P G P||^2`` and ``A = ||Q^T Phic V||^2 + ||Q^T Phic P||^2``
  (``P = I - V V^T``) with only the ``P``-parts estimated stochastically (Hutch++, Meyer, Musco, Musco and
  Woodruff 2021).

Both report an a-posteriori error estimate of D_LR: the per-probe estimates are independent given the data and
the first random matrix, so their sample covariance gives the standard error of ``A`` and ``B``, propagated to
D_LR by the delta method and multiplied by a Student-t quantile (:func:`error_multiplier`, three standard errors
for many probes) plus a rounding floor.

All accumulation runs in the arrays' own namespace (NumPy, CuPy, any array-API library), so GPU arrays stay on
the GPU; the final factorisations (s x s and p x s) run on the host in float64.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg

from .accumulate import (
    BLOCK_BYTES,
    Accumulator,
    BadBatch,
    Scratch,
    block_rows,
    copy_accumulator,
    dtype_eps,
    dtype_name,
    explain_bad,
    row_blocks,
    validate_pair,
    work_dtype,
)
from .backend import device_array, is_numpy, to_numpy
from .concurrency import locked, locked_pair
from .estimator import Estimator
from .exact import (
    CENTER_LOGITS,
    KernelTerms,
    check_center_logits,
    check_output_kernel,
    finish_result,
    output_span,
    sqrt_kernel,
)
from .inputs import CLASS_ID_OUTPUTS, PRECISIONS, DLRInputError, looks_like_class_ids
from .progress import Progress
from .result import DLRResult
from .spectral import Spectrum, cumulative_share, in_data_units, kernel_fields
from .storage import (
    array_field,
    atomic_savez,
    check_bounded,
    check_comoment,
    float_field,
    int_array_field,
    int_field,
    read_npz,
    scale_exponents_field,
    str_field,
)

__all__ = [
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_PROBES",
    "DEFAULT_RANK",
    "ERROR_LEVEL",
    "DLRSketch",
    "available_memory",
    "choose_method",
    "error_multiplier",
    "exact_cross",
    "exact_memory_bytes",
    "method_for_widths",
    "randomized_dlr",
    "sketch_arrays",
    "sketch_memory_bytes",
]

#: Default number of leading feature directions captured exactly (Nystrom / range-finder rank).
DEFAULT_RANK = 64
#: Default extra random directions of the range finder.
DEFAULT_OVERSAMPLE = 16
#: Default number of stochastic probes for the residual.
DEFAULT_PROBES = 32
#: Two-sided confidence level of the reported error estimate (three standard deviations under normality).
ERROR_LEVEL = 0.9973


def error_multiplier(probes: int) -> float:
    """Multiplier of the standard error in ``error_estimate``: the Student-t quantile at :data:`ERROR_LEVEL` with
    ``probes - 1`` degrees of freedom (3.26 for 32 probes, 3.85 for 12), so that few probes widen the estimate.

    Examples
    --------
    >>> round(error_multiplier(32), 2), round(error_multiplier(10**6), 2)
    (3.26, 3.0)
    """
    from scipy.stats import t

    return float(t.ppf(0.5 + ERROR_LEVEL / 2.0, max(int(probes) - 1, 1)))

_MAGIC = "dlrcore.DLRSketch"
_FORMAT_VERSION = 1

def _gaussian(seed: int, shape: tuple[int, int], stream: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(stream)]).standard_normal(shape)


def _check_params(rank: int, oversample: int, probes: int) -> None:
    if int(rank) != rank or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if int(oversample) != oversample or oversample < 0:
        raise ValueError(f"oversample must be a non-negative integer, got {oversample!r}")
    if int(probes) != probes or probes < 4:
        raise ValueError(f"probes must be an integer >= 4 (the error estimate needs a sample variance), got {probes!r}")


# ---------------------------------------------------------------------------------------------- estimator


@dataclass(frozen=True)
class _Nystrom:
    bn: np.ndarray  # p x k', G_hat = bn bn^T
    w: np.ndarray  # s1 x k', maps Omega_1 coordinates: G_hat = Y1 w w^T Y1^T
    h: np.ndarray  # bn^T bn


def _nystrom(omega1: np.ndarray, y1: np.ndarray, rel_tol: float) -> _Nystrom:
    c1 = omega1.T @ y1
    c1 = 0.5 * (c1 + c1.T)
    d, u = scipy.linalg.eigh(c1, check_finite=False)
    top = float(d[-1]) if d.size else 0.0
    keep = d > rel_tol * top if top > 0 else np.zeros(d.shape, bool)
    w = u[:, keep] / np.sqrt(d[keep])
    bn = y1 @ w
    return _Nystrom(bn=bn, w=w, h=bn.T @ bn)


def _colsq(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->j", a, a)


def _estimate(
    *,
    mode: str,
    n: int,
    p: int,
    mean_f: np.ndarray,
    mff: np.ndarray,
    mfp: np.ndarray | None,
    omega1: np.ndarray,
    y1: np.ndarray,
    z1: np.ndarray,
    omega2: np.ndarray,
    y2: np.ndarray,
    z2: np.ndarray,
    trace: float,
    rtol: float | None,
    data_eps: float,
    work_eps: float,
    precision: str,
    method: str,
    passes: int,
    k: int | None = None,
    output_kernel: str = "span",
    center_logits: bool = CENTER_LOGITS,
) -> tuple[DLRResult, Spectrum]:
    """D_LR with its error estimate, and the top of the spectrum, from the sketched products (host float64)."""
    center_logits = check_center_logits(center_logits)
    if n < 2:
        raise DLRInputError(f"D_LR needs at least 2 samples, got n = {n}")
    if rtol is not None and not (0.0 <= rtol < 1.0):
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")
    if not math.isfinite(trace):
        raise DLRInputError("features: the centered feature Gram overflows float64; rescale the features")
    if not trace > 0:
        raise DLRInputError("features are constant across samples: the centered feature kernel is zero")
    # D_LR is scale invariant: work with G / tr(G) so that squares of Gram entries cannot overflow
    scale = trace
    root = math.sqrt(scale)
    y1, y2, z1, z2 = y1 / scale, y2 / scale, z1 / root, z2 / root
    mfp = None if mfp is None else mfp / root
    mff = 0.5 * (mff + mff.T)
    trace = 1.0
    floor = 10.0 * work_eps * math.sqrt(max(p, mff.shape[0]))  # rounding floor of the error estimate
    # the output span's own rounding may use up at most 1 % of that floor (exact._offset_svd)
    span = output_span(n=n, m_ff=mff, mean_f=mean_f, rtol=rtol, data_eps=data_eps, max_rel_err=0.01 * floor)
    half = sqrt_kernel(mff, work_eps=work_eps, center=center_logits, eig=(span.centered_ev, span.centered_vecs))
    ny = _nystrom(omega1, y1, rel_tol=max(1e3 * work_eps, 1e-12))
    c = ny.bn.T @ omega2  # k' x m
    g_hat_w = ny.bn @ c  # G_hat w_j, p x m
    if mode == "orth":
        # V = omega1 orthonormal, probes orthogonal to V: only the P-blocks are stochastic
        a11 = omega1.T @ y1
        pg = y2 - omega1 @ (omega1.T @ y2)
        b_j = 2.0 * float(np.sum(y1 * y1)) - float(np.sum(a11 * a11)) + _colsq(pg)
    else:
        b_j = float(np.sum(ny.h * ny.h)) + _colsq(y2) - _colsq(g_hat_w)
    m = b_j.size
    # ||G||_F^2 >= tr(G)^2 / p = 1 / p here (Cauchy-Schwarz over the eigenvalues): an estimate below that bound is
    # noise (or a damaged file), and the bound is the better value
    b_bar = max(float(b_j.mean()), 1.0 / p)
    norm_k = math.sqrt(b_bar)

    def a_samples(basis: np.ndarray) -> np.ndarray:
        """Per-probe estimates of ``A = ||basis^T Fc^T Phic||_F^2`` (exact when the cross moments are kept)."""
        if mfp is not None:  # exact cross moments (small C): A is exact, only B is estimated
            q_phi = basis.T @ mfp
            return np.full(m, float(np.sum(q_phi * q_phi)))
        t1 = basis.T @ z1  # basis^T Fc^T Phic Omega_1, r x s1
        t2 = basis.T @ z2
        if mode == "orth":
            return float(np.sum(t1 * t1)) + _colsq(t2)
        tn = t1 @ ny.w  # in Nystrom coordinates, r x k'
        return float(np.sum(tn * (tn @ ny.h))) + _colsq(t2) - _colsq(tn @ c)

    def terms(basis: np.ndarray, norm_l2: float) -> KernelTerms:
        """``A`` with the delta-method error of ``D = 1 - A / (sqrt(L2) sqrt(B))`` over the probes."""
        a_j = a_samples(basis)
        a_bar = float(a_j.mean())
        sl = math.sqrt(norm_l2) if norm_l2 > 0 else 0.0
        var = 0.0
        if sl > 0:
            grad = np.array([-1.0 / (sl * norm_k), a_bar / (2.0 * sl * b_bar * norm_k)])
            cov = np.cov(np.vstack([a_j, b_j]), ddof=1)
            var = max(float(grad @ cov @ grad) / m, 0.0)
        return KernelTerms(a_bar, norm_l2, float(error_multiplier(m) * math.sqrt(var) + floor))

    res = finish_result(
        span=terms(span.basis, span.norm_l2),
        half=terms(half.basis, half.norm_l2),
        norm_k=norm_k,
        r=span.rank,
        a=span.constant_share,
        sqrt=half,
        output_kernel=output_kernel,
        centered_output_ev=span.centered_ev,
        n=n,
        p=p,
        C=span.C,
        method=method,
        rtol=span.rtol,
        precision=precision,
        feature_rank=None,
        notes=span.notes,
        extra=dict(sketch_size=int(omega1.shape[1]), probes=int(m), passes=int(passes)),
    )
    # spectrum: eigenpairs of G_hat, utilization from Fc^T Phic on the sketched subspace
    lam, e = scipy.linalg.eigh(ny.h, check_finite=False)
    lam, e = np.clip(lam[::-1], 0.0, None), e[:, ::-1]
    resid = y2 - g_hat_w
    resid_fro = math.sqrt(max(float(_colsq(resid).mean()), 0.0))
    z1n = z1 @ ny.w @ e  # Fc^T u_i for the Nystrom eigenvectors, C x k'
    inc = _colsq(z1n)
    total_f = float(np.trace(mff))
    kk = lam.size if k is None else min(int(k), lam.size)
    rho = lam * (scale / n)
    top = rho[0] if rho.size and rho[0] > 0 else 1.0
    # tr(G)^2 / ||G||_F^2 with tr(G) exact and ||G||_F^2 estimated
    pr = trace**2 / b_bar
    live = int(np.count_nonzero(rho > 100.0 * work_eps * top))
    spec = Spectrum(
        eigenvalues=rho[:kk].copy(),
        relative_eigenvalue=(rho / top)[:kk].copy(),
        cumulative_utilization=cumulative_share(inc, total_f)[:kk].copy(),
        cumulative_quality=None,
        effective_rank=float("nan"),
        participation_ratio=float(pr),
        feature_rank=live,
        dlr=res.value,
        n=int(n),
        p=int(p),
        C=int(span.C),
        k=int(kk),
        rank_tol=100.0 * work_eps,
        method=method,
        eigenvalue_error=float(resid_fro * scale / n),
        **kernel_fields(res),
    )
    return res, spec


# ---------------------------------------------------------------------------------------------- one pass


class DLRSketch(Estimator):
    """One-pass, mergeable sketch of (features, outputs) for D_LR and the top of the spectrum, in O(p s) memory.

    Keeps ``G Omega`` (p x s), ``Fc^T Phic Omega`` (C x s), ``Fc^T Fc`` (C x C), the means and ``tr G`` for a
    Gaussian test matrix ``Omega`` of ``s = rank + oversample + probes`` columns drawn from ``seed``: the p x p
    Gram is never formed. Sketches with the same ``seed`` and parameters merge exactly like
    :class:`~dlrcore.DLRStats` (batches and processes in any split give the same state up to rounding). Arrays
    of any array-API library (CuPy on a GPU) are accumulated in their own namespace and device.

    Parameters
    ----------
    rank : int
        Leading feature directions the Nystrom part captures (and spectrum modes returned).
    oversample : int
        Extra Nystrom columns.
    probes : int
        Stochastic probes for the residual and the error estimate (at least 4).
    seed : int
        Seed of ``Omega``; processes that will be merged must use the same one.
    precision : {"auto", "float32", "float64"}
        Product precision: ``"auto"`` is float32 for data of 32 bits or fewer, float64 for float64 data.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(4000, 300)) * (1 / np.arange(1, 301)); out = phi @ rng.normal(size=(300, 4))
    >>> sk = DLRSketch(rank=32, seed=1)
    >>> for i in range(0, 4000, 1000):
    ...     _ = sk.update(phi[i:i + 1000], out[i:i + 1000])
    >>> res = sk.result()
    >>> exact = __import__("dlrcore").dlr(phi, out).value
    >>> abs(res.value - exact) <= res.error_estimate
    True
    """

    def __init__(
        self,
        *,
        rank: int = DEFAULT_RANK,
        oversample: int = DEFAULT_OVERSAMPLE,
        probes: int = DEFAULT_PROBES,
        seed: int = 0,
        precision: str = "auto",
    ) -> None:
        self._init_lock()
        _check_params(rank, oversample, probes)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.rank, self.oversample, self.probes = int(rank), int(oversample), int(probes)
        self.seed, self.precision = int(seed), precision
        self._acc: Accumulator | None = None
        self._p: int | None = None
        self._C: int | None = None
        self._data_eps = 0.0
        self._class_id_outputs = False  # some batch passed one integer column as outputs

    @property
    def n(self) -> int:
        """Samples accumulated."""
        return 0 if self._acc is None else self._acc.n

    @property
    def p(self) -> int | None:
        """Feature width (None before the first batch)."""
        return self._p

    @property
    def C(self) -> int | None:
        """Output width (None before the first batch)."""
        return self._C

    @property
    def sketch_size(self) -> int:
        """Columns of the Nystrom part, ``min(rank + oversample, p)``."""
        return min(self.rank + self.oversample, self._p or self.rank + self.oversample)

    def _repr_extra(self) -> str:
        return f"rank={self.rank}, oversample={self.oversample}, probes={self.probes}, seed={self.seed}"

    def _omega(self, p: int) -> np.ndarray:
        s1 = min(self.rank + self.oversample, p)
        return np.hstack([_gaussian(self.seed, (p, s1), 0), _gaussian(self.seed, (p, self.probes), 1)])

    def update(self, features: Any, outputs: Any) -> DLRSketch:
        """Add a batch of rows (features n_b x p, outputs n_b x C). A rejected batch leaves the sketch as it was.

        Raises
        ------
        DLRInputError
            For mismatched shapes or n, widths that differ from earlier batches, NaN/Inf or overflow.
        """
        return self._update(features, outputs, None)

    @locked
    def _update(self, features: Any, outputs: Any, scratch: Scratch | None) -> DLRSketch:
        xp, x, f = validate_pair(features, outputs, self._p, self._C)
        acc = self._acc
        if acc is None:
            work = work_dtype(xp, x.dtype, self.precision)
            omega = self._omega(x.shape[1])
            cross = exact_cross(f.shape[1], omega.shape[1])
            acc = Accumulator(
                xp, device_array(xp, omega, x), work, need_z=not cross, need_ff=True, need_cross=cross
            )
        elif not (is_numpy(xp) and is_numpy(acc.xp)) and xp is not acc.xp:
            raise DLRInputError("this batch comes from another array library than the sketch's earlier batches")
        try:
            parts = acc.batch(x, f, scratch)
        except BadBatch as bad:
            raise explain_bad(xp, x, f, str(bad)) from None
        acc.add(parts)
        if self._acc is None:
            self._acc, self._p, self._C = acc, x.shape[1], f.shape[1]
        self._data_eps = max(self._data_eps, dtype_eps(x.dtype), dtype_eps(f.dtype))
        self._class_id_outputs = self._class_id_outputs or looks_like_class_ids(outputs)
        return self

    def _compat(self, other: DLRSketch) -> None:
        if not isinstance(other, DLRSketch):
            raise TypeError(f"can only merge DLRSketch with DLRSketch, not {type(other).__name__}")
        mine = (self.rank, self.oversample, self.probes, self.seed)
        theirs = (other.rank, other.oversample, other.probes, other.seed)
        if mine != theirs:
            raise DLRInputError(
                f"cannot merge sketches with different (rank, oversample, probes, seed): {mine} vs {theirs}"
            )
        if self._acc is not None and other._acc is not None and (self._p, self._C) != (other._p, other._C):
            raise DLRInputError(
                f"cannot merge sketches of widths (p, C) = {(self._p, self._C)} and {(other._p, other._C)}"
            )

    def merge(self, other: DLRSketch) -> DLRSketch:
        """Add another sketch's rows to this one (same seed and parameters); ``other`` is unchanged."""
        with locked_pair(self, other):
            self._compat(other)
            if other._acc is None:
                return self
            if self._acc is None:
                self._acc = copy_accumulator(other._acc)
                self._p, self._C = other._p, other._C
            else:
                a, b = self._acc.xp, other._acc.xp
                if a is not b and not (is_numpy(a) and is_numpy(b)):
                    raise DLRInputError("cannot merge sketches accumulated by different array libraries")
                if dtype_name(self._acc.work) != dtype_name(other._acc.work):
                    raise DLRInputError("cannot merge sketches accumulated in different precisions")
                self._acc.add(other._acc.state())
            self._data_eps = max(self._data_eps, other._data_eps)
            self._class_id_outputs = self._class_id_outputs or other._class_id_outputs
            return self

    @locked
    def copy(self) -> DLRSketch:
        """An independent copy."""
        new = DLRSketch(rank=self.rank, oversample=self.oversample, probes=self.probes, seed=self.seed,
                        precision=self.precision)
        new._acc = None if self._acc is None else copy_accumulator(self._acc)
        new._p, new._C, new._data_eps = self._p, self._C, self._data_eps
        new._class_id_outputs = self._class_id_outputs
        return new

    @locked
    def _host(self) -> dict[str, Any]:
        acc = self._acc
        self._require_samples()
        s1 = self.sketch_size
        om, y = to_numpy(acc.omega64), to_numpy(acc.y)
        mfp = None if acc.mfp is None else to_numpy(acc.mfp)
        z = mfp @ om if mfp is not None else to_numpy(acc.z)
        return dict(
            n=acc.n,
            p=self._p,
            mean_f=to_numpy(acc.mean_f),
            mff=to_numpy(acc.mff),
            mfp=mfp,
            omega1=om[:, :s1],
            y1=y[:, :s1],
            z1=z[:, :s1],
            omega2=om[:, s1:],
            y2=y[:, s1:],
            z2=z[:, s1:],
            trace=float(acc.trace),
            work_eps=dtype_eps(acc.work),
            precision=dtype_name(acc.work),
        )

    def result(
        self, rtol: float | None = None, *, output_kernel: str = "span", center_logits: bool = CENTER_LOGITS
    ) -> DLRResult:
        """D_LR and D_half estimated from the sketch, each with an error estimate (see the module docs).

        Parameters
        ----------
        rtol, output_kernel, center_logits
            As in :meth:`dlrcore.DLRStats.result`. D_half is estimated from the same sketched products as the
            literal value (only the C x r map applied to them differs), with its own delta-method error.

        Returns
        -------
        DLRResult
            ``method == "sketch"``, with ``error_estimate`` (of ``value``), ``error_span``, ``error_sqrt``,
            ``sketch_size``, ``probes`` and ``passes = 1``.
        """
        res = self._estimate(rtol, None, output_kernel, center_logits)[0]
        return res.with_warnings(CLASS_ID_OUTPUTS) if self._class_id_outputs else res

    def spectrum(
        self,
        k: int | None = None,
        *,
        rtol: float | None = None,
        name: str = "",
        output_kernel: str = "span",
        center_logits: bool = CENTER_LOGITS,
    ) -> Spectrum:
        """Top-``k`` eigenvalues of the feature covariance and utilization on them (Nystrom approximation).

        Eigenvalues are at most the true ones, low by at most ``eigenvalue_error`` (an estimate of
        ``||G - G_hat||_F / n``); ``effective_rank`` is NaN (it needs the whole spectrum) and the participation
        ratio uses the estimated ``||G||_F``. No quality curve (labels are not sketched).
        """
        spec = in_data_units(self._estimate(rtol, k, output_kernel, center_logits)[1], self._acc.exp_x)
        return spec.with_name(name) if name else spec

    def _estimate(
        self, rtol: float | None, k: int | None, output_kernel: str, center_logits: bool
    ) -> tuple[DLRResult, Spectrum]:
        check_output_kernel(output_kernel)
        h = self._host()
        return _estimate(
            mode="nystrom",
            rtol=rtol,
            output_kernel=output_kernel,
            center_logits=center_logits,
            data_eps=self._data_eps,
            method="sketch",
            passes=1,
            k=k,
            **h,
        )

    @locked
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the sketch to one ``.npz`` file atomically (host copies of device arrays)."""
        arrays: dict[str, Any] = {
            "params": np.array([self.rank, self.oversample, self.probes, self.seed]),
            "precision": np.array(self.precision),
            "p": np.array(-1 if self._p is None else self._p),
            "C": np.array(-1 if self._C is None else self._C),
            "data_eps": np.array(self._data_eps),
            "n": np.array(self.n, dtype=np.int64),
        }
        acc = self._acc
        if acc is not None:
            arrays.update(
                work=np.array(dtype_name(acc.work)),
                omega=to_numpy(acc.omega64),
                mean_x=to_numpy(acc.mean_x),
                mean_f=to_numpy(acc.mean_f),
                y=to_numpy(acc.y),
                mff=to_numpy(acc.mff),
                **({"z": to_numpy(acc.z)} if acc.mfp is None else {"mfp": to_numpy(acc.mfp)}),
                trace=np.array(acc.trace),
                scale_exponents=np.array([acc.exp_x, acc.exp_f]),
            )
        return atomic_savez(path, _MAGIC, _FORMAT_VERSION, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DLRSketch:
        """Read a sketch written by :meth:`save` (as NumPy arrays on the host)."""
        data = read_npz(path, _MAGIC, _FORMAT_VERSION)
        rank, over, probes, seed = int_array_field(data, "params", path, 4)
        try:
            sk = cls(rank=rank, oversample=over, probes=probes, seed=seed,
                     precision=str_field(data, "precision", path, PRECISIONS))
        except ValueError as exc:
            raise DLRInputError(f"{path}: damaged file, field 'params' ({exc})") from exc
        sk._data_eps = float_field(data, "data_eps", path, least=0.0, most=1.0)
        n = int_field(data, "n", path, least=0)
        if not n:
            return sk
        p, C = int_field(data, "p", path, least=1), int_field(data, "C", path, least=1)
        sk._p, sk._C = p, C
        omega = array_field(data, "omega", path, (p, sk.sketch_size + probes))
        if not np.array_equal(omega, sk._omega(p)):
            raise DLRInputError(f"{path}: damaged file, field 'omega' is not the test matrix of seed {seed}")
        s = omega.shape[1]
        cross = "mfp" in data
        work = str_field(data, "work", path, ("float32", "float64"))
        acc = Accumulator(np, omega, np.dtype(work), need_z=not cross, need_ff=True, need_cross=cross)
        acc.n = n
        acc.mean_x, acc.mean_f = array_field(data, "mean_x", path, (p,)), array_field(data, "mean_f", path, (C,))
        acc.y, acc.mff = array_field(data, "y", path, (p, s)), array_field(data, "mff", path, (C, C))
        check_comoment(acc.mff, "mff", path)
        acc.trace = float_field(data, "trace", path, least=0.0)
        if cross:
            acc.mfp = array_field(data, "mfp", path, (C, p))
        else:
            acc.z = array_field(data, "z", path, (C, s))
        # Cauchy-Schwarz: every cross product is bounded by the norms it pairs (tr G bounds each G_jj and ||G||)
        root_f, root_t = np.sqrt(np.clip(np.diagonal(acc.mff), 0.0, None)), math.sqrt(acc.trace)
        cols = np.linalg.norm(omega, axis=0)
        with np.errstate(over="ignore"):  # an infinite bound is no bound
            check_bounded(acc.y, acc.trace * cols[None, :], "y", path, "|G Omega| <= tr(G) |Omega|")
            if acc.mfp is not None:
                check_bounded(acc.mfp, root_f[:, None] * root_t, "mfp", path, "|Fc^T Phic| <= |Fc| |Phic|")
            else:
                check_bounded(acc.z, root_f[:, None] * root_t * cols[None, :], "z", path, "|Fc^T Phic Omega| bounds")
        exps = scale_exponents_field(data, path, 2)
        if exps is not None:
            acc.exp_x, acc.exp_f = exps
        acc.loaded()
        sk._acc = acc
        return sk


# ---------------------------------------------------------------------------------------------- multi-pass


def exact_cross(C: int, sketch_columns: int) -> bool:
    """Keep the exact cross moments ``Fc^T Phic`` (C x p) when they cost no more than the sketch's own products.

    Then ``A = ||Q^T Phic||^2`` is exact and only ``||G||_F`` is estimated.
    """
    return int(C) <= int(sketch_columns)


def _orth(xp: ModuleType, y: Any) -> Any:
    if is_numpy(xp):  # numpy.linalg runs its own BLAS threads; scipy's QR is the fast one here
        return scipy.linalg.qr(y, mode="economic", check_finite=False)[0]
    q, _ = xp.linalg.qr(y)
    return q


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
    _check_params(rank, oversample, probes)
    check_output_kernel(output_kernel)
    if int(power_iters) != power_iters or power_iters < 0:
        raise ValueError(f"power_iters must be a non-negative integer, got {power_iters!r}")
    xp, x, f = validate_pair(features, outputs, None, None)
    n, p = x.shape
    s1 = min(rank + oversample, p)
    rows = int(batch_rows) if batch_rows else block_rows(p, columns=s1 + int(probes))
    work = work_dtype(xp, x.dtype, precision)
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
        first = run(_gaussian(seed, (p, s1), 0), need_z=False, need_ff=True, need_cross=cross)
        y = first.y
        for _ in range(int(power_iters)):
            y = run(_orth(xp, y), need_z=False, need_ff=False, like=first).y
        v = _orth(xp, y)
        g = device_array(xp, _gaussian(seed, (p, int(probes)), 1), x)
        g = g - v @ (v.T @ g)
        last = run(xp.concat([v, g], axis=1), need_z=not cross, need_ff=False, like=first)
    om = to_numpy(last.omega64)
    mfp = to_numpy(first.mfp) if cross else None
    yy = to_numpy(last.y)
    zz = mfp @ om if cross else to_numpy(last.z)
    res, spec = _estimate(
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


def sketch_memory_bytes(p: int, C: int, *, rank: int = DEFAULT_RANK, oversample: int = DEFAULT_OVERSAMPLE,
                        probes: int = DEFAULT_PROBES, block_bytes: int = BLOCK_BYTES) -> int:
    """Approximate peak bytes of the sketch path: float64 state, test matrices and one block of rows."""
    s = min(rank + oversample, p) + probes
    return int(8 * (3 * p * s + 2 * C * s + 2 * C * C) + 2 * block_bytes)


def available_memory() -> int:
    """Bytes of memory available to this process now (``MemAvailable`` on Linux, else physical memory / 2)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def exact_memory_bytes(p: int, C: int, itemsize: int = 4) -> int:
    """Approximate peak bytes of the exact path's state for widths p and C (float64 co-moments, product-precision
    pending Gram, a copy while finishing, and the staging buffer)."""
    from .moments import stage_capacity

    q = int(p) + int(C)
    work = np.dtype(np.float32 if itemsize <= 4 else np.float64)
    return int((16 + itemsize) * q * q + stage_capacity(q, work) * (q * itemsize + 8 * int(C)))


def choose_method(
    features: Any,
    outputs: Any,
    *,
    max_memory: int | None = None,
    rank: int = DEFAULT_RANK,
    oversample: int = DEFAULT_OVERSAMPLE,
    probes: int = DEFAULT_PROBES,
) -> str:
    """``"exact"`` when the exact statistics fit in ``max_memory`` bytes (default half the available memory) and
    the arrays are host arrays, else ``"sketch"``.

    Examples
    --------
    >>> import numpy as np
    >>> choose_method(np.zeros((10, 100)), np.zeros((10, 3)))
    'exact'
    >>> choose_method(np.zeros((10, 100_000), np.float32), np.zeros((10, 3)), max_memory=2**30)
    'sketch'
    """
    shape_x = tuple(getattr(features, "shape", np.shape(features)))
    shape_f = tuple(getattr(outputs, "shape", np.shape(outputs)))
    if len(shape_x) != 2:
        raise DLRInputError(f"features: expected a 2-D array (samples x columns), got shape {shape_x}")
    C = int(shape_f[1]) if len(shape_f) == 2 else 1
    itemsize = int(getattr(getattr(features, "dtype", None), "itemsize", 8) or 8)
    host = isinstance(features, np.ndarray) or type(features).__module__.split(".")[0] in ("numpy", "builtins")
    return method_for_widths(int(shape_x[1]), C, itemsize=itemsize, max_memory=max_memory, host=host)


def method_for_widths(p: int, C: int, *, itemsize: int = 4, max_memory: int | None = None, host: bool = True) -> str:
    """The rule of :func:`choose_method` from the widths alone (used by the command line on files)."""
    budget = int(max_memory) if max_memory is not None else available_memory() // 2
    if host and exact_memory_bytes(p, C, min(int(itemsize), 8)) <= budget:
        return "exact"
    return "sketch"


def sketch_arrays(
    features: Any,
    outputs: Any,
    *,
    rank: int = DEFAULT_RANK,
    oversample: int = DEFAULT_OVERSAMPLE,
    probes: int = DEFAULT_PROBES,
    seed: int = 0,
    precision: str = "auto",
    batch_rows: int | None = None,
    progress: bool = False,
) -> DLRSketch:
    """A :class:`DLRSketch` of whole arrays, streamed in row blocks (no copy of the arrays).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(2000, 50)); sk = sketch_arrays(phi, phi[:, :3], rank=8)
    >>> sk.n, sk.p, sk.C
    (2000, 50, 3)
    """
    _, x, f = validate_pair(features, outputs, None, None)
    n, p = x.shape
    rows = int(batch_rows) if batch_rows else block_rows(p, columns=min(rank + oversample, p) + probes)
    sk = DLRSketch(rank=rank, oversample=oversample, probes=probes, seed=seed, precision=precision)
    scratch = Scratch()
    with Progress(n, "sketch D_LR", enabled=progress, unit="rows") as bar:
        for sl in row_blocks(n, rows):
            sk._update(x[sl, ...], f[sl, ...], scratch)
            bar.advance(sl.stop - sl.start)
    sk._class_id_outputs = looks_like_class_ids(outputs)
    return sk
