"""Mergeable sufficient statistics for D_LR: :class:`DLRStats`.

The statistics are the moments (n, means, centered co-moments) of the stacked columns ``[Phi, F, Y]`` (features,
outputs, optional label targets), accumulated by :class:`dlrcore.moments.Moments` with per-chunk centered Grams
and Chan's pairwise merge, so that they add up exactly over batches, processes and machines in O((p + C)^2)
memory whatever the number of samples.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .accumulate import Accumulator
from .backend import is_device_input
from .baseline import DEFAULT_DRAWS, random_readout_baseline
from .blocked_moments import BlockedMoments, block_chunk_bytes
from .checks import check_int, check_optional_int
from .concurrency import locked, locked_pair
from .estimator import Estimator
from .inputs import (
    CLASS_ID_OUTPUTS,
    DLRInputError,
    as_matrix,
    check_batch,
    label_targets,
    looks_like_class_ids,
    rejected_batch,
)
from .jackknife import check_jackknife_memory, check_same_blocks
from .measures import NC1Result
from .moments import BadSegment, Moments
from .output_kernels import CENTER_LOGITS
from .precision import check_precision, dtype_name, work_dtype
from .result import Baseline, DLRResult
from .spectral import Spectrum
from .stats_compute import (
    BLOCK_NAMES,
    measure,
    measure_jackknife,
    moments_in_data_units,
    nc1_jackknife,
    nc1_of,
    spectrum_jackknife,
    spectrum_of,
)
from .stats_device import DeviceBatches
from .stats_file import StatsFile
from .stats_format import FORMAT_VERSION
from .weights_head import WeightsHead

__all__ = ["FORMAT_VERSION", "DLRStats"]

#: Attributes restored when a first batch is rejected while it is being staged.
_FIRST_BATCH_STATE = ("_p", "_C", "_cy", "_label_kind", "_data_eps", "_mom", "_blocked")


class DLRStats(DeviceBatches, StatsFile, Estimator):
    """Streaming, mergeable sufficient statistics of (features, outputs[, labels]) for exact D_LR.

    Parameters
    ----------
    weight : array_like, optional
        Last-layer weight ``W`` (C x p). When given, outputs are ``features @ W.T + bias`` and are never formed:
        only p x p feature statistics are accumulated (language-model heads with C up to 10^5 and more).
    bias : array_like, optional
        Last-layer bias (C,); only with ``weight``.
    num_classes : int, optional
        Number of classes when labels are integer class ids. Defaults to the output width C when C > 1.
    precision : {"auto", "float32", "float64"}
        ``"auto"`` computes BLAS products in float32 when the data arrive in float32 or lower and the stacked
        width p + C is at least 128 (accumulated in float64; the output Gram is always formed in float64), and in
        float64 otherwise. ``"float32"`` and ``"float64"`` force one or the other.
    chunk_bytes : int
        Size in bytes of the staging buffer rows are multiplied from (0: 32 MiB or 4096 rows, whichever is larger;
        with ``blocks``, shared by the blocks).
    blocks : int, optional
        Keep the statistics in this many blocks of rows (row k of the stream in block k mod B) for sampling error
        bars by the block jackknife: ``result()`` then carries ``stderr`` and ``bias`` for both measures, and
        ``nc1()`` for NC1 (docs/uncertainty.md). 10 to 20 blocks are recommended. Costs B times the memory of
        the statistics (:func:`dlrcore.jackknife.jackknife_memory_bytes`; refused when that exceeds half the
        memory available) and B + 1 finishing steps per result. Not for device (CuPy, array-API) arrays yet.
        None (the default) keeps one set of statistics, as without this option.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(1000, 16)); out = phi @ rng.normal(size=(16, 3))
    >>> st = DLRStats()
    >>> for i in range(0, 1000, 256):
    ...     _ = st.update(phi[i:i + 256], out[i:i + 256])
    >>> abs(st.result().value - DLRStats().update(phi, out).result().value) < 1e-10
    True

    With error bars:

    >>> res = DLRStats(blocks=10).update(phi, out + rng.normal(size=(1000, 3))).result()
    >>> res.blocks, res.stderr > 0
    (10, True)
    """

    def __init__(
        self,
        *,
        weight: Any = None,
        bias: Any = None,
        num_classes: int | None = None,
        precision: str = "auto",
        chunk_bytes: int = 0,
        blocks: int | None = None,
    ) -> None:
        self._init_lock()
        self.precision = check_precision(precision)
        self.num_classes = check_optional_int(num_classes, "num_classes")
        self.chunk_bytes = check_int(chunk_bytes, "chunk_bytes", minimum=0)
        self.blocks = check_optional_int(blocks, "blocks", minimum=2)
        self._blocked: BlockedMoments | None = None  # with blocks: the statistics, in round-robin row blocks
        self._p: int | None = None
        self._C: int | None = None
        self._cy: int | None = None  # label width; 0 = no labels
        self._label_kind: str | None = None  # "classes" | "targets" | "none"
        self._mom: Moments | None = None  # blocks [features, outputs (width 0 in weights mode), labels]
        self._data_eps = 0.0
        self._weights = weight is not None
        self._dev: Accumulator | None = None  # device batches (CuPy, array-API), folded into _mom on demand
        self._head: WeightsHead | None = None
        self._class_id_outputs = False  # some batch passed one integer column as outputs
        if weight is None:
            if bias is not None:
                raise DLRInputError("bias was given without weight")
            return
        self._head = WeightsHead.from_arrays(weight, bias)
        self._p, self._C = self._head.p, self._head.C
        self._data_eps = self._head.eps

    # ------------------------------------------------------------------ properties
    @property
    def n(self) -> int:
        """Number of samples accumulated."""
        if self._blocked is not None:
            return self._blocked.rows
        return (0 if self._mom is None else self._mom.rows) + (0 if self._dev is None else self._dev.n)

    @property
    def weights_mode(self) -> bool:
        """Whether outputs are derived from a last-layer weight instead of being accumulated."""
        return self._weights

    @property
    def label_kind(self) -> str | None:
        """``"classes"`` (integer ids, one-hot), ``"targets"``, ``"none"``, or None before the first update."""
        return self._label_kind

    @property
    def _c_out(self) -> int:
        return 0 if self._weights else int(self._C or 0)

    @property
    def _work(self) -> np.dtype | None:
        if self._blocked is not None:
            return self._blocked.work
        if self._mom is None and self._dev is not None:
            return np.dtype(dtype_name(self._dev.work))
        return None if self._mom is None else self._mom.work

    def _repr_extra(self) -> str:
        mode = "weights" if self._weights else "outputs"
        blocks = "" if self.blocks is None else f", blocks={self.blocks}"
        return f"mode={mode}, labels={self._label_kind or 'undecided'}, work={self._work}{blocks}"

    # ------------------------------------------------------------------ update
    def _label_block(self, labels: Any, n_rows: int, c_out: int | None) -> tuple[np.ndarray | None, str]:
        """The label block of a batch and its kind (:func:`~dlrcore.inputs.label_targets`; class ids count
        ``num_classes`` classes, else C when C > 1), checked against earlier batches."""
        if labels is None:
            if self._label_kind not in (None, "none"):
                raise DLRInputError("labels: earlier batches had labels; give labels for every batch or none")
            return None, "none"
        classes = self.num_classes if self.num_classes is not None else (c_out if c_out and c_out > 1 else None)
        y, kind = label_targets(labels, n_rows, classes)
        if self._label_kind == "none":
            raise DLRInputError("labels: earlier batches had no labels; give labels for every batch or none")
        if self._label_kind not in (None, kind):
            raise DLRInputError(f"labels: earlier batches gave {self._label_kind}, this one gives {kind}")
        if self._cy is not None and self._cy != y.shape[1]:
            raise DLRInputError(f"labels: {y.shape[1]} columns, but earlier batches had {self._cy}")
        return y, kind

    @locked
    def update(self, features: Any, outputs: Any = None, labels: Any = None) -> DLRStats:
        """Add a batch of samples.

        Parameters
        ----------
        features : array_like
            n_b x p features (the input of the last linear layer).
        outputs : array_like, optional
            n_b x C outputs (1-D means C = 1). Required unless the statistics were built with ``weight``, and
            forbidden then.
        labels : array_like, optional
            Integer class ids (n_b,) or an n_b x C_y target matrix, kept for quality curves and class measures.
            Either every batch has labels or none has.

        Returns
        -------
        DLRStats
            ``self``, so that calls chain.

        Raises
        ------
        DLRInputError
            On any bad input; the statistics are then exactly as before the call.
        """
        if not self._weights and is_device_input(features):
            if self.blocks is not None:
                raise DLRInputError(
                    "blocks= is not supported for device arrays yet: pass NumPy arrays (for example "
                    "cupy.asnumpy(x)), or build DLRStats without blocks"
                )
            return self._update_device(features, outputs, labels)
        if self._weights and outputs is not None:
            raise DLRInputError("outputs: these statistics derive outputs from weight; pass features only")
        if not self._weights and outputs is None:
            raise DLRInputError("outputs: required (or build DLRStats(weight=..., bias=...))")
        x = as_matrix(features, "features")
        f = None if self._weights else as_matrix(outputs, "outputs", allow_1d=True)
        check_batch(x.shape, None if f is None else f.shape, p=self._p, C=None if self._weights else self._C)
        nb, p = x.shape
        y, kind = self._label_block(labels, nb, self._C if f is None else f.shape[1])
        data = [a for a in (x, f) if a is not None]
        width = p + (0 if f is None else f.shape[1]) + (0 if y is None else y.shape[1])
        work = work_dtype([a.dtype for a in data], precision=self.precision, width=width)
        if self._work is not None and self._work == np.float64:
            work = self._work  # never downgrade
        saved = {k: getattr(self, k) for k in _FIRST_BATCH_STATE}
        if self.blocks is not None and self._blocked is None:
            c_out = 0 if f is None else f.shape[1]
            check_jackknife_memory([p, c_out, 0 if y is None else y.shape[1]], self.blocks, work.itemsize,
                                   self.chunk_bytes)
        if self._p is None:
            self._p = p
            if f is not None:
                self._C = f.shape[1]
        if self._label_kind is None:
            self._label_kind = kind
            self._cy = 0 if y is None else y.shape[1]
        mom: Moments | BlockedMoments
        if self.blocks is not None:
            if self._blocked is None:
                c = self._c_out
                widths = [p, c, self._cy or 0]
                self._blocked = BlockedMoments(
                    widths, blocks=self.blocks, work=work, exact_block=1 if c else None,
                    chunk_bytes=block_chunk_bytes(sum(widths), work, self.blocks, self.chunk_bytes),
                )
            mom = self._blocked
            mom.set_work(work)
        elif self._mom is None:
            c = self._c_out
            mom = self._mom = Moments(
                [p, c, self._cy or 0], work=work, exact_block=1 if c else None, chunk_bytes=self.chunk_bytes
            )
        else:
            mom = self._mom
            mom.set_work(work)
        # the precision the outputs arrive in bounds how finely their rank can be resolved
        src = f if f is not None else x
        self._data_eps = max(self._data_eps, float(np.finfo(src.dtype).eps))
        empty = np.zeros((nb, 0))
        try:
            mom.stage([x, empty if f is None else f, empty if y is None else y])
        except BadSegment as bad:
            # Moments.stage left the moments exactly as they were; restore what a first batch may have set
            for k, v in saved.items():
                setattr(self, k, v)
            raise rejected_batch(bad.block, bad.rows, (x, f, y), BLOCK_NAMES, work) from None
        self._class_id_outputs = self._class_id_outputs or (f is not None and looks_like_class_ids(outputs))
        return self

    def __getstate__(self) -> dict:
        with self._lock:
            self._sync()
            return super().__getstate__()

    # ------------------------------------------------------------------ merge
    def _compat(self, other: DLRStats) -> None:
        if not isinstance(other, DLRStats):
            raise TypeError(f"can only merge DLRStats, got {type(other).__name__}")
        if self._weights != other._weights:
            raise DLRInputError("cannot merge statistics with outputs and statistics derived from weights")
        check_same_blocks(self.blocks, other.blocks)
        for name in ("_p", "_C", "_cy"):
            a, b = getattr(self, name), getattr(other, name)
            if a is not None and b is not None and a != b:
                label = {"_p": "feature width p", "_C": "output width C", "_cy": "label width"}[name]
                raise DLRInputError(f"cannot merge statistics of different {label}: {a} vs {b}")
        if self._label_kind and other._label_kind and self._label_kind != other._label_kind and other.n and self.n:
            raise DLRInputError(f"cannot merge labels of kind {self._label_kind!r} with {other._label_kind!r}")
        if self._head is not None and other._head is not None and not self._head.same_as(other._head):
            raise DLRInputError("cannot merge statistics built with different weight or bias")

    def merge(self, other: DLRStats) -> DLRStats:
        """Add the samples of ``other`` to ``self`` (in place) and return ``self``.

        The merge is exact: ``a.merge(b).result()`` equals the result of one object fed both sets of rows. With
        ``blocks``, ``other``'s rows join the blocks as if they had been streamed after ``self``'s (row k of
        ``other`` to block ``(self.n + k) mod B``), so the blocks stay balanced whatever the merge order; both must
        have the same ``blocks``.
        """
        with locked_pair(self, other):
            self._compat(other)
            self._sync()
            other._sync()
            if other.n == 0:
                return self
            if self.n == 0:
                self._p, self._C, self._cy, self._label_kind = other._p, other._C, other._cy, other._label_kind
                self.num_classes = self.num_classes or other.num_classes
                self._mom = None if other._mom is None else other._mom.copy()
                self._blocked = None if other._blocked is None else other._blocked.copy()
            elif self._blocked is not None and other._blocked is not None:
                self._blocked.merge(other._blocked)
            else:
                assert self._mom is not None and other._mom is not None  # both hold rows, without blocks
                self._mom.merge(other._mom)
            self._data_eps = max(self._data_eps, other._data_eps)
            self._class_id_outputs = self._class_id_outputs or getattr(other, "_class_id_outputs", False)
            return self

    @locked
    def copy(self) -> DLRStats:
        """Deep copy (staged rows are folded in first)."""
        self._sync()
        out = copy.copy(self)
        out._mom = None if self._mom is None else self._mom.copy()
        out._blocked = None if self._blocked is None else self._blocked.copy()
        out._head = None if self._head is None else self._head.copy()
        return out

    # ------------------------------------------------------------------ results
    def _require(self) -> Moments:
        """The moments of every row, flushed (with blocks: the merge of the blocks, a new object)."""
        self._sync()
        self._require_samples()
        if self._blocked is not None:
            return self._blocked.total()
        mo = self._mom
        assert mo is not None  # n > 0: the moments exist
        mo.flush()
        return mo

    @locked
    def moments(self) -> dict[str, Any]:
        """The accumulated statistics as float64 arrays: n, means and centered co-moment blocks.

        Keys: ``n``, ``mean_features``, ``mean_outputs`` (None in weights mode), ``mean_labels``,
        ``features_features`` (Phic^T Phic), ``outputs_features`` (Fc^T Phic), ``outputs_outputs`` (Fc^T Fc),
        ``labels_features``, ``labels_outputs``, ``labels_labels``; absent blocks are None.
        """
        return moments_in_data_units(self._require(), has_outputs=self._c_out > 0, has_labels=bool(self._cy))

    @locked
    def result(
        self,
        rtol: float | None = None,
        *,
        output_kernel: str = "span",
        center_logits: bool = CENTER_LOGITS,
        baseline: bool = False,
    ) -> DLRResult:
        """Exact D_LR of everything accumulated so far: the literal value and D_half.

        Parameters
        ----------
        rtol : float, optional
            Relative tolerance on the singular values of the raw outputs that decides the literal output span
            (``sigma_i > rtol * sigma_1`` kept). None uses :func:`dlrcore.exact.default_rtol`. D_half needs none.
        output_kernel : {"span", "sqrt"}
            Which measure ``result.value`` holds: ``"span"``, the paper's literal D_LR, or ``"sqrt"``, D_half (the
            square-root output kernel, for cross-entropy logits; docs/output-kernel.md). Both are always in
            ``value_span`` and ``value_sqrt``.
        center_logits : bool
            Center the logits across classes before D_half (``F (I - 1 1^T / C)``), so that per-sample shifts
            common to every class (which softmax ignores) do not count. Needs C >= 2.
        baseline : bool
            Also compute :meth:`baseline` (default draws) into ``result.baseline``.

        Returns
        -------
        DLRResult
            With ``blocks``, also the block-jackknife standard errors and biases of both measures
            (``stderr``, ``bias``; ``stderr_span``, ``stderr_sqrt``, ...): each of the B leave-one-block-out
            statistics is finished exactly like the full one.
        """
        res = self._measure(self._require(), rtol, output_kernel, center_logits)
        if self._blocked is not None:
            res = measure_jackknife(self._blocked, res, self._head, C=int(self._C or 0), data_eps=self._data_eps,
                                    rtol=rtol, center_logits=center_logits)
        if baseline:
            res = res.with_baseline(self.baseline(center_logits=center_logits))
        return res

    def _measure(self, mo: Moments, rtol: float | None, output_kernel: str, center_logits: bool) -> DLRResult:
        """Both measures of the moments ``mo`` of every row (no jackknife), with the class-id warning."""
        res = measure(mo, self._head, C=int(self._C or 0), data_eps=self._data_eps, rtol=rtol,
                      output_kernel=output_kernel, center_logits=center_logits)
        return res.with_warnings(CLASS_ID_OUTPUTS) if self._class_id_outputs else res

    @locked
    def baseline(
        self, draws: int = DEFAULT_DRAWS, *, seed: int = 0, center_logits: bool = CENTER_LOGITS
    ) -> Baseline:
        """Both measures for random Gaussian readouts of these features: what an untrained readout would score.

        Each draw is a readout ``W`` (C x p, independent standard normal entries, no bias) applied to the stored
        feature moments alone: no pass over the data, O(p^2 C) work per draw (O(p^2 C + p^3) when C > p). D_half
        reads low for any readout once C is a large share of the feature rank; this baseline says how low.

        Parameters
        ----------
        draws : int
            Number of random readouts (at least 1).
        seed : int
            Seed of the readouts.
        center_logits : bool
            As in :meth:`result`.

        Returns
        -------
        Baseline

        Examples
        --------
        >>> import numpy as np, dlrcore
        >>> rng = np.random.default_rng(0)
        >>> phi = rng.normal(size=(500, 32)) * np.linspace(3, 0.1, 32)
        >>> b = dlrcore.DLRStats().update(phi, phi[:, :4]).baseline(draws=4)
        >>> b.draws, b.C, 0.0 <= b.sqrt_mean <= 1.0
        (4, 4, True)
        """
        mo = self._require()
        return random_readout_baseline(
            n=mo.n,
            mean_phi=mo.block_mean(0),
            m_pp=mo.block(0, 0),
            C=int(self._C or 0),
            draws=draws,
            seed=seed,
            center_logits=center_logits,
        )

    @locked
    def spectrum(
        self,
        k: int | None = None,
        *,
        rtol: float | None = None,
        name: str = "",
        method: str = "exact",
        oversample: int = 16,
        power_iters: int = 2,
        seed: int = 0,
        output_kernel: str = "span",
        center_logits: bool = CENTER_LOGITS,
    ) -> Spectrum:
        """The paper's eigen-visualisation data: eigenvalues, utilization and (with labels) quality curves.

        Parameters
        ----------
        k : int, optional
            Modes to return; default all modes the statistics support (``min(p, n - 1)``). Required with
            ``method="randomized"``.
        rtol, output_kernel, center_logits
            For the D_LR and D_half values carried in the spectrum (see :meth:`result`); ``output_kernel`` picks
            which one ``Spectrum.dlr`` holds.
        name : str
            Legend label for figures.
        method : {"exact", "randomized"}
            ``"exact"`` decomposes the whole p x p feature Gram (O(p^3): minutes at p = 16384 on two cores).
            ``"randomized"`` computes only the top ``k`` modes by randomized subspace iteration on the stored Gram
            (O(p^2 k); :func:`dlrcore.spectral.top_eigh`), and ``eigenvalue_error`` then bounds how far each
            returned eigenvalue lies below the true one. The D_LR value itself needs no decomposition of the
            Gram, so :meth:`result` is exact and cheap at any p.
        oversample, power_iters, seed
            Extra columns, QR-normalised power iterations and random seed of ``method="randomized"``.

        Returns
        -------
        Spectrum

        Examples
        --------
        >>> import numpy as np, dlrcore
        >>> rng = np.random.default_rng(0)
        >>> phi = rng.normal(size=(500, 40)) * np.arange(40, 0, -1)
        >>> st = dlrcore.DLRStats().update(phi, phi[:, :3])
        >>> top = st.spectrum(5, method="randomized")
        >>> full = st.spectrum()
        >>> bool(np.all(full.eigenvalues[:5] - top.eigenvalues <= top.eigenvalue_error + 1e-9))
        True
        """
        def of(mo: Moments, modes: int | None) -> Spectrum:
            res = self._measure(mo, rtol, output_kernel, center_logits)
            return spectrum_of(mo, self._head, res, C=int(self._C or 0), has_labels=bool(self._cy), k=modes,
                               name=name, method=method, oversample=oversample, power_iters=power_iters, seed=seed)

        spec = of(self._require(), k)
        if self._blocked is not None:  # the same spectrum of every block but one, B times
            spec = spectrum_jackknife(self._blocked, spec, lambda mo: of(mo, spec.k))
        return spec

    @locked
    def nc1(self) -> NC1Result:
        """NC1 = tr(Sigma_W Sigma_B^+) / C of the features, from the class statistics (labels must be class ids).

        With ``blocks``, the result also carries the block-jackknife ``stderr`` and ``bias`` of NC1.
        """
        mo = self._require()
        if self._label_kind != "classes":
            raise DLRInputError("nc1 needs integer class labels: pass labels=class_ids to update()")
        res = nc1_of(mo, data_eps=self._data_eps)
        if self._blocked is not None:
            res = nc1_jackknife(self._blocked, res, data_eps=self._data_eps)
        return res
