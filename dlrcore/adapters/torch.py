"""PyTorch adapter: D_LR of a ``torch.nn.Module`` over a DataLoader, without writing hooks.

:func:`collect` runs the model over the data in eval mode under :func:`torch.no_grad`, captures the input
(features) and output of the network's last linear layer with forward hooks and feeds them, batch by batch, to
:class:`dlrcore.DLRStats`. :class:`Tracker` calls it every N steps of a hand-written training loop and keeps
records that :func:`dlrcore.plot.trajectory` draws. No mathematics lives here. Tensors on a GPU stay there when
CuPy is installed (they reach the core through DLPack and the statistics are accumulated on the device, see
:meth:`dlrcore.DLRStats.update`); otherwise they are copied to the host batch by batch.

This module imports torch; ``import dlrcore`` does not import this module.

Also here: :func:`all_reduce` merges per-rank statistics under ``torch.distributed``. For convenience this module
also offers ``DLRCallback`` (the PyTorch Lightning callback of :mod:`dlrcore.adapters.lightning`, imported on first
access so that importing this module does not import Lightning) and :func:`collect_hf` (from
:mod:`dlrcore.adapters.hf`, for Hugging Face ``transformers`` models). Model plumbing shared by the three lives in
:mod:`dlrcore.adapters.torch_model`.

How batches are read
--------------------
``data`` is a ``torch.utils.data.DataLoader`` or any iterable of batches. Each batch is one of

* a tensor: the model input, no labels;
* a tuple or list ``(inputs, labels, ...)``: ``model(inputs)``, labels from the second element when there is one;
* a dict: the input is the value of the first key present among :data:`INPUT_KEYS`
  (``"input"``, ``"inputs"``, ``"x"``, ``"pixel_values"``, ``"input_ids"``) and is passed as ``model(value)``;
  labels are the value of the first key present among :data:`LABEL_KEYS`
  (``"label"``, ``"labels"``, ``"y"``, ``"target"``, ``"targets"``).

``batch_to_input=fn`` overrides how the model is called: ``fn(batch)`` returns a dict (``model(**d)``, e.g. a
Hugging Face batch without its labels), a tuple (``model(*t)``) or anything else (``model(x)``). ``labels=fn``
overrides where the labels come from, ``labels=False`` ignores them. Tensors in the model input are moved to the
device of the model's first parameter. Labels are integer class ids (one-hot encoded by the core) or target
tensors; they are optional.

Samples
-------
Features and outputs of any shape are flattened per sample (a batch of images at a convolution gives one row per
image). At a layer applied token-wise (input ``(batch, seq, hidden)`` and output ``(batch, seq, C)``, e.g. the
head of a sequence model), ``sequence="tokens"`` (default) makes every token a sample; ``"mean"`` averages over
the sequence and ``"last"`` keeps the last position, one sample per sequence. Padding positions are included as
they are; pool yourself (``batch_to_input`` plus a ``layer`` of your own) when that matters.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backend import is_device_input
from ..checks import check_choice, check_int
from ..extras import require
from ..output_kernels import CENTER_LOGITS, kernel_options
from ..stats import DLRStats
from .batches import LABEL_KEYS, first_and_total, result_record
from .hf import HF_LABEL_KEYS, HF_POOLING, collect_hf
from .loop import BatchRows, feed_batches
from .tensorboard import SummaryLog
from .torch_model import (
    INPUT_KEYS,
    PROGRESS_DELAY,
    SEQUENCE_MODES,
    LayerSpec,
    _check_model,
    _detect_last_linear,
    _eval_pass,
    _first_tensor,
    _forward,
    _label_rows,
    _model_device,
    _resolve,
    _rows,
    _split_batch,
    last_linear,
)

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = require("torch", "torch", "dlrcore.adapters")
    nn = torch.nn

__all__ = [
    "HF_LABEL_KEYS",
    "HF_POOLING",
    "INPUT_KEYS",
    "LABEL_KEYS",
    "SEQUENCE_MODES",
    "Tracker",
    "all_reduce",
    "collect",
    "collect_hf",
    "last_linear",
    "lightning_callback_class",
]

# ---------------------------------------------------------------------------------------------- collect
def _to_core(t: torch.Tensor) -> torch.Tensor:
    """A tensor for :meth:`dlrcore.DLRStats.update`: CUDA tensors stay on the GPU when CuPy can take them through
    DLPack (the statistics are then accumulated on the device), everything else goes to the host."""
    if t.is_cuda and is_device_input(t):
        return t.detach()
    return t.cpu()


def _host_rows(t: Any) -> np.ndarray:
    """Rows as a host NumPy array (bfloat16 widened to float32, which NumPy can hold)."""
    if isinstance(t, torch.Tensor):
        t = t.detach()
        return (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy()
    return np.asarray(t)


def collect(
    model: nn.Module,
    data: Iterable[Any],
    layer: LayerSpec | None = None,
    *,
    layers: Sequence[LayerSpec] | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    labels: bool | Callable[[Any], Any] = True,
    num_classes: int | None = None,
    sequence: str = "tokens",
    precision: str = "auto",
    blocks: int | None = None,
    batch_to_input: Callable[[Any], Any] | None = None,
    dump: str | os.PathLike[str] | None = None,
) -> DLRStats | dict[str, DLRStats]:
    """Run ``model`` over ``data`` and accumulate the D_LR statistics of its last linear layer.

    The model runs in eval mode under :func:`torch.no_grad`; every submodule's training mode is restored
    afterwards and the forward hooks are removed, also when the forward pass raises.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    data : DataLoader or iterable of batches
        Tensors, tuples ``(inputs, labels, ...)`` or dicts, see the module docstring. A one-shot iterator is
        consumed once.
    layer : nn.Module or str, optional
        The layer whose input are the features and whose output are the outputs (a submodule or its dotted name).
        Default: the last ``nn.Linear`` the forward pass calls, found by a forward pass on the first batch; an
        error when none is called or when that module is called several times in one forward pass.
    layers : sequence of nn.Module or str, optional
        Layer-wise D_LR: the (flattened) input of each of these layers against the network's outputs (the output
        of ``layer``, or of the last ``nn.Linear``), all in one pass. Each must be called once per forward pass.
    max_batches : int, optional
        Stop after this many batches.
    progress : bool
        Show batches and samples done on stderr once a pass has lasted a couple of seconds.
    labels : bool or callable
        True: pick labels up from the batches when present (the second element of a tuple, a label key of a dict);
        False: ignore them; a callable: ``labels(batch)`` gives them. Labels that do not fit the samples (e.g.
        per-sequence labels with ``sequence="tokens"``) are dropped with a warning.
    num_classes : int, optional
        Number of classes for integer labels (default: the output width C).
    sequence : {"tokens", "mean", "last"}
        At a layer applied token-wise (features ``(batch, seq, hidden)``): every token a sample, or one sample per
        sequence from the mean or the last position.
    precision : {"auto", "float32", "float64"}
        Precision of the products, see :class:`dlrcore.DLRStats`.
    blocks : int, optional
        Keep the statistics in this many row blocks for jackknife error bars (``result().stderr``), see
        :class:`dlrcore.DLRStats` and docs/uncertainty.md.
    batch_to_input : callable, optional
        ``batch_to_input(batch)`` gives the model input: a dict is passed as keyword arguments, a tuple as
        positional arguments, anything else as the single argument.
    dump : path, optional
        A folder to also write the rows seen to, as ``features.npy``, ``outputs.npy`` and ``labels.npy`` (when
        there are labels), appended batch by batch (memory stays at one batch), for the command line later:
        ``dlr compute DIR/features.npy DIR/outputs.npy --labels DIR/labels.npy``. Not with ``layers``.

    Returns
    -------
    DLRStats or dict of str to DLRStats
        The statistics (``.result()`` is D_LR, ``.spectrum()``, ``.nc1()`` with class labels); with ``layers``, a
        dict from each layer's name to its statistics.

    Raises
    ------
    ValueError
        Empty data, a layer that is not found, not called, or called several times per forward pass.
    DLRInputError
        Data the core rejects (NaN, shapes that change between batches, labels in some batches only, ...).

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> data = [(torch.randn(32, 4), torch.randint(0, 3, (32,))) for _ in range(4)]
    >>> stats = collect(net, data, progress=False)
    >>> stats.n, stats.p, stats.C, stats.label_kind
    (128, 8, 3, 'classes')
    >>> 0.0 <= stats.result().value <= 1.0
    True
    >>> sorted(collect(net, data, layers=["0", "2"], progress=False))
    ['0', '2']
    """
    check_choice(sequence, "sequence", SEQUENCE_MODES)
    names = _check_model(model, max_batches)
    ref = None if layer is None else _resolve(model, layer, names)
    extra: list[tuple[str, nn.Module]] = []
    if layers is not None:
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        extra = [_resolve(model, spec, names) for spec in layers]
        if not extra:
            raise ValueError("layers is empty: name at least one layer")
        dup = sorted({n for n, _ in extra if sum(n == m for m, _ in extra) > 1})
        if dup:
            raise ValueError(f"layers names {dup} more than once")

    custom = batch_to_input is not None
    device = _model_device(model)
    first, it, total = first_and_total(data, max_batches)
    if dump is not None and extra:
        raise ValueError("dump writes the rows of one layer: pass it without layers=")

    calls: dict[str, list[tuple[torch.Tensor | None, Any]]] = {}
    with _eval_pass(model) as handles:
        if ref is None:
            inputs0, _ = _split_batch(first, batch_to_input, False)
            ref = _detect_last_linear(model, lambda: _forward(model, inputs0, custom, device), names)
        ref_name, ref_mod = ref
        hooked = [(ref_name, ref_mod, True)] + [(n, m, False) for n, m in extra if m is not ref_mod]
        for name, mod, keep_out in hooked:
            calls[name] = []

            def hook(m: nn.Module, args: Any, kwargs: Any, out: Any, _n: str = name, _k: bool = keep_out) -> None:
                x = _first_tensor(args)
                if x is None:
                    x = _first_tensor(kwargs.values())
                y = None
                if _k:
                    y = out if isinstance(out, torch.Tensor) else None
                    if y is None and isinstance(out, (tuple, list)) and out:
                        y = out[0] if isinstance(out[0], torch.Tensor) else None
                calls[_n].append((None if x is None else x.detach(), None if y is None else y.detach()))

            handles.append(mod.register_forward_hook(hook, with_kwargs=True))

        def run(inputs: Any, nb: int) -> BatchRows | None:
            """Forward pass of batch ``nb``; the rows of the hooked layers."""
            for lst in calls.values():
                lst.clear()
            _forward(model, inputs, custom, device)
            for name, _, _ in hooked:
                got = len(calls[name])
                if got != 1:
                    what = "was not called" if got == 0 else f"was called {got} times"
                    raise ValueError(
                        f"layer {name!r} {what} in the forward pass of batch {nb}; a measured layer must be "
                        "called exactly once per forward pass"
                    )
            x_ref, y_ref = calls[ref_name][0]
            if x_ref is None or y_ref is None:
                raise ValueError(
                    f"layer {ref_name!r} must take a tensor input and return a tensor (or a tuple starting "
                    "with one); pass layer= naming a module that does"
                )
            if x_ref.ndim == 0 or x_ref.shape[0] == 0:
                return None
            b = x_ref.shape[0]
            tokenwise = x_ref.ndim >= 3 and y_ref.ndim == x_ref.ndim and x_ref.shape[:-1] == y_ref.shape[:-1]
            lead = tuple(y_ref.shape[:-1]) if tokenwise else (b,)
            outs = _to_core(_rows(y_ref, lead, sequence, f"outputs of {ref_name!r}"))
            feats = None if extra else _to_core(_rows(x_ref, lead, sequence, f"input of {ref_name!r}"))
            per_layer = {}
            for name, mod in extra:
                x = x_ref if mod is ref_mod else calls[name][0][0]
                if x is None:
                    raise ValueError(f"layer {name!r} was called without a tensor input")
                per_layer[name] = _to_core(_rows(x, lead, sequence, f"input of {name!r}"))
            for lst in calls.values():
                lst.clear()
            return BatchRows(feats, outs, layers=per_layer, label_rows=lambda lab: _label_rows(lab, lead, sequence))

        ref_stats = None if extra else DLRStats(num_classes=num_classes, precision=precision, blocks=blocks)
        layer_stats = {n: DLRStats(num_classes=num_classes, precision=precision, blocks=blocks) for n, _ in extra}
        try:
            feed_batches(
                itertools.chain([first], it), total, split=lambda batch: _split_batch(batch, batch_to_input, labels),
                run=run, stats=ref_stats, layer_stats=layer_stats, max_batches=max_batches, progress=progress,
                delay=PROGRESS_DELAY, dump=dump, host=_host_rows,
            )
        finally:
            calls.clear()
    if ref_stats is not None:
        if ref_stats.n == 0:
            raise ValueError("no samples were collected: every batch was empty")
        return ref_stats
    return layer_stats


# ---------------------------------------------------------------------------------------------- tracking
class Tracker:
    """Measure D_LR every ``every`` steps of a hand-written training loop on a held-out loader.

    Parameters
    ----------
    model : torch.nn.Module
        The network being trained (measured in eval mode; its training modes are restored after each measure).
    data : DataLoader or re-iterable of batches
        Held-out batches, iterated in full at every measurement (use ``max_batches`` to cap it).
    every : int
        Measure when ``step % every == 0``.
    layer : nn.Module or str, optional
        As in :func:`collect` (default: the last ``nn.Linear`` called).
    spectrum : bool
        Also store the eigen-spectrum (:meth:`dlrcore.Spectrum.to_dict`) in each record under ``"spectrum"``.
    rtol, output_kernel, center_logits
        Passed to :meth:`dlrcore.DLRStats.result`: ``output_kernel="sqrt"`` makes ``dlr`` D_half (for
        cross-entropy logits); both measures are recorded either way.
    tensorboard : str, path or SummaryWriter, optional
        Also write every measurement to TensorBoard: a log folder (a ``torch.utils.tensorboard.SummaryWriter``
        is made for it; needs ``pip install tensorboard``) or a writer of yours (``SummaryWriter``,
        ``tensorboardX``, a ``tf.summary`` writer). Scalars ``dlr/value``, ``dlr/span`` (literal D_LR),
        ``dlr/sqrt`` (D_half), ``dlr/output_rank``, ``dlr/output_effective_rank``, ``dlr/constant_share`` at the
        record's step and, with ``spectrum=True`` and matplotlib installed, the three-panel spectrum figure as
        the image ``dlr/spectrum`` (see :class:`dlrcore.adapters.tensorboard.SummaryLog`).
    **collect_kwargs
        Further keyword arguments of :func:`collect` (``max_batches``, ``labels``, ``sequence``, ...);
        ``progress`` defaults to False.

    Attributes
    ----------
    records : list of dict
        One dict per measurement: ``step``, ``dlr`` (the measure chosen by ``output_kernel``), ``dlr_span``
        (literal D_LR), ``dlr_sqrt`` (D_half), ``output_kernel``, ``output_rank``, ``output_effective_rank``,
        ``constant_share``, ``n``, ``p``, ``C``, any metrics passed to :meth:`step`, and ``spectrum`` when asked
        for. They feed :func:`dlrcore.plot.trajectory`.
    stats : DLRStats or None
        The statistics of the last measurement.
    board : SummaryLog or None
        The TensorBoard output, when ``tensorboard`` is given.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> held_out = [torch.randn(64, 4)]
    >>> tracker = Tracker(net, held_out, every=10)   # tensorboard="runs/dlr" would also write TensorBoard
    >>> for step in range(25):
    ...     rec = tracker.step(step, test_acc=0.5)   # after the optimizer step
    >>> [r["step"] for r in tracker.records]
    [0, 10, 20]
    >>> sorted(tracker.records[0])[:5]
    ['C', 'constant_share', 'dlr', 'dlr_span', 'dlr_sqrt']
    """

    def __init__(
        self,
        model: nn.Module,
        data: Iterable[Any],
        every: int = 100,
        *,
        layer: LayerSpec | None = None,
        spectrum: bool = False,
        rtol: float | None = None,
        output_kernel: str = "span",
        center_logits: bool = CENTER_LOGITS,
        tensorboard: Any = None,
        **collect_kwargs: Any,
    ) -> None:
        check_int(every, "every")
        if "layers" in collect_kwargs:
            raise TypeError("Tracker measures one layer; call collect(..., layers=[...]) for layer-wise D_LR")
        self.model = model
        self.data = data
        self.every = int(every)
        self.layer = layer
        self.spectrum = bool(spectrum)
        self.kernel: dict[str, Any] = kernel_options(rtol, output_kernel, center_logits)
        self.collect_kwargs = {"progress": False, **collect_kwargs}
        self.records: list[dict[str, Any]] = []
        self.stats: DLRStats | None = None
        self.board = None if tensorboard is None else SummaryLog(tensorboard, flavour="torch")

    def due(self, step: int) -> bool:
        """Whether :meth:`step` measures at ``step``."""
        return step % self.every == 0

    def step(self, step: int, **metrics: Any) -> dict[str, Any] | None:
        """Measure when ``step`` is a multiple of ``every``; return the new record, or None.

        Parameters
        ----------
        step : int
            The training step (or epoch) just completed.
        **metrics
            Extra values stored in the record when a measurement is made (e.g. ``test_acc=0.93``;
            :func:`dlrcore.plot.trajectory` draws keys containing "acc" on its twin axis).
        """
        if not self.due(step):
            return None
        return self.measure(step, **metrics)

    def measure(self, step: int, **metrics: Any) -> dict[str, Any]:
        """Measure now, whatever the step, append the record to :attr:`records` and return it."""
        stats = collect(self.model, self.data, self.layer, **self.collect_kwargs)
        assert isinstance(stats, DLRStats)
        res = stats.result(**self.kernel)
        record = result_record(res, step=step)
        record.update(metrics)
        if self.spectrum:
            record["spectrum"] = stats.spectrum(name=f"step {step}", **self.kernel).to_dict()
        self.stats = stats
        self.records.append(record)
        if self.board is not None:
            self.board.write(record, step)
        return record

    def close(self) -> None:
        """Flush the TensorBoard output, and close its writer when the tracker made it from a log folder."""
        if self.board is not None:
            self.board.close()


# ---------------------------------------------------------------------------------------------- distributed
def all_reduce(stats: DLRStats, group: Any = None) -> DLRStats:
    """Merge the statistics of every ``torch.distributed`` rank so that every rank gets the global ones.

    Each rank's :class:`dlrcore.DLRStats` (its n, means and float64 co-moments) is gathered with
    :func:`torch.distributed.all_gather_object` and merged with :meth:`dlrcore.DLRStats.merge` in rank order, on
    every rank. The merge is exact, so the result equals accumulating all ranks' samples in one process (to
    floating-point rounding of the pairwise merge). Ranks that saw no samples contribute nothing. Every rank of
    ``group`` must call this function (it is a collective). The gathered objects travel through the process
    group's backend (gloo: on the host; nccl: ``torch.cuda.current_device()`` must be set for each rank).

    Parameters
    ----------
    stats : DLRStats
        This rank's statistics (left unchanged).
    group : ProcessGroup, optional
        The process group (default: the world).

    Returns
    -------
    DLRStats
        A new object holding the statistics of every rank in ``group``; without an initialised process group
        (a single process), a copy of ``stats``.

    Raises
    ------
    DLRInputError
        When the ranks' statistics cannot be merged (different widths, label kinds or head weights).

    Examples
    --------
    >>> import numpy as np
    >>> st = DLRStats().update(np.random.default_rng(0).normal(size=(20, 3)), np.ones((20, 2)))
    >>> all_reduce(st).n   # not distributed: a copy
    20
    """
    if not isinstance(stats, DLRStats):
        raise TypeError(f"stats must be a DLRStats, got {type(stats).__name__}")
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return stats.copy()
    world = dist.get_world_size(group)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, stats.copy(), group=group)
    out = gathered[0]
    if not isinstance(out, DLRStats):
        raise TypeError(f"rank 0 sent a {type(out).__name__}, not a DLRStats")
    out = out.copy()
    for other in gathered[1:]:
        out.merge(other)
    return out


# ---------------------------------------------------------------------------------------------- Lightning
def lightning_callback_class() -> type:
    """The :class:`~dlrcore.adapters.lightning.DLRCallback` class (imports Lightning on first use).

    ``import dlrcore.adapters.torch`` does not import Lightning; ``dlrcore.adapters.torch.DLRCallback`` (module
    ``__getattr__``) and this function import :mod:`dlrcore.adapters.lightning` when first asked.
    """
    from .lightning import DLRCallback

    return DLRCallback


def __getattr__(name: str) -> Any:
    if name == "DLRCallback":
        return lightning_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
