"""PyTorch adapter: D_LR of a ``torch.nn.Module`` over a DataLoader, without writing hooks.

:func:`collect` runs the model over the data in eval mode under :func:`torch.no_grad`, captures the input
(features) and output of the network's last linear layer with forward hooks and feeds them, batch by batch, to
:class:`dlrcore.DLRStats`. :class:`Tracker` calls it every N steps of a hand-written training loop and keeps
records that :func:`dlrcore.plot.trajectory` draws. No mathematics lives here.

This module imports torch; ``import dlrcore`` does not import this module.

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
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO, Union

import torch
from torch import nn

from ..inputs import DLRInputError
from ..stats import DLRStats

__all__ = ["INPUT_KEYS", "LABEL_KEYS", "SEQUENCE_MODES", "Tracker", "collect", "last_linear"]

#: Dict keys searched, in this order, for the model input of a dict batch.
INPUT_KEYS: tuple[str, ...] = ("input", "inputs", "x", "pixel_values", "input_ids")
#: Dict keys searched, in this order, for the labels of a dict batch.
LABEL_KEYS: tuple[str, ...] = ("label", "labels", "y", "target", "targets")
#: Accepted values of ``sequence``.
SEQUENCE_MODES: tuple[str, ...] = ("tokens", "mean", "last")

#: Seconds a pass must run before the progress display appears (short passes print nothing).
PROGRESS_DELAY = 2.0

LayerSpec = Union[str, nn.Module]

_END = object()


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
    lab: Any = None
    inputs: Any = None
    if isinstance(batch, torch.Tensor):
        inputs = batch
    elif isinstance(batch, Mapping):
        key = next((k for k in INPUT_KEYS if k in batch), None)
        lab_key = next((k for k in LABEL_KEYS if k in batch), None)
        lab = batch[lab_key] if lab_key is not None else None
        if key is not None:
            inputs = batch[key]
        elif batch_to_input is None:
            raise ValueError(
                f"dict batch without an input key: its keys are {sorted(map(str, batch))}, expected one of "
                f"{list(INPUT_KEYS)}; pass batch_to_input=lambda batch: ... to say what the model gets"
            )
    elif isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError("empty tuple batch: expected (inputs, labels, ...)")
        inputs = batch[0]
        lab = batch[1] if len(batch) > 1 else None
    else:
        inputs = batch
    if batch_to_input is not None:
        inputs = batch_to_input(batch)
    if labels is False:
        lab = None
    elif callable(labels):
        lab = labels(batch)
    return inputs, lab


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


class _ProgressDisplay:
    """Batches and rows done on stderr, shown only once a pass has run for ``delay`` seconds."""

    def __init__(self, total: int | None, enabled: bool, label: str, stream: TextIO | None = None) -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.last = -math.inf
        self.drawn = False

    def update(self, batches: int, rows: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        if elapsed < PROGRESS_DELAY or (now - self.last < 0.25 and not final) or (final and not self.drawn):
            return
        self.last, self.drawn = now, True
        if self.total:
            frac = min(batches / self.total, 1.0)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
            text = f"[{bar}] {batches}/{self.total} batches, {rows} samples, {elapsed:.1f}s, eta {eta:.1f}s"
        else:
            text = f"{batches} batches, {rows} samples, {elapsed:.1f}s"
        self.stream.write(f"\r{self.label} {text}")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


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
    it = iter(data)
    first = next(it, _END)
    if first is _END:
        raise ValueError("data is empty (a one-shot iterator already consumed?); pass a DataLoader or a list")
    try:
        total: int | None = len(data)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)

    modes = {m: m.training for m in model.modules()}
    handles: list[Any] = []
    calls: dict[str, list[tuple[torch.Tensor | None, Any]]] = {}
    display = _ProgressDisplay(total, progress, "dlrcore collect")
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
                outs = _rows(y_ref, lead, sequence, f"outputs of {ref_name!r}").cpu()
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
                    feats = _rows(x_ref, lead, sequence, f"input of {ref_name!r}").cpu()
                    ref_stats.update(feats, outs, labels=lab_rows)
                for name, mod in extra:
                    x = x_ref if mod is ref_mod else calls[name][0][0]
                    if x is None:
                        raise ValueError(f"layer {name!r} was called without a tensor input")
                    feats = _rows(x, lead, sequence, f"input of {name!r}").cpu()
                    layer_stats[name].update(feats, outs, labels=lab_rows)
                rows += outs.shape[0]
                display.update(nb, rows)
                for lst in calls.values():
                    lst.clear()
            display.update(nb, rows, final=True)
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
    rtol : float, optional
        Output-span tolerance passed to :meth:`dlrcore.DLRStats.result`.
    **collect_kwargs
        Further keyword arguments of :func:`collect` (``max_batches``, ``labels``, ``sequence``, ...);
        ``progress`` defaults to False.

    Attributes
    ----------
    records : list of dict
        One dict per measurement: ``step``, ``dlr``, ``output_rank``, ``output_effective_rank``,
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
    >>> sorted(tracker.records[0])[:4]
    ['C', 'constant_share', 'dlr', 'n']
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
        self.rtol = rtol
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
        res = stats.result(rtol=self.rtol)
        record: dict[str, Any] = {
            "step": step,
            "dlr": res.value,
            "output_rank": res.output_rank,
            "output_effective_rank": res.output_effective_rank,
            "constant_share": res.constant_share,
            "n": res.n,
            "p": res.p,
            "C": res.C,
        }
        record.update(metrics)
        if self.spectrum:
            record["spectrum"] = stats.spectrum(rtol=self.rtol, name=f"step {step}").to_dict()
        self.stats = stats
        self.records.append(record)
        return record
