"""Keras 3 adapter: D_LR of a Keras model over a ``tf.data.Dataset``, NumPy arrays or a generator, and a callback.

:func:`collect` builds, once, a sub-model ``keras.Model(model.inputs, [layer.input, layer.output])`` of the chosen
layer (default: the model's last ``keras.layers.Dense``), runs it over the data and feeds the (features, outputs)
batches to :class:`dlrcore.DLRStats`. :class:`DLRKerasCallback` measures during ``model.fit`` every N epochs or
steps, writes D_LR into the ``logs`` dict (so it lands in the ``History``) and keeps records that
:func:`dlrcore.plot.trajectory` draws. No mathematics lives here.

This module imports keras (Keras 3; tested with the TensorFlow backend); ``import dlrcore`` does not import it.
The model must be a functional or ``Sequential`` model with known inputs (subclassed models have no symbolic
``layer.input``; compute their (features, outputs) batches yourself and feed :meth:`dlrcore.DLRStats.update`).

Usage (not a doctest)::

    from dlrcore.adapters.keras import collect, DLRKerasCallback
    stats = collect(model, test_ds)                         # tf.data.Dataset of (x, y)
    stats = collect(model, (x_test, y_test), batch_size=256)
    cb = DLRKerasCallback((x_val, y_val), every_n_epochs=1, tensorboard="logs/dlr")   # TensorBoard optional
    history = model.fit(x, y, epochs=10, callbacks=[cb])
    history.history["dlr"]; dlrcore.plot.trajectory(cb.records, x="epoch")

How data is read
----------------
* a NumPy array (or backend tensor) ``x``, a tuple ``(x, y)`` / ``(x, y, sample_weight)`` of them, or a dict of
  them: whole arrays, cut into batches of ``batch_size`` rows;
* a ``tf.data.Dataset``, a ``keras.utils.PyDataset``, a generator or any iterable of batches, each batch a tensor
  (the input), a tuple ``(x, y, ...)`` or a dict (input under the first key of :data:`INPUT_KEYS`, labels under
  the first key of :data:`LABEL_KEYS`; a dict with no input key is passed whole, as for multi-input models).

Features and outputs are flattened per sample; at a layer applied token-wise (``(batch, seq, hidden)`` in,
``(batch, seq, C)`` out) every token is a sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..checks import check_int, check_optional_int
from ..extras import require
from ..output_kernels import CENTER_LOGITS, kernel_options
from ..stats import DLRStats
from .batches import LABEL_KEYS, check_max_batches, result_record, split_batch
from .loop import BatchRows, feed_batches
from .tensorboard import SummaryLog

if TYPE_CHECKING:
    import keras
else:
    keras = require("keras", "keras", "dlrcore.adapters.keras")

__all__ = ["INPUT_KEYS", "LABEL_KEYS", "DLRKerasCallback", "collect", "feature_model"]

#: Dict keys searched, in this order, for the model input of a dict batch.
INPUT_KEYS: tuple[str, ...] = ("x", "image", "images", "inputs", "input", "pixel_values", "input_ids")

LayerSpec = Union[str, "keras.layers.Layer"]


# ---------------------------------------------------------------------------------------------- sub-model
def _resolve_layer(model: Any, layer: LayerSpec | None) -> Any:
    if layer is None:
        dense = [lay for lay in model.layers if isinstance(lay, keras.layers.Dense)]
        if not dense:
            raise ValueError(
                f"model {model.name!r} has no keras.layers.Dense layer, so there is no last linear layer to measure; "
                f"pass layer= (a layer or its name) whose input are the features and whose output are the outputs; "
                f"its layers are {[lay.name for lay in model.layers]}"
            )
        return dense[-1]
    if isinstance(layer, str):
        try:
            return model.get_layer(layer)
        except ValueError:
            raise ValueError(
                f"model {model.name!r} has no layer named {layer!r}; "
                f"its layers are {[lay.name for lay in model.layers]}"
            ) from None
    if isinstance(layer, keras.layers.Layer):
        if not any(lay is layer for lay in model.layers):
            raise ValueError(f"layer {layer.name!r} is not a layer of model {model.name!r}")
        return layer
    raise TypeError(f"layer must be a keras layer or a layer name, got {type(layer).__name__}")


def feature_model(model: Any, layer: LayerSpec | None = None) -> tuple[str, Any]:
    """The layer's name and the sub-model ``keras.Model(model.inputs, [layer.input, layer.output])``.

    Parameters
    ----------
    model : keras.Model
        A functional or ``Sequential`` model with known inputs.
    layer : keras layer or str, optional
        Default: the last ``keras.layers.Dense`` of ``model.layers``.

    Returns
    -------
    (str, keras.Model)

    Raises
    ------
    ValueError
        No Dense layer, an unknown layer name, a model without symbolic inputs, or a layer used several times.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    lay = _resolve_layer(model, layer)
    try:
        inputs = model.inputs
        if not inputs:
            raise AttributeError("no inputs")
        sub = keras.Model(inputs, [lay.input, lay.output], name=f"dlr_{lay.name}")
    except (AttributeError, ValueError, TypeError) as exc:
        raise ValueError(
            f"cannot build the feature/output sub-model of layer {lay.name!r}: the model must be functional or a "
            "Sequential built with keras.Input, and the layer must be called once "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return lay.name, sub


# ---------------------------------------------------------------------------------------------- batches
def _is_array(x: Any) -> bool:
    """A whole array: NumPy or a tensor of the Keras backend (e.g. a ``tf.Tensor``)."""
    return isinstance(x, np.ndarray) or bool(keras.ops.is_tensor(x))


def _batches(data: Any, batch_size: int) -> tuple[Iterable[Any], int | None]:
    """An iterable of batches and its length when known."""
    whole = _is_array(data) or (
        isinstance(data, tuple) and 1 <= len(data) <= 3 and all(_is_array(a) for a in data)
    ) or (isinstance(data, Mapping) and data and all(_is_array(a) for a in data.values()))
    if whole:
        first = data if _is_array(data) else (data[0] if isinstance(data, tuple) else next(iter(data.values())))
        n = len(first)

        def cut(i: int) -> Any:
            s = slice(i, i + batch_size)
            if _is_array(data):
                return data[s]
            if isinstance(data, tuple):
                return tuple(a[s] for a in data)
            return {k: a[s] for k, a in data.items()}

        return (cut(i) for i in range(0, n, batch_size)), math.ceil(n / batch_size)
    if isinstance(data, keras.utils.PyDataset):
        return (data[i] for i in range(len(data))), len(data)
    try:
        total: int | None = len(data)
    except TypeError:
        total = None
    if total is not None and total < 0:  # tf.data cardinality unknown
        total = None
    return data, total


def _split_batch(batch: Any, labels: bool | Callable[[Any], Any]) -> tuple[Any, Any]:
    inputs, lab, _ = split_batch(batch, INPUT_KEYS, labels, label_keys=LABEL_KEYS, rest_of_dict=True)
    return inputs, lab


def _rows(feats: np.ndarray, outs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if feats.ndim >= 3 and outs.ndim == feats.ndim and feats.shape[:-1] == outs.shape[:-1]:
        return feats.reshape(-1, feats.shape[-1]), outs.reshape(-1, outs.shape[-1])
    b = feats.shape[0]
    return feats.reshape(b, -1), outs.reshape(b, -1)


def _collect_sub(
    sub: Any,
    name: str,
    data: Any,
    *,
    batch_size: int,
    max_batches: int | None,
    labels: bool | Callable[[Any], Any],
    num_classes: int | None,
    progress: bool,
    precision: str,
    blocks: int | None,
    dump: str | os.PathLike[str] | None = None,
) -> DLRStats:
    batches, total = _batches(data, batch_size)

    def run(x: Any, nb: int) -> BatchRows | None:
        got = sub.predict_on_batch(x)
        feats, outs = np.asarray(got[0]), np.asarray(got[1])
        if feats.ndim == 0 or feats.shape[0] == 0:
            return None
        n_batch = feats.shape[0]
        feats, outs = _rows(feats, outs)
        return BatchRows(feats, outs, n_batch=n_batch)

    stats = DLRStats(num_classes=num_classes, precision=precision, blocks=blocks)
    nb, _ = feed_batches(
        batches, total, split=lambda batch: _split_batch(batch, labels), run=run, stats=stats,
        max_batches=max_batches, progress=progress, dump=dump,
    )
    if nb == 0:
        raise ValueError("data is empty (a one-shot generator already consumed?); pass arrays, a Dataset or a list")
    if stats.n == 0:
        raise ValueError(f"no samples were collected at layer {name!r}: every batch was empty")
    return stats


def _check(max_batches: int | None, batch_size: int) -> None:
    check_max_batches(max_batches)
    check_int(batch_size, "batch_size")


def collect(
    model: Any,
    data: Any,
    layer: LayerSpec | None = None,
    *,
    max_batches: int | None = None,
    labels: bool | Callable[[Any], Any] = True,
    num_classes: int | None = None,
    progress: bool = True,
    batch_size: int = 256,
    precision: str = "auto",
    blocks: int | None = None,
    dump: str | os.PathLike[str] | None = None,
) -> DLRStats:
    """Run a Keras model over ``data`` and accumulate the D_LR statistics of its last Dense layer.

    Parameters
    ----------
    model : keras.Model
        A functional or ``Sequential`` model with known inputs.
    data : array, tuple of arrays, dict of arrays, tf.data.Dataset, PyDataset, generator or iterable of batches
        See the module docstring. A generator is consumed once.
    layer : keras layer or str, optional
        The layer whose input are the features and whose output are the outputs. Default: the last
        ``keras.layers.Dense`` of ``model.layers``.
    max_batches : int, optional
        Stop after this many batches.
    labels : bool or callable
        True: labels from the batches when present; False: none; a callable: ``labels(batch)``.
    num_classes : int, optional
        Number of classes for integer labels (default: the output width C).
    progress : bool
        Show a progress display on stderr for passes lasting more than two seconds.
    batch_size : int
        Rows per batch when ``data`` is whole NumPy arrays.
    precision : {"auto", "float32", "float64"}
        Precision of the products, see :class:`dlrcore.DLRStats`.
    blocks : int, optional
        Keep the statistics in this many row blocks for jackknife error bars (``result().stderr``), see
        :class:`dlrcore.DLRStats` and docs/uncertainty.md.
    dump : path, optional
        A folder to also write the rows measured to, appended batch by batch: ``features.npy``,
        ``outputs.npy`` and ``labels.npy`` (when labels are used), for ``dlr compute DIR/features.npy
        DIR/outputs.npy --labels DIR/labels.npy`` later (the same statistics).

    Returns
    -------
    DLRStats
        The statistics (``.result()`` is D_LR).

    Raises
    ------
    ValueError
        Empty data, no Dense layer, an unknown layer name, a model whose sub-model cannot be built.
    DLRInputError
        Data the core rejects.
    """
    _check(max_batches, batch_size)
    name, sub = feature_model(model, layer)
    return _collect_sub(
        sub,
        name,
        data,
        batch_size=int(batch_size),
        max_batches=max_batches,
        labels=labels,
        num_classes=num_classes,
        progress=progress,
        precision=precision,
        blocks=blocks,
        dump=dump,
    )


# ---------------------------------------------------------------------------------------------- callback
class DLRKerasCallback(keras.callbacks.Callback):
    """Measure D_LR during ``model.fit`` every N epochs (or steps) on held-out data.

    Parameters
    ----------
    data : arrays, tuple of arrays, tf.data.Dataset, PyDataset or list of batches
        Held-out data, iterated in full at each measurement; it must be re-iterable (not a generator).
    every_n_epochs : int
        Measure at the end of every N-th epoch (ignored when ``every_n_steps`` is given).
    every_n_steps : int, optional
        Measure after every N-th training batch (counted over the whole ``fit``) instead.
    layer : keras layer or str, optional
        As in :func:`collect`.
    key : str
        Key of the measure in the ``logs`` dict and in the records (default ``"dlr"``); ``<key>_span`` (the
        literal D_LR) and ``<key>_sqrt`` (D_half) are logged and recorded beside it.
    rtol, output_kernel, center_logits
        Passed to :meth:`dlrcore.DLRStats.result` (``output_kernel="sqrt"`` makes ``<key>`` D_half).
    spectrum : bool
        Also store the eigen-spectrum (:meth:`dlrcore.Spectrum.to_dict`) in each record under ``"spectrum"``.
    tensorboard : str, path or writer, optional
        Also write every measurement to TensorBoard: a log folder (a ``tf.summary.create_file_writer`` writer
        is made for it; ``tf.summary`` needs the ``tensorboard`` package) or a writer of yours (a ``tf.summary``
        writer, or a ``SummaryWriter`` of torch or tensorboardX). Scalars ``<key>/value``, ``<key>/span``,
        ``<key>/sqrt``, ``<key>/output_rank``, ``<key>/output_effective_rank``, ``<key>/constant_share`` at the
        record's ``step`` (training batches seen) and, with ``spectrum=True`` and matplotlib installed, the
        spectrum figure as the image ``<key>/spectrum`` (see :class:`dlrcore.adapters.tensorboard.SummaryLog`).
    **collect_kwargs
        Further keyword arguments of :func:`collect` (``max_batches``, ``labels``, ``batch_size``, ...);
        ``progress`` defaults to False.

    Attributes
    ----------
    records : list of dict
        One dict per measurement: ``step`` (training batches seen), ``epoch`` (epochs completed), ``dlr``,
        ``dlr_span``, ``dlr_sqrt``, ``output_kernel``, ``output_rank``, ``output_effective_rank``,
        ``constant_share``, ``n``, ``p``, ``C`` and, at epoch ends, the numeric entries of the epoch's ``logs``
        (``accuracy``, ``val_accuracy``...). They feed :func:`dlrcore.plot.trajectory` (``x="step"`` or
        ``x="epoch"``).
    stats : DLRStats or None
        The statistics of the last measurement.
    board : SummaryLog or None
        The TensorBoard output, when ``tensorboard`` is given (flushed at every measurement).

    Notes
    -----
    At every epoch end the latest D_LR measured is written into ``logs[key]``, so
    ``model.fit(...).history[key]`` holds it (with ``every_n_epochs > 1`` or in step mode, epochs without a new
    measurement repeat the previous value; epochs before the first measurement have no entry). The
    feature/output sub-model is built at the first measurement of each ``fit`` and shares the model's weights.
    """

    def __init__(
        self,
        data: Any,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        layer: LayerSpec | None = None,
        *,
        key: str = "dlr",
        rtol: float | None = None,
        output_kernel: str = "span",
        center_logits: bool = CENTER_LOGITS,
        spectrum: bool = False,
        tensorboard: Any = None,
        **collect_kwargs: Any,
    ) -> None:
        super().__init__()
        self.data = data
        self.every_n_epochs = check_int(every_n_epochs, "every_n_epochs")
        self.every_n_steps = check_optional_int(every_n_steps, "every_n_steps")
        self.layer = layer
        self.key = key
        self.kernel: dict[str, Any] = kernel_options(rtol, output_kernel, center_logits)
        self.collect_kwargs = {"progress": False, **collect_kwargs}
        _check(self.collect_kwargs.get("max_batches"), self.collect_kwargs.get("batch_size", 256))
        self.records: list[dict[str, Any]] = []
        self.stats: DLRStats | None = None
        self._sub: Any = None
        self._name = ""
        self._steps = 0
        self._epochs = 0
        self._last: dict[str, float] = {}
        self.spectrum = bool(spectrum)
        self.board = None if tensorboard is None else SummaryLog(tensorboard, flavour="tf", key=self.key)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._sub = None

    def measure(self, metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Measure now, append the record to :attr:`records` and return it."""
        if self._sub is None:
            self._name, self._sub = feature_model(self.model, self.layer)
        kw = dict(self.collect_kwargs)
        stats = _collect_sub(
            self._sub,
            self._name,
            self.data,
            batch_size=int(kw.pop("batch_size", 256)),
            max_batches=kw.pop("max_batches", None),
            labels=kw.pop("labels", True),
            num_classes=kw.pop("num_classes", None),
            progress=kw.pop("progress", False),
            precision=kw.pop("precision", "auto"),
            blocks=kw.pop("blocks", None),
        )
        if kw:
            raise TypeError(f"unexpected keyword arguments for collect: {sorted(kw)}")
        res = stats.result(**self.kernel)
        record = result_record(res, step=self._steps, epoch=self._epochs, dlr_key=self.key)
        for k, v in (metrics or {}).items():
            if k not in record and isinstance(v, (int, float, np.floating, np.integer)):
                record[k] = float(v)
        if self.spectrum:
            record["spectrum"] = stats.spectrum(name=f"step {self._steps}", **self.kernel).to_dict()
        self.stats = stats
        self._last = {k: float(record[k]) for k in (self.key, f"{self.key}_span", f"{self.key}_sqrt")}
        self.records.append(record)
        if self.board is not None:
            self.board.write(record, self._steps)
        return record

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._steps += 1
        if self.every_n_steps is not None and self._steps % self.every_n_steps == 0:
            self.measure()
            if logs is not None:
                logs.update(self._last)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epochs = epoch + 1
        if self.every_n_steps is None and self._epochs % self.every_n_epochs == 0:
            self.measure(logs)
        if logs is not None:
            logs.update(self._last)
