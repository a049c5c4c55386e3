"""Model plumbing shared by the PyTorch adapters (:mod:`dlrcore.adapters.torch`, :mod:`dlrcore.adapters.hf`,
:mod:`dlrcore.adapters.lightning`): finding layers, moving inputs, calling the model, turning captured tensors into
rows. No mathematics and no statistics live here."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Union

from ..extras import require
from ..inputs import DLRInputError
from .batches import check_max_batches, model_input_and_labels
from .loop import PROGRESS_DELAY

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = require("torch", "torch", "dlrcore.adapters")
    nn = torch.nn

__all__ = ["INPUT_KEYS", "PROGRESS_DELAY", "SEQUENCE_MODES", "LayerSpec", "last_linear"]

#: Dict keys searched, in this order, for the model input of a dict batch.
INPUT_KEYS: tuple[str, ...] = ("input", "inputs", "x", "pixel_values", "input_ids")
#: Accepted values of ``sequence``.
SEQUENCE_MODES: tuple[str, ...] = ("tokens", "mean", "last")

LayerSpec = Union[str, nn.Module]  # noqa: UP007 - a runtime alias, needs Union on Python 3.10


# ---------------------------------------------------------------------------------------------- small helpers
def _check_model(model: Any, max_batches: int | None) -> dict[int, str]:
    """Refuse a ``max_batches`` that is not a positive integer and a model that is not an ``nn.Module``; the
    names of the model's submodules."""
    check_max_batches(max_batches)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return _module_names(model)


@contextlib.contextmanager
def _eval_pass(model: nn.Module) -> Iterator[list[Any]]:
    """One measuring pass: ``model`` in eval mode under :func:`torch.no_grad`; yields the list in which the pass
    keeps the handles of the forward hooks it installs. On exit, also on error, the hooks are removed and every
    submodule gets its training mode back."""
    modes = {m: m.training for m in model.modules()}
    handles: list[Any] = []
    model.eval()
    try:
        with torch.no_grad():
            yield handles
    finally:
        _release(handles, modes)


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
    with _eval_pass(model):
        name, _ = _detect_last_linear(
            model, lambda: _forward(model, inputs, batch_to_input is not None, _model_device(model)), names
        )
    return name


def _release(handles: Iterable[Any], modes: dict[nn.Module, bool]) -> None:
    """Remove the forward hooks a pass installed and give every submodule back its training mode."""
    for h in handles:
        h.remove()
    for m, mode in modes.items():
        m.training = mode
