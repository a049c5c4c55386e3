"""The measuring loop shared by every adapter, framework-neutral: no framework is imported here.

:func:`feed_batches` takes the batches (at most ``max_batches``), splits each into model input and raw labels, runs
the model on the input to get the (features, outputs) rows of the measured layer, decides once whether labels are
used (:class:`~dlrcore.adapters.batches.LabelDecision`), feeds :class:`dlrcore.DLRStats` (and the statistics of
further layers), optionally writes the rows to ``.npy`` files (:class:`~dlrcore.npy_writer.ArrayDump`) and shows a
progress display. An adapter only supplies two small callables: ``split(batch)`` and ``run(inputs, index)``; the
latter returns a :class:`BatchRows`.

Examples
--------
>>> import numpy as np
>>> from dlrcore import DLRStats
>>> rng = np.random.default_rng(0)
>>> batches = [(rng.normal(size=(10, 3)), rng.integers(0, 2, 10)) for _ in range(3)]
>>> w = rng.normal(size=(3, 2))
>>> st = DLRStats()
>>> feed_batches(batches, 3, split=lambda b: b, run=lambda x, i: BatchRows(x, x @ w), stats=st, progress=False)
(3, 30)
>>> st.n, st.label_kind
(30, 'classes')
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..npy_writer import ArrayDump
from ..progress import Progress
from ..stats import DLRStats
from .batches import LabelDecision, label_rows

__all__ = ["PROGRESS_DELAY", "BatchRows", "feed_batches", "host_rows"]

#: Seconds a pass must run before the progress display appears (short passes print nothing).
PROGRESS_DELAY = 2.0


@dataclass
class BatchRows:
    """The rows one batch gives at the measured layer.

    Attributes
    ----------
    features : array or None
        Feature rows (the layer's input, one row per sample); None when only ``layers`` are measured.
    outputs : array or None
        Output rows; None when the statistics derive them from the layer's weights.
    n_batch : int or None
        Samples in the batch, when it differs from the rows (a token-wise layer gives a row per token); None: as
        many as rows. Used by the default label conversion.
    layers : dict
        Feature rows of further layers, each measured against ``outputs`` (layer-wise D_LR).
    label_rows : callable, optional
        ``label_rows(raw labels)`` gives ``(rows, "")`` or ``(None, reason)``; default
        :func:`dlrcore.adapters.batches.label_rows`.
    """

    features: Any
    outputs: Any = None
    n_batch: int | None = None
    layers: Mapping[str, Any] = field(default_factory=dict)
    label_rows: Callable[[Any], tuple[Any, str]] | None = None

    @property
    def rows(self) -> int:
        """Number of sample rows."""
        return int((self.features if self.features is not None else self.outputs).shape[0])

    def labels(self, lab: Any, decision: LabelDecision, index: int) -> Any:
        """The label rows of this batch as ``decision`` rules (None when labels are not used)."""
        if self.label_rows is not None:
            return decision.decide(lab, index, self.label_rows)
        n = self.rows
        return decision.decide(lab, index, lambda v: label_rows(v, n, n if self.n_batch is None else self.n_batch))


def host_rows(t: Any) -> np.ndarray:
    """Rows as a host NumPy array that a ``.npy`` file holds as numbers: torch tensors are detached and copied
    to the host, JAX and CuPy arrays copied, and bfloat16 (or any other non-NumPy float) widened to float32.

    Examples
    --------
    >>> host_rows([[1, 2]]).tolist()
    [[1, 2]]
    """
    if hasattr(t, "detach") and hasattr(t, "cpu"):  # a torch tensor (bfloat16 has no NumPy dtype)
        t = t.detach()
        if "bfloat16" in str(t.dtype):
            t = t.float()
        t = t.cpu().numpy()
    elif hasattr(t, "get") and not isinstance(t, (np.ndarray, Mapping)):  # a CuPy array
        t = t.get()
    a = np.asarray(t)
    if a.dtype.kind not in "biuf":  # ml_dtypes' bfloat16 and friends: NumPy reads them as void
        a = a.astype(np.float32)
    return a


def feed_batches(
    batches: Iterable[Any],
    total: int | None,
    *,
    split: Callable[[Any], tuple[Any, Any]],
    run: Callable[[Any, int], BatchRows | None],
    stats: DLRStats | None,
    layer_stats: Mapping[str, DLRStats] | None = None,
    decision: LabelDecision | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    title: str = "dlrcore collect",
    delay: float = PROGRESS_DELAY,
    dump: str | os.PathLike[str] | None = None,
    host: Callable[[Any], np.ndarray] = host_rows,
) -> tuple[int, int]:
    """Feed the rows of every batch to the statistics; return ``(batches read, rows fed)``.

    Parameters
    ----------
    batches : iterable
        The batches, in order (a one-shot iterator is consumed).
    total : int or None
        Batches expected, for the progress display (None when unknown); capped at ``max_batches``.
    split : callable
        ``split(batch)`` gives ``(model input, raw labels or None)``.
    run : callable
        ``run(model input, index)`` runs the model on batch ``index`` (counted from 1) and returns its
        :class:`BatchRows`, or None for a batch without samples (skipped).
    stats : DLRStats or None
        Fed ``(features, outputs, labels)`` of every batch; None when only ``layer_stats`` are measured.
    layer_stats : mapping of str to DLRStats, optional
        Fed ``(layers[name], outputs, labels)`` of every batch.
    decision : LabelDecision, optional
        Whether labels are used (default: a new one, decided by the first batch).
    max_batches : int, optional
        Stop after this many batches.
    progress, title, delay
        The progress display on stderr: shown when ``progress``, after ``delay`` seconds, headed ``title``.
    dump : str or path, optional
        Folder receiving ``features.npy``, ``outputs.npy`` and ``labels.npy`` (the rows fed to ``stats``; see
        :class:`~dlrcore.npy_writer.ArrayDump`).
    host : callable
        Turns rows into host NumPy arrays for ``dump`` (default :func:`host_rows`).
    """
    if max_batches is not None:
        batches = itertools.islice(batches, int(max_batches))
        total = int(max_batches) if total is None else min(total, int(max_batches))
    decision = LabelDecision() if decision is None else decision
    layer_stats = {} if layer_stats is None else layer_stats
    dumped = ArrayDump(dump) if dump is not None else None
    display = Progress(total, title, enabled=progress, delay=delay, unit="batches")
    nb = rows = 0
    try:
        for nb, batch in enumerate(batches, start=1):
            inputs, lab = split(batch)
            got = run(inputs, nb)
            if got is None:
                continue
            lab_rows = got.labels(lab, decision, nb)
            if stats is not None:
                stats.update(got.features, got.outputs, labels=lab_rows)
                if dumped is not None:
                    f, o, lr = (None if t is None else host(t) for t in (got.features, got.outputs, lab_rows))
                    if f is None:
                        raise ValueError("dump writes feature rows, and this pass has none")
                    dumped.append(f, o, lr)
            for name, feats in got.layers.items():
                layer_stats[name].update(feats, got.outputs, labels=lab_rows)
            rows += got.rows
            display.advance(nb - display.done, f"{rows} samples")
        display.advance(nb - display.done, f"{rows} samples", final=True)
    finally:
        display.close()
        if dumped is not None:
            dumped.close()
    return nb, rows
