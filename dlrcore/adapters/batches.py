"""Framework-agnostic batch handling shared by the adapters: splitting a batch into model input and labels, and
turning labels into per-sample rows. NumPy only; no framework is imported here (the measuring loop that uses these
helpers is :mod:`dlrcore.adapters.loop`)."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..checks import check_optional_int
from ..inputs import DLRInputError

__all__ = [
    "LABEL_KEYS",
    "LabelDecision",
    "check_max_batches",
    "first_and_total",
    "label_rows",
    "model_input_and_labels",
    "result_record",
    "split_batch",
    "user_stacklevel",
]

#: Dict keys searched, in this order, for the labels of a dict batch.
LABEL_KEYS: tuple[str, ...] = ("label", "labels", "y", "target", "targets")


_END = object()


def check_max_batches(max_batches: int | None) -> None:
    """Refuse a ``max_batches`` that is not None or a positive integer.

    Examples
    --------
    >>> check_max_batches(None); check_max_batches(3)
    >>> check_max_batches(0)
    Traceback (most recent call last):
    ...
    ValueError: max_batches must be a positive integer or None, got 0
    """
    check_optional_int(max_batches, "max_batches")


def user_stacklevel() -> int:
    """The ``stacklevel`` of a :func:`warnings.warn` made by the caller of this function that points at the first
    frame outside :mod:`dlrcore` (the user's ``collect(...)`` call, however deep the adapter's own calls go)."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and str(frame.f_globals.get("__name__", "")).startswith("dlrcore."):
        level, frame = level + 1, frame.f_back
    return level


def first_and_total(data: Iterable[Any], max_batches: int | None) -> tuple[Any, Iterator[Any], int | None]:
    """The first batch, an iterator over the rest, and the number of batches to expect (None when unknown).

    Raises
    ------
    ValueError
        If ``data`` yields nothing (for example a generator that was already consumed).

    Examples
    --------
    >>> first, rest, total = first_and_total([1, 2, 3], max_batches=2)
    >>> first, list(rest), total
    (1, [2, 3], 2)
    """
    it = iter(data)
    first = next(it, _END)
    if first is _END:
        raise ValueError("data is empty (a one-shot iterator already consumed?); pass a list or a re-iterable loader")
    try:
        total: int | None = len(data)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    return first, it, total


def result_record(result: Any, **fields: Any) -> dict[str, Any]:
    """A trajectory record (for :func:`dlrcore.plot.trajectory`) from a :class:`~dlrcore.DLRResult`.

    ``fields`` (``step``, ``epoch``...) come first; ``dlr_key`` names the entry of ``result.value`` (default
    ``"dlr"``), and ``<dlr_key>_span`` and ``<dlr_key>_sqrt`` hold the literal D_LR and D_half beside it; with
    jackknife blocks, ``<key>_stderr`` holds each one's standard error (drawn as bands by
    :func:`dlrcore.plot.trajectory`).
    """
    key = fields.pop("dlr_key", "dlr")
    errors = {}
    if getattr(result, "blocks", None):  # jackknife standard errors (statistics built with blocks=)
        errors = {f"{key}_stderr": result.stderr, f"{key}_span_stderr": result.stderr_span,
                  f"{key}_sqrt_stderr": result.stderr_sqrt}
    return {
        **fields,
        key: result.value,
        f"{key}_span": result.value_span,
        f"{key}_sqrt": result.value_sqrt,
        **errors,
        "output_kernel": result.output_kernel,
        "output_rank": result.output_rank,
        "output_effective_rank": result.output_effective_rank,
        "constant_share": result.constant_share,
        "n": result.n,
        "p": result.p,
        "C": result.C,
    }


def split_batch(
    batch: Any,
    input_keys: Sequence[str],
    labels: bool | Callable[[Any], Any] = True,
    *,
    label_keys: Sequence[str] = LABEL_KEYS,
    rest_of_dict: bool = False,
) -> tuple[Any, Any, bool]:
    """Split one batch into ``(inputs, raw labels or None, found_input)``.

    A dict gives its input from the first of ``input_keys`` present (or, with ``rest_of_dict``, every entry but
    the labels) and its labels from the first of ``label_keys``; a tuple or list is ``(inputs, labels, ...)``;
    anything else is the input. ``labels=False`` drops the labels, a callable computes them from the batch.

    Examples
    --------
    >>> split_batch({"x": 1, "label": 2}, ("x",))
    (1, 2, True)
    >>> split_batch((1, 2, 3), ("x",), labels=False)
    (1, None, True)
    """
    lab: Any = None
    found = True
    if isinstance(batch, Mapping):
        key = next((k for k in input_keys if k in batch), None)
        lab_key = next((k for k in label_keys if k in batch), None)
        lab = batch[lab_key] if lab_key is not None else None
        if key is not None:
            inputs = batch[key]
        elif rest_of_dict:
            inputs = {k: v for k, v in batch.items() if k != lab_key}
        else:
            inputs, found = None, False
    elif isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError("empty tuple batch: expected (inputs, labels, ...)")
        inputs = batch[0]
        lab = batch[1] if len(batch) > 1 else None
    else:
        inputs = batch
    if labels is False:
        lab = None
    elif callable(labels):
        lab = labels(batch)
    return inputs, lab, found


def model_input_and_labels(
    batch: Any,
    input_keys: Sequence[str],
    batch_to_input: Callable[[Any], Any] | None,
    labels: bool | Callable[[Any], Any],
) -> tuple[Any, Any]:
    """``(model input, raw labels or None)`` of one batch; ``batch_to_input(batch)``, when given, is the input.

    Raises
    ------
    ValueError
        For a dict batch with none of ``input_keys`` and no ``batch_to_input``.

    Examples
    --------
    >>> model_input_and_labels({"x": 1, "y": 0}, ("x",), None, True)
    (1, 0)
    >>> model_input_and_labels({"ids": 1, "y": 0}, ("x",), lambda b: b["ids"], True)
    (1, 0)
    """
    inputs, lab, found = split_batch(batch, input_keys, labels)
    if not found and batch_to_input is None:
        raise ValueError(
            f"dict batch without an input key: its keys are {sorted(map(str, batch))}, expected one of "
            f"{list(input_keys)}; pass batch_to_input=lambda batch: ... to say what the model gets"
        )
    if batch_to_input is not None:
        inputs = batch_to_input(batch)
    return inputs, lab


def label_rows(lab: Any, n_rows: int, n_batch: int) -> tuple[np.ndarray | None, str]:
    """Labels as one row per sample, or ``(None, reason)`` when they cannot be used.

    ``n_rows`` is the number of feature rows of the batch, ``n_batch`` its batch size; they differ at token-wise
    layers, where per-token labels ``(batch, seq[, C])`` are flattened to one row per token.

    Examples
    --------
    >>> label_rows([0, 1, 1], 3, 3)[0].tolist()
    [0, 1, 1]
    >>> label_rows([[0, 1], [1, 1]], 4, 2)[0].tolist()
    [0, 1, 1, 1]
    >>> label_rows(["a", "b"], 2, 2)[0] is None
    True
    """
    try:
        arr = np.asarray(lab)
    except (TypeError, ValueError, RuntimeError):
        return None, f"labels of type {type(lab).__name__} are not numeric"
    if arr.ndim == 0 or arr.dtype.kind not in "biuf":
        return None, f"labels of shape {arr.shape} and dtype {arr.dtype} cannot be used"
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float64)
    if arr.shape[0] == n_rows and n_rows == n_batch:
        return arr, ""
    if n_rows != n_batch and arr.ndim >= 2 and math.prod(arr.shape[:2]) == n_rows:
        # per-token labels (batch, seq[, C]) at a token-wise layer
        return (arr.reshape(n_rows) if arr.ndim == 2 else arr.reshape(n_rows, -1)), ""
    return None, f"labels of shape {arr.shape} do not match {n_rows} samples"


class LabelDecision:
    """Use labels when the first batch has usable ones; from then on every batch must have them.

    ``use`` is None until the first batch decides; set it to False beforehand to ignore labels altogether.

    Examples
    --------
    >>> d = LabelDecision()
    >>> d.rows([0, 1], 2, 2, 0).tolist()
    [0, 1]
    >>> d.rows(None, 2, 2, 1)
    Traceback (most recent call last):
    ...
    dlrcore.inputs.DLRInputError: batch 1: earlier batches had labels, but the batch has no labels
    """

    def __init__(self) -> None:
        self.use: bool | None = None

    def rows(self, lab: Any, n_rows: int, n_batch: int, index: int) -> np.ndarray | None:
        """Label rows for batch ``index`` from :func:`label_rows` (None when labels are not used)."""
        out: np.ndarray | None = self.decide(lab, index, lambda v: label_rows(v, n_rows, n_batch))
        return out

    def decide(self, lab: Any, index: int, convert: Callable[[Any], tuple[Any, str]]) -> Any:
        """Label rows for batch ``index``: ``convert(lab)`` gives ``(rows, "")`` or ``(None, reason)``; None when
        labels are not used. Warns when the first batch's labels cannot be used and raises when a later batch lacks
        labels the first one had."""
        if self.use is None:
            rows, why = (None, "") if lab is None else convert(lab)
            if lab is not None and rows is None:
                warnings.warn(f"labels dropped: {why}", UserWarning, stacklevel=user_stacklevel())
            self.use = rows is not None
            return rows
        if not self.use:
            return None
        rows, why = (None, "the batch has no labels") if lab is None else convert(lab)
        if rows is None:
            raise DLRInputError(f"batch {index}: earlier batches had labels, but {why}")
        return rows
