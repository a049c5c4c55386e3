"""PyTorch adapter: D_LR of a ``torch.nn.Module`` over a DataLoader, without writing hooks.

:func:`collect` runs the model over the data in eval mode under :func:`torch.no_grad`, captures the input
(features) and output of the network's last linear layer with forward hooks and feeds them, batch by batch, to
:class:`dlrcore.DLRStats`. :class:`Tracker` calls it every N steps of a hand-written training loop and keeps
records that :func:`dlrcore.plot.trajectory` draws. No mathematics lives here. Tensors on a GPU stay there when
CuPy is installed (they reach the core through DLPack and the statistics are accumulated on the device, see
:meth:`dlrcore.DLRStats.update`); otherwise they are copied to the host batch by batch.

This module imports torch; ``import dlrcore`` does not import this module.

Also here: :func:`all_reduce` merges per-rank statistics under ``torch.distributed``; ``DLRCallback`` (a
PyTorch Lightning callback, built on first access so that importing this module does not import Lightning, see
:func:`lightning_callback_class`); :func:`collect_hf` for Hugging Face ``transformers`` models (final hidden
state against the LM head, through the head's weights, or against a classification head).

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
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

from ..backend import is_device_input
from ..exact import CENTER_LOGITS, check_center_logits, check_output_kernel
from ..inputs import DLRInputError
from ..progress import Progress
from ..stats import DLRStats
from .batches import LABEL_KEYS, first_and_total, model_input_and_labels, result_record

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

#: Dict keys searched, in this order, for the model input of a dict batch.
INPUT_KEYS: tuple[str, ...] = ("input", "inputs", "x", "pixel_values", "input_ids")
#: Accepted values of ``sequence``.
SEQUENCE_MODES: tuple[str, ...] = ("tokens", "mean", "last")

#: Seconds a pass must run before the progress display appears (short passes print nothing).
PROGRESS_DELAY = 2.0

LayerSpec = Union[str, nn.Module]  # noqa: UP007 - a runtime alias, needs Union on Python 3.10



# ---------------------------------------------------------------------------------------------- small helpers
def _module_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, mod in model.named_modules():
        names.setdefault(id(mod), name or "<model>")
    return names


def _resolve(model: nn.Module, layer: LayerSpec, names: dict[int, str]) -> tuple[str, nn.Module]:
    """(name, module) for a module of ``model`` given as a module or a dotted name."""
    if isinstance(layer, str):
        try:
            mod = model.get_submodule(layer)
        except AttributeError:
            linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            raise ValueError(
                f"model has no submodule named {layer!r}; its nn.Linear modules are {linear}"
            ) from None
        return layer or "<model>", mod
    if isinstance(layer, nn.Module):
        if id(layer) not in names:
            raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
        return names[id(layer)], layer
    raise TypeError(f"layer must be an nn.Module or a dotted submodule name, got {type(layer).__name__}")


def _model_device(model: nn.Module) -> torch.device | None:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return None


def _move(x: Any, device: torch.device | None) -> Any:
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: _move(v, device) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_move(v, device) for v in x)
    if isinstance(x, list):
        return [_move(v, device) for v in x]
    return x


def _first_tensor(values: Iterable[Any]) -> torch.Tensor | None:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    return None


def _split_batch(
    batch: Any, batch_to_input: Callable[[Any], Any] | None, labels: bool | Callable[[Any], Any]
) -> tuple[Any, Any]:
    """(model input, raw labels or None) of one batch, following the rules in the module docstring."""
    return model_input_and_labels(batch, INPUT_KEYS, batch_to_input, labels)


def _forward(model: nn.Module, inputs: Any, custom: bool, device: torch.device | None) -> Any:
    inputs = _move(inputs, device)
    if custom and isinstance(inputs, Mapping):
        return model(**inputs)
    if custom and isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def _low_precision(t: torch.Tensor) -> bool:
    return t.dtype in (torch.float16, torch.bfloat16)


def _rows(t: torch.Tensor, lead: tuple[int, ...], mode: str, what: str) -> torch.Tensor:
    """Sample rows of a captured tensor: flattened per sample, per token, or pooled over the sequence."""
    b = lead[0]
    if t.ndim == 0 or t.shape[0] != b:
        raise DLRInputError(f"{what}: shape {tuple(t.shape)} does not start with the batch size {b}")
    if len(lead) == 1:
        return t.reshape(b, -1)
    k = len(lead)
    if tuple(t.shape[:k]) != lead:
        if mode == "tokens":
            raise DLRInputError(
                f"{what}: shape {tuple(t.shape)} has no per-token layout {lead}, but sequence='tokens' makes "
                "every token a sample; use sequence='mean' or 'last' to compare per-sequence features"
            )
        return t.reshape(b, -1)  # already one vector per sequence
    t3 = t.reshape(b, math.prod(lead[1:]), -1)
    if mode == "tokens":
        return t3.reshape(b * t3.shape[1], -1)
    if mode == "last":
        return t3[:, -1]
    return (t3.float() if _low_precision(t3) else t3).mean(dim=1)


def _label_rows(lab: Any, lead: tuple[int, ...], mode: str) -> tuple[torch.Tensor | None, str]:
    """Labels matched to the sample rows, or (None, reason) when they do not fit."""
    if not isinstance(lab, torch.Tensor):
        try:
            lab = torch.as_tensor(lab)
        except (TypeError, ValueError, RuntimeError):
            return None, f"labels of type {type(lab).__name__} are not numeric"
    lab = lab.detach().cpu()
    if lab.is_complex() or lab.ndim == 0:
        return None, f"labels of shape {tuple(lab.shape)} and dtype {lab.dtype} cannot be used"
    b = lead[0]
    integer = not lab.is_floating_point() and lab.dtype != torch.bool
    if len(lead) == 1:
        if lab.shape[0] != b:
            return None, f"labels have {lab.shape[0]} rows for a batch of {b} samples"
        return (lab if lab.ndim == 1 else lab.reshape(b, -1)), ""
    k, t = len(lead), math.prod(lead[1:])
    per_token = tuple(lab.shape[:k]) == lead
    if mode == "tokens":
        if not per_token:
            return None, (
                f"labels of shape {tuple(lab.shape)} do not match the token layout {lead} (sequence='tokens' "
                "makes every token a sample); use sequence='mean' or 'last' for per-sequence labels"
            )
        return (lab.reshape(b * t) if lab.ndim == k else lab.reshape(b * t, -1)), ""
    if per_token:
        lab3 = lab.reshape(b, t, -1)
        if mode == "last":
            out = lab3[:, -1]
        elif integer:
            return None, "per-token class ids cannot be averaged (sequence='mean'); use sequence='last' or 'tokens'"
        else:
            out = lab3.double().mean(dim=1)
        return (out.reshape(b) if lab.ndim == k else out), ""
    if lab.shape[0] != b:
        return None, f"labels have {lab.shape[0]} rows for a batch of {b} sequences"
    return (lab if lab.ndim == 1 else lab.reshape(b, -1)), ""


# ---------------------------------------------------------------------------------------------- layer detection
def _detect_last_linear(model: nn.Module, run: Callable[[], Any], names: dict[int, str]) -> tuple[str, nn.Module]:
    order: list[nn.Module] = []
    handles = []
    try:
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                handles.append(mod.register_forward_hook(lambda m, args, out: order.append(m)))
        run()
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError(
            "no nn.Linear module was called in the forward pass, so there is no last linear layer to measure; "
            "pass layer= (a module or its dotted name) whose input are the features and whose output are the "
            "outputs"
        )
    last = order[-1]
    count = sum(m is last for m in order)
    if count > 1:
        raise ValueError(
            f"ambiguous last linear layer: {names[id(last)]!r} is called {count} times in one forward pass, so "
            "its input and output are not one (features, outputs) pair; pass layer= naming the module to measure"
        )
    return names[id(last)], last


def last_linear(
    model: nn.Module, batch: Any, *, batch_to_input: Callable[[Any], Any] | None = None
) -> str:
    """Dotted name of the last ``nn.Linear`` that ``model`` calls on ``batch`` (the layer :func:`collect` uses).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    batch : tensor, tuple, list or dict
        One batch, read as in :func:`collect`.
    batch_to_input : callable, optional
        As in :func:`collect`.

    Returns
    -------
    str
        The name, as in ``model.named_modules()``.

    Raises
    ------
    ValueError
        When no ``nn.Linear`` is called, or when the last one is called several times in one forward pass.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    >>> last_linear(net, torch.zeros(4, 3))
    '2'
    """
    names = _module_names(model)
    inputs, _ = _split_batch(batch, batch_to_input, False)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            name, _ = _detect_last_linear(
                model, lambda: _forward(model, inputs, batch_to_input is not None, _model_device(model)), names
            )
    finally:
        for m, mode in modes.items():
            m.training = mode
    return name


# ---------------------------------------------------------------------------------------------- collect
def _to_core(t: torch.Tensor) -> torch.Tensor:
    """A tensor for :meth:`dlrcore.DLRStats.update`: CUDA tensors stay on the GPU when CuPy can take them through
    DLPack (the statistics are then accumulated on the device), everything else goes to the host."""
    if t.is_cuda and is_device_input(t):
        return t.detach()
    return t.cpu()


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
    batch_to_input: Callable[[Any], Any] | None = None,
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
    batch_to_input : callable, optional
        ``batch_to_input(batch)`` gives the model input: a dict is passed as keyword arguments, a tuple as
        positional arguments, anything else as the single argument.

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
    if sequence not in SEQUENCE_MODES:
        raise ValueError(f"sequence must be one of {SEQUENCE_MODES}, got {sequence!r}")
    if max_batches is not None and (int(max_batches) != max_batches or max_batches < 1):
        raise ValueError(f"max_batches must be a positive integer, got {max_batches!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = _module_names(model)
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

    modes = {m: m.training for m in model.modules()}
    handles: list[Any] = []
    calls: dict[str, list[tuple[torch.Tensor | None, Any]]] = {}
    display = Progress(total, "dlrcore collect", enabled=progress, delay=PROGRESS_DELAY, unit="batches")
    model.eval()
    try:
        with torch.no_grad():
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

            ref_stats = None if extra else DLRStats(num_classes=num_classes, precision=precision)
            layer_stats = {n: DLRStats(num_classes=num_classes, precision=precision) for n, _ in extra}
            use_labels: bool | None = None
            rows = 0
            nb = 0
            batches: Iterable[Any] = itertools.chain([first], it)
            if max_batches is not None:
                batches = itertools.islice(batches, int(max_batches))
            for nb, batch in enumerate(batches, start=1):
                for lst in calls.values():
                    lst.clear()
                inputs, lab = _split_batch(batch, batch_to_input, labels)
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
                    continue
                b = x_ref.shape[0]
                tokenwise = x_ref.ndim >= 3 and y_ref.ndim == x_ref.ndim and x_ref.shape[:-1] == y_ref.shape[:-1]
                lead = tuple(y_ref.shape[:-1]) if tokenwise else (b,)
                outs = _to_core(_rows(y_ref, lead, sequence, f"outputs of {ref_name!r}"))
                lab_rows = None
                if use_labels is None:
                    lab_rows, why = (None, "") if lab is None else _label_rows(lab, lead, sequence)
                    if lab is not None and lab_rows is None:
                        warnings.warn(f"labels dropped: {why}", UserWarning, stacklevel=2)
                    use_labels = lab_rows is not None
                elif use_labels:
                    lab_rows, why = (None, "the batch has no labels") if lab is None else _label_rows(
                        lab, lead, sequence
                    )
                    if lab_rows is None:
                        raise DLRInputError(f"batch {nb}: earlier batches had labels, but {why}")
                if ref_stats is not None:
                    feats = _to_core(_rows(x_ref, lead, sequence, f"input of {ref_name!r}"))
                    ref_stats.update(feats, outs, labels=lab_rows)
                for name, mod in extra:
                    x = x_ref if mod is ref_mod else calls[name][0][0]
                    if x is None:
                        raise ValueError(f"layer {name!r} was called without a tensor input")
                    feats = _to_core(_rows(x, lead, sequence, f"input of {name!r}"))
                    layer_stats[name].update(feats, outs, labels=lab_rows)
                rows += outs.shape[0]
                display.advance(nb - display.done, f"{rows} samples")
                for lst in calls.values():
                    lst.clear()
            display.advance(nb - display.done, f"{rows} samples", final=True)
    finally:
        for h in handles:
            h.remove()
        calls.clear()
        for m, mode in modes.items():
            m.training = mode
        display.close()
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

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> held_out = [torch.randn(64, 4)]
    >>> tracker = Tracker(net, held_out, every=10)
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
        **collect_kwargs: Any,
    ) -> None:
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if "layers" in collect_kwargs:
            raise TypeError("Tracker measures one layer; call collect(..., layers=[...]) for layer-wise D_LR")
        self.model = model
        self.data = data
        self.every = int(every)
        self.layer = layer
        self.spectrum = bool(spectrum)
        self.kernel = dict(
            rtol=rtol,
            output_kernel=check_output_kernel(output_kernel),
            center_logits=check_center_logits(center_logits),
        )
        self.collect_kwargs = {"progress": False, **collect_kwargs}
        self.records: list[dict[str, Any]] = []
        self.stats: DLRStats | None = None

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
        return record


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
_LIGHTNING_CLASS: Any = None


def _lightning() -> Any:
    """The ``lightning.pytorch`` module, or ``pytorch_lightning`` when only that one is installed."""
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl  # type: ignore[no-redef]
        except ImportError as err:
            raise ImportError(
                "DLRCallback needs PyTorch Lightning: pip install lightning (or pytorch_lightning)"
            ) from err
    return pl


def lightning_callback_class() -> type:
    """The :class:`DLRCallback` class (a ``lightning.pytorch.Callback``), built on first use.

    ``import dlrcore.adapters.torch`` does not import Lightning: the class is created the first time it is asked
    for, as ``dlrcore.adapters.torch.DLRCallback`` (module ``__getattr__``) or through this function. It derives
    from ``lightning.pytorch.Callback`` when the ``lightning`` package is installed, otherwise from
    ``pytorch_lightning.Callback``.

    Returns
    -------
    type
        ``DLRCallback``.
    """
    global _LIGHTNING_CLASS
    if _LIGHTNING_CLASS is not None:
        return _LIGHTNING_CLASS
    pl = _lightning()

    class DLRCallback(pl.Callback):  # type: ignore[misc, name-defined]
        """Lightning callback: D_LR on a held-out loader every N training steps and/or after each validation.

        Parameters
        ----------
        data : DataLoader or re-iterable of batches
            Held-out batches, iterated in full at every measurement (cap with ``max_batches``). Batches are read
            as in :func:`collect` and moved to the module's device.
        every_n_steps : int or None
            Measure after the optimizer step that makes ``trainer.global_step`` a multiple of this (in
            ``on_train_batch_end``; each global step is measured at most once, also with gradient
            accumulation), and once at the start of training (step 0). None: no step-wise measurement.
        on_validation_end : bool
            Also measure at the end of every validation epoch (``on_validation_epoch_end``, not during the
            sanity check), recorded at the current ``trainer.global_step``.
        layer : nn.Module or str, optional
            As in :func:`collect` (default: the last ``nn.Linear`` the forward pass calls).
        spectrum : bool
            Also store the eigen-spectrum in each record (``record["spectrum"]``, see :class:`Tracker`).
        log_prefix : str
            Prefix of the logged metric names: ``{prefix}value``, ``{prefix}output_rank``,
            ``{prefix}output_effective_rank``, ``{prefix}constant_share``.
        rtol : float, optional
            Output-span tolerance passed to :meth:`dlrcore.DLRStats.result`.
        **collect_kwargs
            Further keyword arguments of :func:`collect` (``max_batches``, ``labels``, ``sequence``, ...).

        Attributes
        ----------
        records : list of dict
            One dict per measurement, as :attr:`Tracker.records` (``step``, ``dlr``, ``output_rank``, ...), plus
            ``epoch``; they feed :func:`dlrcore.plot.trajectory`.
        stats : DLRStats or None
            The statistics of the last measurement.

        Notes
        -----
        Metrics go to every logger of the trainer (``trainer.loggers``) with ``log_metrics(..., step=step)``
        from global rank 0, at the step they were measured (independent of ``log_every_n_steps``); they are
        also put in ``trainer.callback_metrics``. The module is measured in eval mode under ``torch.no_grad``
        and every submodule's training mode is restored afterwards. Under multi-process training every rank
        measures its own ``data``; merge with :func:`all_reduce` yourself when ranks hold different shards.
        """

        def __init__(
            self,
            data: Iterable[Any],
            every_n_steps: int | None = 100,
            *,
            on_validation_end: bool = False,
            layer: LayerSpec | None = None,
            spectrum: bool = False,
            log_prefix: str = "dlr/",
            rtol: float | None = None,
            output_kernel: str = "span",
            center_logits: bool = CENTER_LOGITS,
            **collect_kwargs: Any,
        ) -> None:
            super().__init__()
            if every_n_steps is None and not on_validation_end:
                raise ValueError("give every_n_steps or on_validation_end=True, or the callback never measures")
            if every_n_steps is not None and (int(every_n_steps) != every_n_steps or every_n_steps < 1):
                raise ValueError(f"every_n_steps must be a positive integer or None, got {every_n_steps!r}")
            self.every_n_steps = None if every_n_steps is None else int(every_n_steps)
            self.on_validation_end = bool(on_validation_end)
            self.log_prefix = str(log_prefix)
            self._tracker = Tracker(
                nn.Module(), data, every=self.every_n_steps or 1, layer=layer, spectrum=spectrum, rtol=rtol,
                output_kernel=output_kernel, center_logits=center_logits, **collect_kwargs,
            )
            self._last_step: int | None = None

        @property
        def records(self) -> list[dict[str, Any]]:
            return self._tracker.records

        @property
        def stats(self) -> DLRStats | None:
            return self._tracker.stats

        def measure(self, trainer: Any, pl_module: nn.Module) -> dict[str, Any]:
            """Measure now at ``trainer.global_step``, record, log and return the record."""
            step = int(trainer.global_step)
            self._tracker.model = pl_module
            record = self._tracker.measure(step, epoch=int(trainer.current_epoch))
            self._last_step = step
            metrics = {
                f"{self.log_prefix}value": float(record["dlr"]),
                f"{self.log_prefix}span": float(record["dlr_span"]),
                f"{self.log_prefix}sqrt": float(record["dlr_sqrt"]),
                f"{self.log_prefix}output_rank": float(record["output_rank"]),
                f"{self.log_prefix}output_effective_rank": float(record["output_effective_rank"]),
                f"{self.log_prefix}constant_share": float(record["constant_share"]),
            }
            for k, v in metrics.items():
                trainer.callback_metrics[k] = torch.tensor(v)
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(metrics, step=step)
            return record

        def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
            if self.every_n_steps is not None and int(trainer.global_step) % self.every_n_steps == 0:
                self.measure(trainer, pl_module)  # the starting point (step 0, or a resumed step)

        def on_train_batch_end(
            self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            if self.every_n_steps is None or trainer.sanity_checking:
                return
            step = int(trainer.global_step)
            if step % self.every_n_steps == 0 and step != self._last_step:
                self.measure(trainer, pl_module)

        def on_validation_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
            if self.on_validation_end and not trainer.sanity_checking:
                self.measure(trainer, pl_module)

    DLRCallback.__module__ = __name__
    DLRCallback.__qualname__ = "DLRCallback"
    _LIGHTNING_CLASS = DLRCallback
    return DLRCallback


def __getattr__(name: str) -> Any:
    if name == "DLRCallback":
        return lightning_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------- Hugging Face
#: Accepted values of ``pooling`` in :func:`collect_hf`.
HF_POOLING: tuple[str, ...] = ("tokens", "mean", "last", "cls")
#: Keys removed from a dict batch before the model is called by :func:`collect_hf` (labels are read from them).
HF_LABEL_KEYS: tuple[str, ...] = ("labels", "label", "start_positions", "end_positions")


class _StopForward(Exception):
    """Raised by a hook of :func:`collect_hf` to end the forward pass once the head's input is captured."""


def _hf_head(model: nn.Module, head: LayerSpec | None, names: dict[int, str], run: Callable[[], Any]) -> tuple[
    str, nn.Module, bool
]:
    """(name, module, is_lm_head) of the head measured by :func:`collect_hf`."""
    if head is not None:
        name, mod = _resolve(model, head, names)
        get = getattr(model, "get_output_embeddings", None)
        return name, mod, bool(callable(get) and get() is mod)
    get = getattr(model, "get_output_embeddings", None)
    emb = get() if callable(get) else None
    if isinstance(emb, nn.Linear):
        return names.get(id(emb), "lm_head"), emb, True
    name, mod = _detect_last_linear(model, run, names)
    return name, mod, False


def _hf_pool(h: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of a (batch, seq, d) tensor for ``pooling``, skipping padding; also the kept (batch, seq) mask or the
    per-row sequence index used (for matching labels)."""
    b, t = h.shape[:2]
    m = torch.ones(b, t, dtype=torch.bool, device=h.device) if mask is None else mask.to(h.device).bool()
    if tuple(m.shape) != (b, t):
        raise DLRInputError(f"attention_mask of shape {tuple(m.shape)} does not match the hidden states {(b, t)}")
    if pooling == "tokens":
        return h[m], m
    keep = m.any(dim=1)  # sequences with no real token give no sample
    if pooling == "mean":
        w = m.double()
        hs = (h.double() * w.unsqueeze(-1)).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp(min=1)
        return hs[keep], keep
    pos = torch.arange(t, device=h.device).expand(b, t)
    if pooling == "last":  # last real token (right or left padding)
        idx = torch.where(m, pos, torch.full_like(pos, -1)).max(dim=1).values
    else:  # "cls": first real token
        idx = torch.where(m, pos, torch.full_like(pos, t)).min(dim=1).values
    idx = idx.clamp(0, t - 1)
    return h[torch.arange(b, device=h.device), idx][keep], keep


def collect_hf(
    model: nn.Module,
    data: Iterable[Any],
    *,
    pooling: str = "tokens",
    head: LayerSpec | None = None,
    weights: bool | None = None,
    labels: bool | Callable[[Any], Any] = True,
    num_classes: int | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    precision: str = "auto",
    batch_to_input: Callable[[Any], Any] | None = None,
) -> DLRStats:
    """D_LR of a Hugging Face ``transformers`` model: final hidden state against its LM or classification head.

    The features are the input of the head: for a language model the head is ``model.get_output_embeddings()``
    (``lm_head``), its input the final hidden state, and the statistics are built with
    ``DLRStats(weight=head.weight, bias=head.bias)``, so that no n x vocab logits are formed: the forward pass is
    ended by a hook as soon as the head's input is captured, before the model computes its logits (or a loss).
    For other models (sequence / token classification) the head is the last ``nn.Linear`` the forward pass
    calls (e.g. ``classifier``, ``score``, ``classifier.out_proj``) and its actual output is used. Works with any
    ``nn.Module`` built that way; transformers itself is not imported.

    The model runs in eval mode under :func:`torch.no_grad` (training modes restored, hooks removed, also on
    error).

    Parameters
    ----------
    model : torch.nn.Module
        E.g. ``GPT2LMHeadModel``, ``BertForSequenceClassification``.
    data : iterable of batches
        Dicts of model keyword arguments (a tokenizer's ``BatchEncoding``, or ``{"input_ids": ...,
        "attention_mask": ...}``); a tensor is taken as ``input_ids``. Label keys (:data:`HF_LABEL_KEYS`) are not
        passed to the model.
    pooling : {"tokens", "mean", "last", "cls"}
        When the head is applied per token (features ``(batch, seq, hidden)``): every non-padding token is a
        sample (``"tokens"``), or one sample per sequence: the mean over its non-padding tokens, its last
        non-padding token, or its first non-padding token (``"cls"``). Padding follows ``attention_mask``
        (left or right padding); without one every position counts. Ignored when the head already gets one
        vector per sequence (BERT's pooled output).
    head : nn.Module or str, optional
        The head module (or dotted name) to measure instead of the automatic choice.
    weights : bool, optional
        Derive outputs from ``head.weight`` / ``head.bias`` (never forming them) instead of capturing them.
        Default: True for a language-model head, False otherwise.
    labels : bool or callable
        True: use ``batch["labels"]`` (or ``"label"``) when it has one entry per sample (class ids per sequence
        with a per-sequence head, per token with ``pooling="tokens"``; ``-100`` entries are not allowed) and
        outputs are captured; LM label ids are never used (they would give n x vocab one-hot targets).
        False: ignore labels. A callable: ``labels(batch)`` gives them, one per sample.
    num_classes : int, optional
        Number of classes for integer labels.
    max_batches : int, optional
        Stop after this many batches.
    progress : bool
        Progress display on stderr for long passes.
    precision : {"auto", "float32", "float64"}
        See :class:`dlrcore.DLRStats`.
    batch_to_input : callable, optional
        ``batch_to_input(batch)`` returns the dict of keyword arguments of the model; the attention mask is
        still read from its ``"attention_mask"``.

    Returns
    -------
    DLRStats

    Examples
    --------
    A tiny stand-in for a causal LM (any module with ``get_output_embeddings`` works the same way):

    >>> import torch
    >>> class TinyLM(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.emb = torch.nn.Embedding(50, 8); self.lm_head = torch.nn.Linear(8, 50)
    ...     def get_output_embeddings(self):
    ...         return self.lm_head
    ...     def forward(self, input_ids, attention_mask=None):
    ...         return self.lm_head(torch.tanh(self.emb(input_ids)))
    >>> _ = torch.manual_seed(0)
    >>> ids = torch.randint(0, 50, (4, 6)); mask = torch.ones(4, 6, dtype=torch.long); mask[:, 4:] = 0
    >>> st = collect_hf(TinyLM(), [{"input_ids": ids, "attention_mask": mask}], progress=False)
    >>> st.n, st.p, st.C, st.weights_mode   # 16 real tokens, no 16 x 50 logits formed
    (16, 8, 50, True)
    """
    if pooling not in HF_POOLING:
        raise ValueError(f"pooling must be one of {HF_POOLING}, got {pooling!r}")
    if max_batches is not None and (int(max_batches) != max_batches or max_batches < 1):
        raise ValueError(f"max_batches must be a positive integer, got {max_batches!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = _module_names(model)
    device = _model_device(model)

    def split(batch: Any) -> tuple[dict[str, Any], torch.Tensor | None, Any]:
        if batch_to_input is not None:
            kwargs = batch_to_input(batch)
            if not isinstance(kwargs, Mapping):
                raise TypeError("batch_to_input must return a dict of model keyword arguments")
            kwargs = dict(kwargs)
        elif isinstance(batch, Mapping):
            kwargs = {k: v for k, v in batch.items() if k not in HF_LABEL_KEYS}
        elif isinstance(batch, torch.Tensor):
            kwargs = {"input_ids": batch}
        else:
            raise TypeError(
                f"collect_hf reads dict batches (or input_ids tensors), got {type(batch).__name__}; "
                "pass batch_to_input=lambda batch: {...}"
            )
        lab: Any = None
        if callable(labels):
            lab = labels(batch)
        elif labels and isinstance(batch, Mapping):
            key = next((k for k in ("labels", "label") if k in batch), None)
            lab = None if key is None else batch[key]
        mask = kwargs.get("attention_mask")
        return kwargs, (mask if isinstance(mask, torch.Tensor) else None), lab

    first, it, total = first_and_total(data, max_batches)

    modes = {m: m.training for m in model.modules()}
    handles: list[Any] = []
    captured: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    display = Progress(total, "dlrcore collect_hf", enabled=progress, delay=PROGRESS_DELAY, unit="batches")
    stats: DLRStats | None = None
    model.eval()
    try:
        with torch.no_grad():
            kw0, _, _ = split(first)
            name, mod, is_lm = _hf_head(model, head, names, lambda: model(**_move(kw0, device)))
            use_weights = is_lm if weights is None else bool(weights)
            if use_weights:
                w = getattr(mod, "weight", None)
                if not isinstance(w, torch.Tensor) or w.ndim != 2:
                    raise ValueError(f"head {name!r} has no 2-D weight; pass weights=False")
                b = getattr(mod, "bias", None)
                stats = DLRStats(
                    weight=w.detach().cpu(), bias=None if b is None else b.detach().cpu(),
                    num_classes=num_classes, precision=precision,
                )

                def pre(m: nn.Module, args: Any, kwargs: Any) -> None:
                    x = _first_tensor(args)
                    if x is None:
                        x = _first_tensor(kwargs.values())
                    if x is None:
                        raise ValueError(f"head {name!r} was called without a tensor input")
                    captured.append((x.detach(), None))
                    raise _StopForward

                handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                stats = DLRStats(num_classes=num_classes, precision=precision)

                def post(m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
                    x = _first_tensor(args)
                    if x is None:
                        x = _first_tensor(kwargs.values())
                    y = out if isinstance(out, torch.Tensor) else None
                    if x is None or y is None:
                        raise ValueError(f"head {name!r} must take and return a tensor")
                    captured.append((x.detach(), y.detach()))
                    raise _StopForward

                handles.append(mod.register_forward_hook(post, with_kwargs=True))

            use_labels: bool | None = None if (labels and not (is_lm and not callable(labels))) else False
            rows = nb = 0
            batches: Iterable[Any] = itertools.chain([first], it)
            if max_batches is not None:
                batches = itertools.islice(batches, int(max_batches))
            for nb, batch in enumerate(batches, start=1):
                captured.clear()
                kwargs, mask, lab = split(batch)
                try:
                    model(**_move(kwargs, device))
                except _StopForward:
                    pass
                if len(captured) != 1:
                    raise ValueError(
                        f"head {name!r} was {'not called' if not captured else 'called several times'} in the "
                        f"forward pass of batch {nb}"
                    )
                x, y = captured[0]
                captured.clear()
                if x.ndim == 3:  # per-token head: pool, skipping padding
                    feats, kept = _hf_pool(x, mask, pooling)
                    outs = None if y is None else _hf_pool(y, mask, pooling)[0]
                elif x.ndim == 2:
                    feats, kept, outs = x, None, y
                else:
                    raise DLRInputError(f"head {name!r}: input of shape {tuple(x.shape)} (expected 2-D or 3-D)")
                if feats.shape[0] == 0:
                    continue
                lab_rows = None
                if use_labels is not False and lab is not None:
                    lt = torch.as_tensor(lab).detach().cpu()
                    if kept is not None and lt.shape[: kept.ndim] == kept.shape:
                        lt = lt[kept.cpu()]
                    if lt.shape[0] == feats.shape[0]:
                        lab_rows = lt
                    elif use_labels is None:
                        warnings.warn(
                            f"labels of shape {tuple(torch.as_tensor(lab).shape)} do not give one label per "
                            f"sample ({feats.shape[0]} samples); labels dropped", UserWarning, stacklevel=2
                        )
                if use_labels is None:
                    use_labels = lab_rows is not None
                elif use_labels and lab_rows is None:
                    raise DLRInputError(f"batch {nb}: earlier batches had labels, this one has none that fit")
                feats = feats.cpu()
                if use_weights:
                    stats.update(feats, labels=lab_rows if use_labels else None)
                else:
                    stats.update(feats, outs.cpu(), labels=lab_rows if use_labels else None)
                rows += feats.shape[0]
                display.advance(nb - display.done, f"{rows} samples")
            display.advance(nb - display.done, f"{rows} samples", final=True)
    finally:
        for h in handles:
            h.remove()
        captured.clear()
        for m, mode in modes.items():
            m.training = mode
        display.close()
    if stats is None or stats.n == 0:
        raise ValueError("no samples were collected: every batch was empty or fully padded")
    return stats
