"""Companion measures from the same kind of streamed statistics: linear CKA, S_init and NC1.

* Linear CKA (Kornblith et al. 2019) between two representations X, Y of the same samples:
  ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, from the moments of ``[X, Y]``.
* S_init: linear CKA between the features at initialisation and the current features on the same inputs.
* NC1 (Papyan, Han and Donoho 2020): ``tr(Sigma_W Sigma_B^+) / C`` from class-conditional statistics, which are
  the moments of ``[Phi, onehot(labels)]``: with ``n_c = n mean(y_c)``, the class-mean deviations are
  ``mu_c - mu = (Yc^T Phic)_c / n_c``.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from .blocked_moments import BlockedMoments, block_chunk_bytes
from .checks import check_int, check_optional_int
from .concurrency import locked, locked_pair
from .estimator import Estimator
from .inputs import DLRInputError, as_matrix, check_finite, from_framework, one_hot, rejected_batch
from .jackknife import check_jackknife_memory, check_same_blocks, leave_one_block_out
from .moments import BadSegment, Moments
from .precision import PRECISIONS, check_precision, work_dtype
from .result import CKAResult, NC1Result
from .storage import (
    array_field,
    atomic_savez,
    check_comoment,
    int_array_field,
    int_field,
    read_npz,
    scale_exponents_field,
    str_field,
)

__all__ = ["CKAResult", "CKAStats", "NC1Result", "cka", "nc1", "nc1_from_moments", "s_init"]

CKA_MAGIC = "dlrcore.CKAStats"
#: Newest CKA statistics format (version 2 added jackknife blocks; statistics without blocks are written as 1).
CKA_FORMAT_VERSION = 2


def _frob(m_upper_or_full: np.ndarray, *, upper: bool) -> float:
    sq = float(np.einsum("ij,ij->", m_upper_or_full, m_upper_or_full))
    if upper:
        d = np.diagonal(m_upper_or_full)
        sq = 2.0 * sq - float(d @ d)
    return math.sqrt(max(sq, 0.0))


class CKAStats(Estimator):
    """Streaming, mergeable statistics for linear CKA between two representations of the same samples.

    Parameters
    ----------
    precision : {"auto", "float32", "float64"}
        Precision of the products, as in :class:`~dlrcore.DLRStats`.
    chunk_bytes : int
        Staging buffer size (with ``blocks``, shared by the blocks).
    blocks : int, optional
        Keep the statistics in this many round-robin blocks of rows for a block-jackknife standard error and bias
        of CKA (``result().stderr``, ``result().bias``; docs/uncertainty.md). 10 to 20 are recommended; costs B
        times the memory of the statistics (refused beyond half the memory available). None: no error bars.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 6)); q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    >>> st = CKAStats()
    >>> for i in range(0, 400, 100):
    ...     _ = st.update(x[i:i + 100], 3.0 * x[i:i + 100] @ q)
    >>> round(st.result().value, 12)
    1.0
    >>> res = CKAStats(blocks=10).update(x, x + rng.normal(size=(400, 6))).result()
    >>> res.blocks, res.stderr > 0
    (10, True)
    """

    def __init__(self, *, precision: str = "auto", chunk_bytes: int = 0, blocks: int | None = None) -> None:
        self._init_lock()
        self.precision = check_precision(precision)
        self.chunk_bytes = check_int(chunk_bytes, "chunk_bytes", minimum=0)
        self.blocks = check_optional_int(blocks, "blocks", minimum=2)
        self._mom: Moments | BlockedMoments | None = None  # BlockedMoments with blocks

    @property
    def n(self) -> int:
        """Samples accumulated."""
        return 0 if self._mom is None else self._mom.rows

    @property
    def p(self) -> int | None:
        """Width of the first representation ``x`` (None before the first batch)."""
        return None if self._mom is None else self._mom.widths[0]

    @property
    def C(self) -> int | None:
        """Width of the second representation ``y`` (None before the first batch)."""
        return None if self._mom is None else self._mom.widths[1]

    def _repr_extra(self) -> str:
        return f"precision={self.precision}" + ("" if self.blocks is None else f", blocks={self.blocks}")

    def _new_moments(self, widths: list[int], work: np.dtype) -> Moments | BlockedMoments:
        if self.blocks is None:
            return Moments(widths, work=work, chunk_bytes=self.chunk_bytes)
        check_jackknife_memory(widths, self.blocks, work.itemsize, self.chunk_bytes)
        return BlockedMoments(widths, blocks=self.blocks, work=work,
                              chunk_bytes=block_chunk_bytes(sum(widths), work, self.blocks, self.chunk_bytes))

    @locked
    def update(self, x: Any, y: Any) -> CKAStats:
        """Add a batch: ``x`` (n_b x p_x) and ``y`` (n_b x p_y) are two representations of the same samples.

        Raises
        ------
        DLRInputError
            On bad input; the statistics are then exactly as before.
        """
        a = as_matrix(x, "x", allow_1d=True)
        b = as_matrix(y, "y", allow_1d=True)
        if a.shape[0] != b.shape[0]:
            raise DLRInputError(f"x has {a.shape[0]} rows but y has {b.shape[0]} (row counts must match)")
        if a.shape[0] == 0:
            raise DLRInputError("x: empty batch (0 rows)")
        if a.shape[1] == 0 or b.shape[1] == 0:
            raise DLRInputError(f"zero columns: x has {a.shape[1]}, y has {b.shape[1]}")
        if self._mom is not None and self._mom.widths != (a.shape[1], b.shape[1]):
            raise DLRInputError(f"widths {(a.shape[1], b.shape[1])} differ from earlier batches {self._mom.widths}")
        work = work_dtype([a.dtype, b.dtype], precision=self.precision, width=a.shape[1] + b.shape[1])
        if self._mom is not None and self._mom.work == np.float64:
            work = self._mom.work
        mom = self._mom or self._new_moments([a.shape[1], b.shape[1]], work)
        mom.set_work(work)
        try:
            mom.stage([a, b])  # atomic: a rejected batch leaves the moments as they were
        except BadSegment as bad:
            raise rejected_batch(bad.block, bad.rows, (a, b), ("x", "y"), work) from None
        self._mom = mom
        return self

    def merge(self, other: CKAStats) -> CKAStats:
        """Add ``other``'s samples in place and return ``self``."""
        if not isinstance(other, CKAStats):
            raise TypeError(f"can only merge CKAStats, got {type(other).__name__}")
        with locked_pair(self, other):
            check_same_blocks(self.blocks, other.blocks, "CKA statistics")
            if other._mom is None or other._mom.rows == 0:
                return self
            if self._mom is None:
                self._mom = other._mom.copy()
                return self
            if self._mom.widths != other._mom.widths:
                raise DLRInputError(
                    f"cannot merge CKA statistics of widths {self._mom.widths} and {other._mom.widths}"
                )
            if isinstance(self._mom, BlockedMoments) and isinstance(other._mom, BlockedMoments):
                self._mom.merge(other._mom)  # other's rows as if streamed after self's (docs/uncertainty.md)
            elif isinstance(self._mom, Moments) and isinstance(other._mom, Moments):
                self._mom.merge(other._mom)
            return self

    @locked
    def copy(self) -> CKAStats:
        """Deep copy."""
        out = copy.copy(self)
        out._mom = None if self._mom is None else self._mom.copy()
        return out

    @locked
    def result(self) -> CKAResult:
        """Linear CKA of everything accumulated so far.

        With ``blocks``, the result also carries the block-jackknife ``stderr`` and ``bias`` of CKA (None with
        fewer samples than blocks, or where a block left out leaves one side constant).
        """
        self._require_samples()
        held = self._mom
        assert held is not None  # samples were accumulated, so the moments exist
        mo = held.total() if isinstance(held, BlockedMoments) else held
        res = CKAResult(
            value=_cka_value(mo),
            n=mo.n,
            p_x=mo.widths[0],
            p_y=mo.widths[1],
            precision="float32" if mo.work == np.float32 else "float64",
        )
        if not isinstance(held, BlockedMoments):
            return res
        jks, _ = leave_one_block_out(held, (res.value,), lambda m: (_cka_value(m),))
        if jks is None:
            return replace(res, blocks=held.blocks)
        return replace(res, blocks=held.blocks, stderr=jks[0].stderr, bias=jks[0].bias)

    @locked
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the statistics to one ``.npz`` file, atomically (an empty object too: it loads back empty).

        With ``blocks`` the file holds ``blocks`` and each block's moments under the prefix ``block<i>_``, as format
        version 2; statistics without blocks are written as version 1, as before blocks existed.
        """
        arrays: dict[str, Any] = {"precision": np.array(self.precision), "n": np.array(0, dtype=np.int64)}
        if self.blocks is not None:
            arrays["blocks"] = np.array(self.blocks, dtype=np.int64)
        if self._mom is not None:
            arrays.update(self._mom.state_arrays())
            arrays.update(widths=np.array(self._mom.widths), work=np.array(self._mom.work.name))
            if isinstance(self._mom, BlockedMoments):
                arrays["n"] = np.array(self._mom.rows, dtype=np.int64)
        return atomic_savez(path, CKA_MAGIC, 1 if self.blocks is None else CKA_FORMAT_VERSION, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CKAStats:
        """Read statistics written by :meth:`save`, validating every field."""
        data = read_npz(path, CKA_MAGIC, CKA_FORMAT_VERSION)
        precision = str_field(data, "precision", path, PRECISIONS) if "precision" in data else "auto"
        blocks = int_field(data, "blocks", path, least=2) if "blocks" in data else None
        st = cls(precision=precision, blocks=blocks)
        n = int_field(data, "n", path, least=0)
        if not n:
            return st
        widths = int_array_field(data, "widths", path, 2, least=1)
        q = sum(widths)
        work = np.dtype(str_field(data, "work", path, ("float32", "float64")))
        if blocks is not None:
            check_jackknife_memory(widths, blocks, work.itemsize)
            st._mom = BlockedMoments.from_state(data, path, widths, blocks=blocks, n=n, work=work,
                                                chunk_bytes=block_chunk_bytes(q, work, blocks))
            return st
        comoment = array_field(data, "comoment", path, (q, q))
        check_comoment(comoment, "comoment", path)
        st._mom = Moments(widths, work=work)
        st._mom.load_arrays(n, array_field(data, "mean", path, (q,)), comoment, scale_exponents_field(data, path, 2))
        return st


def _cka_value(mo: Moments) -> float:
    """Linear CKA of flushed moments of ``[x, y]``.

    Raises
    ------
    DLRInputError
        With fewer than two samples, or one side constant.
    """
    mo.flush()
    if mo.n < 2:
        raise DLRInputError(f"CKA needs at least 2 samples, got n = {mo.n}")
    nx = _frob(mo.block(0, 0, upper=True), upper=True)
    ny = _frob(mo.block(1, 1, upper=True), upper=True)
    if not (nx > 0 and ny > 0):
        which = "x" if not nx > 0 else "y"
        raise DLRInputError(f"{which} is constant across samples: its centered kernel is zero and CKA undefined")
    cross = mo.block(0, 1)
    value = float(np.einsum("ij,ij->", cross, cross)) / (nx * ny)
    return min(max(value, 0.0), 1.0)


def cka(x: Any, y: Any, *, precision: str = "auto") -> CKAResult:
    """Linear CKA between two representations of the same samples (Kornblith et al., 2019).

    Parameters
    ----------
    x, y : array_like
        n x p_x and n x p_y (1-D means one column); any layer, any checkpoint.
    precision : {"auto", "float32", "float64"}
        Precision of the products.

    Returns
    -------
    CKAResult
        ``value`` in [0, 1]; 1 for a representation with itself, unchanged by orthogonal transforms and
        isotropic scaling of either side.

    References
    ----------
    S. Kornblith, M. Norouzi, H. Lee, G. Hinton. Similarity of neural network representations revisited. ICML 2019.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 5))
    >>> round(cka(x, 2 * x + 1).value, 12)
    1.0
    """
    return CKAStats(precision=precision).update(x, y).result()


def s_init(features_init: Any, features_now: Any, *, precision: str = "auto") -> CKAResult:
    """S_init: linear CKA between the features at initialisation and now, on the same inputs.

    Near 1 when training left the feature kernel where it started (lazy), lower when it moved (rich).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=(100, 4))
    >>> round(s_init(x, x).value, 12)
    1.0
    """
    return cka(features_init, features_now, precision=precision)


def nc1_from_moments(
    *, n: int, m_pp: np.ndarray, m_yp: np.ndarray, mean_y: np.ndarray, rtol: float = 1e-10
) -> NC1Result:
    """NC1 from the moments of ``[Phi, onehot(labels)]``.

    ``Sigma_T = Phic^T Phic / n``; class ``c`` has ``n_c = n mean_y[c]`` samples and mean deviation
    ``mu_c - mu = (Yc^T Phic)_c / n_c``; ``Sigma_B`` averages ``(mu_c - mu)(mu_c - mu)^T`` over the classes
    present, ``Sigma_W = Sigma_T - sum_c (n_c / n)(mu_c - mu)(mu_c - mu)^T``. Classes with no sample are left out
    of C and of ``Sigma_B``. ``Sigma_B^+`` keeps at most c - 1 singular directions (the deviations sum to zero
    with weights n_c), those above ``rtol`` relative: callers pass about 100 eps of the data's precision, since
    class means rounded to float32 make exactly collinear means look full-rank at 1e-7 and NC1 explode.
    """
    counts = np.rint(n * mean_y).astype(np.int64)
    present = counts > 0
    c = int(present.sum())
    if c < 2:
        raise DLRInputError(f"NC1 needs samples of at least 2 classes, got {c}")
    dev = m_yp[present] / counts[present, None]  # (c, p): mu_c - mu
    sigma_w = m_pp / n - (dev.T * (counts[present] / n)) @ dev
    _u, sv, vt = scipy.linalg.svd(dev, full_matrices=False, check_finite=False)
    keep = sv > rtol * sv[0] if sv.size and sv[0] > 0 else np.zeros(sv.shape, dtype=bool)
    # sum_c n_c (mu_c - mu) = 0: the deviations span at most c - 1 directions; a c-th singular value is rounding
    keep[c - 1 :] = False
    vk, sk = vt[keep], sv[keep]
    # Sigma_B = dev^T dev / c = V diag(s^2 / c) V^T, so tr(Sigma_W Sigma_B^+) / c = sum_j v_j^T Sigma_W v_j / s_j^2.
    # Each v_j^T Sigma_W v_j >= 0, but Sigma_W is a difference: near collapse rounding (about q eps times
    # v_j^T Sigma_T v_j) can make a term negative, which is clamped at 0; values below that floor are rounding.
    terms = np.einsum("ij,jk,ik->i", vk, sigma_w, vk) / sk**2
    value = float(np.sum(np.maximum(terms, 0.0)))
    return NC1Result(
        value=value,
        n=int(n),
        p=int(m_pp.shape[0]),
        num_classes=int(mean_y.shape[0]),
        classes_present=c,
        between_rank=int(keep.sum()),
    )


def nc1(features: Any, labels: Any, *, num_classes: int | None = None, precision: str = "auto") -> NC1Result:
    """NC1 = tr(Sigma_W Sigma_B^+) / C of Papyan, Han and Donoho (2020): within-class variability against
    between-class separation of the features; it tends to 0 under neural collapse.

    Parameters
    ----------
    features : array_like
        n x p features.
    labels : array_like
        Integer class ids (n,).
    num_classes : int, optional
        Number of classes (default ``max(labels) + 1``).
    precision : {"auto", "float32", "float64"}
        Precision of the products.

    Returns
    -------
    NC1Result

    References
    ----------
    V. Papyan, X. Y. Han, D. L. Donoho. Prevalence of neural collapse during the terminal phase of deep learning
    training. PNAS 117(40), 2020.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, size=300); means = 10 * rng.normal(size=(3, 4))
    >>> nc1(means[y] + 0.01 * rng.normal(size=(300, 4)), y).value < 1e-3
    True
    """
    x = as_matrix(features, "features")
    ids = np.asarray(labels if isinstance(labels, np.ndarray) else from_framework(labels, "labels"))
    if x.shape[0] < 2:
        raise DLRInputError(f"NC1 needs at least 2 samples, got n = {x.shape[0]}")
    if num_classes is not None:
        k = check_int(num_classes, "num_classes")
    else:
        k = int(ids.max()) + 1 if ids.size and ids.dtype.kind in "iu" else 1
    y = one_hot(ids, x.shape[0], k)
    work = work_dtype([x.dtype], precision=precision, width=x.shape[1] + k)
    check_finite(x, "features")
    mo = Moments([x.shape[1], k], work=work)
    mo.stage([x, y])
    mo.flush()
    rtol = max(1e-10, 100.0 * float(np.finfo(x.dtype).eps), 100.0 * float(np.finfo(work).eps))
    return nc1_from_moments(n=mo.n, m_pp=mo.block(0, 0), m_yp=mo.block(1, 0), mean_y=mo.block_mean(1), rtol=rtol)
