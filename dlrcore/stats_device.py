"""The device-array path of :class:`~dlrcore.DLRStats`: CuPy and other array-API batches accumulate on their own
device (an :class:`~dlrcore.accumulate.Accumulator` over ``[features, labels]`` against the outputs) and reach the
host statistics once, when a result, a merge or a save needs them (:meth:`DeviceBatches._sync`).

A mixin in the scikit-learn manner: it declares the state of :class:`~dlrcore.DLRStats` it reads and writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .accumulate import Accumulator, BadBatch, explain_bad, validate_pair
from .backend import is_numpy, to_numpy
from .inputs import DLRInputError, looks_like_class_ids
from .moments import Moments
from .precision import dtype_eps, dtype_name, work_dtype

__all__ = ["DeviceBatches"]


class DeviceBatches:
    """Mixin of :class:`~dlrcore.DLRStats`: ``_update_device`` for device batches, ``_sync`` to fold them in."""

    precision: str
    chunk_bytes: int
    _p: int | None
    _C: int | None
    _cy: int | None
    _label_kind: str | None
    _data_eps: float
    _class_id_outputs: bool
    _dev: Accumulator | None
    _mom: Moments | None

    if TYPE_CHECKING:  # supplied by DLRStats; declared for the type checker only

        @property
        def _work(self) -> np.dtype | None: ...

        def _label_block(self, labels: Any, n_rows: int, c_out: int | None) -> tuple[np.ndarray | None, str]: ...

    def _update_device(self, features: Any, outputs: Any, labels: Any) -> Any:
        """Accumulate a batch of device arrays (CuPy, array-API) on their device; see :meth:`update`.

        The products and float64 accumulators stay on the device (an :class:`~dlrcore.accumulate.Accumulator`
        over ``[features, labels]`` against the outputs); they come to the host once, when a result, a merge or a
        save needs them.
        """
        if outputs is None:
            raise DLRInputError("outputs: required (or build DLRStats(weight=..., bias=...))")
        p, C = self._p, self._C
        xp, x, f = validate_pair(features, outputs, p, C)
        nb = x.shape[0]
        on_host = labels if labels is None or not hasattr(labels, "__array_namespace__") else to_numpy(labels)
        y, kind = self._label_block(on_host, nb, f.shape[1])
        width = x.shape[1] + f.shape[1] + (0 if y is None else y.shape[1])
        precision = "float64" if self._work is not None and self._work == np.float64 else self.precision  # never down
        work = work_dtype([x.dtype, f.dtype], precision=precision, width=width, xp=xp)
        dev = self._dev
        if dev is not None and dev.xp is not xp and not (is_numpy(dev.xp) and is_numpy(xp)):
            raise DLRInputError("this batch comes from another array library than earlier device batches")
        if dev is None or dtype_name(dev.work) != dtype_name(work):
            self._sync()
            dev = Accumulator.stacked(xp, work, x, labelled=y is not None)
        try:
            parts = dev.batch(dev.with_labels(x, y), f)
        except BadBatch as bad:
            raise explain_bad(xp, x, f, str(bad)) from None
        dev.add(parts)
        self._dev = dev
        if self._p is None:
            self._p, self._C = x.shape[1], f.shape[1]
        if self._label_kind is None:
            self._label_kind, self._cy = kind, 0 if y is None else y.shape[1]
        self._data_eps = max(self._data_eps, dtype_eps(f.dtype))
        self._class_id_outputs = self._class_id_outputs or looks_like_class_ids(outputs)
        return self

    def _sync(self) -> None:
        """Fold the device accumulator into the host statistics (one transfer of the (p + C)^2 moments)."""
        dev, self._dev = self._dev, None
        if dev is None or dev.n == 0:
            return
        mom = dev.to_moments(int(self._p or 0), int(self._C or 0), int(self._cy or 0), self.chunk_bytes)
        if self._mom is None:
            self._mom = mom
        else:
            self._mom.set_work(mom.work)
            self._mom.merge(mom)
