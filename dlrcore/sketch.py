"""The one-pass sketch estimator of D_LR for feature widths where a p x p Gram is too large: :class:`DLRSketch`.

``Y = G Omega`` and ``Z = Fc^T Phic Omega`` (``G = Phic^T Phic``, Gaussian ``Omega``) and the outputs' exact C x C
statistics are accumulated batch by batch in O(p s) memory, in the arrays' own namespace (NumPy, CuPy, any
array-API library), and merge across processes. The estimate, its error and the method are in
:mod:`dlrcore.sketch_algebra`; the multi-pass randomized estimator is :mod:`dlrcore.randomized` and the choice of
method :mod:`dlrcore.method_choice`, whose names this module also exports.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .accumulate import (
    Accumulator,
    BadBatch,
    Scratch,
    block_rows,
    copy_accumulator,
    explain_bad,
    row_blocks,
    validate_pair,
)
from .backend import device_array, is_numpy, to_numpy
from .concurrency import locked, locked_pair
from .estimator import Estimator
from .inputs import CLASS_ID_OUTPUTS, DLRInputError, looks_like_class_ids
from .method_choice import available_memory, choose_method, exact_memory_bytes, method_for_widths
from .output_kernels import CENTER_LOGITS, check_output_kernel
from .precision import PRECISIONS, check_precision, dtype_eps, dtype_name, work_dtype
from .progress import Progress
from .randomized import randomized_dlr
from .result import DLRResult
from .sketch_algebra import (
    DEFAULT_OVERSAMPLE,
    DEFAULT_PROBES,
    DEFAULT_RANK,
    ERROR_LEVEL,
    check_sketch_params,
    error_multiplier,
    estimate_from_sketch,
    exact_cross,
    gaussian_test_matrix,
)
from .spectral import Spectrum, in_data_units
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

# the multi-pass estimator and the method choice live in their own modules; their names stay importable here
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
]

MAGIC = "dlrcore.DLRSketch"
FORMAT_VERSION = 1


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
        check_sketch_params(rank, oversample, probes)
        check_precision(precision)
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
    def sketch_size(self) -> int:
        """Columns of the Nystrom part, ``min(rank + oversample, p)``."""
        return min(self.rank + self.oversample, self._p or self.rank + self.oversample)

    def _repr_extra(self) -> str:
        return f"rank={self.rank}, oversample={self.oversample}, probes={self.probes}, seed={self.seed}"

    def _omega(self, p: int) -> np.ndarray:
        s1 = min(self.rank + self.oversample, p)
        return np.hstack(
            [gaussian_test_matrix(self.seed, (p, s1), 0), gaussian_test_matrix(self.seed, (p, self.probes), 1)]
        )

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
            work = work_dtype([x.dtype, f.dtype], precision=self.precision, width=x.shape[1] + f.shape[1], xp=xp)
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
        assert acc is not None  # samples were accumulated, so the accumulator exists
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

    @locked
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

    @locked  # the estimate and the exponent it is scaled back by come from one state
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
        estimated = self._estimate(rtol, k, output_kernel, center_logits)[1]
        acc = self._acc
        assert acc is not None  # _estimate required samples, so the accumulator exists
        spec = in_data_units(estimated, acc.exp_x)
        return spec.with_name(name) if name else spec

    def _estimate(
        self, rtol: float | None, k: int | None, output_kernel: str, center_logits: bool
    ) -> tuple[DLRResult, Spectrum]:
        check_output_kernel(output_kernel)
        h = self._host()
        return estimate_from_sketch(
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
        return atomic_savez(path, MAGIC, FORMAT_VERSION, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DLRSketch:
        """Read a sketch written by :meth:`save` (as NumPy arrays on the host)."""
        data = read_npz(path, MAGIC, FORMAT_VERSION)
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
