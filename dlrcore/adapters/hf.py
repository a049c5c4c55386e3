"""Hugging Face ``transformers`` adapter: :func:`collect_hf`, D_LR of a model's final hidden state against its head.

The final hidden state is measured against the LM head (through the head's weights, so no vocabulary-sized
outputs are formed) or against a classification head. This module imports torch, not ``transformers``: it reads
the model's own methods (``get_output_embeddings``) and runs it.

``DLRTrainerCallback``, the ``transformers.TrainerCallback`` that measures during ``Trainer.train`` and logs
through the trainer, lives in :mod:`dlrcore.adapters.hf_trainer` (which imports ``transformers``); it is
importable from here too, imported on first access.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checks import check_choice
from ..extras import require
from ..inputs import DLRInputError
from ..stats import DLRStats
from .batches import LabelDecision, first_and_total
from .loop import BatchRows, feed_batches
from .torch_model import (
    PROGRESS_DELAY,
    LayerSpec,
    _check_model,
    _detect_last_linear,
    _eval_pass,
    _first_tensor,
    _model_device,
    _move,
    _resolve,
)

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = require("torch", "torch", "dlrcore.adapters")
    nn = torch.nn

__all__ = ["HF_LABEL_KEYS", "HF_POOLING", "collect_hf"]


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


def _hf_label_rows(lab: Any, kept: torch.Tensor | None, n: int) -> tuple[torch.Tensor | None, str]:
    """Labels matched to the ``n`` pooled rows (the ``kept`` mask drops padding), or ``(None, reason)``."""
    lt = torch.as_tensor(lab).detach().cpu()
    if kept is not None and lt.shape[: kept.ndim] == kept.shape:
        lt = lt[kept.cpu()]
    if lt.shape[0] == n:
        return lt, ""
    return None, f"labels of shape {tuple(torch.as_tensor(lab).shape)} do not give one label per sample ({n} samples)"


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
    blocks: int | None = None,
    batch_to_input: Callable[[Any], Any] | None = None,
    dump: str | os.PathLike[str] | None = None,
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
    blocks : int, optional
        Keep the statistics in this many row blocks for jackknife error bars (``result().stderr``), see
        :class:`dlrcore.DLRStats` and docs/uncertainty.md.
    batch_to_input : callable, optional
        ``batch_to_input(batch)`` returns the dict of keyword arguments of the model; the attention mask is
        still read from its ``"attention_mask"``.
    dump : path, optional
        A folder to also write the rows measured to, appended batch by batch: ``features.npy`` (the pooled
        hidden states), ``outputs.npy`` (a classification head's outputs) or, when the outputs come from the
        head's weights, ``weight.npy`` (C x p) and ``bias.npy`` instead, and ``labels.npy`` when labels are
        used. ``dlr compute DIR/features.npy DIR/outputs.npy`` (or ``DIR/features.npy --weight DIR/weight.npy
        --bias DIR/bias.npy``, plus ``--labels DIR/labels.npy``) then gives the same statistics.

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
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = collect_hf(TinyLM(), [{"input_ids": ids, "attention_mask": mask}], progress=False, dump=d)
    >>> sorted(os.listdir(d))
    ['bias.npy', 'features.npy', 'weight.npy']
    """
    check_choice(pooling, "pooling", HF_POOLING)
    names = _check_model(model, max_batches)
    device = _model_device(model)

    def split(batch: Any) -> tuple[tuple[dict[str, Any], torch.Tensor | None], Any]:
        """``((model keyword arguments, attention mask or None), raw labels or None)`` of one batch."""
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
        return (kwargs, (mask if isinstance(mask, torch.Tensor) else None)), lab

    first, it, total = first_and_total(data, max_batches)

    captured: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    with _eval_pass(model) as handles:
        (kw0, _), _ = split(first)
        name, mod, is_lm = _hf_head(model, head, names, lambda: model(**_move(kw0, device)))
        use_weights = is_lm if weights is None else bool(weights)
        head_params: dict[str, torch.Tensor] = {}  # the head's weight and bias, saved beside a dump
        if use_weights:
            w = getattr(mod, "weight", None)
            if not isinstance(w, torch.Tensor) or w.ndim != 2:
                raise ValueError(f"head {name!r} has no 2-D weight; pass weights=False")
            b = getattr(mod, "bias", None)
            head_params = {"weight": w} if b is None else {"weight": w, "bias": b}
            stats = DLRStats(
                weight=w.detach().cpu(), bias=None if b is None else b.detach().cpu(),
                num_classes=num_classes, precision=precision, blocks=blocks,
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
            stats = DLRStats(num_classes=num_classes, precision=precision, blocks=blocks)

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

        def run(inputs: tuple[dict[str, Any], torch.Tensor | None], nb: int) -> BatchRows | None:
            """Forward pass of batch ``nb`` up to the head; the head's (pooled) input and output rows."""
            kwargs, mask = inputs
            captured.clear()
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
                return None
            n = feats.shape[0]
            return BatchRows(
                feats.cpu(), None if use_weights or outs is None else outs.cpu(),
                label_rows=lambda lab: _hf_label_rows(lab, kept, n),
            )

        decision = LabelDecision()
        if not labels or (is_lm and not callable(labels)):
            decision.use = False  # LM label ids would give n x vocab one-hot targets
        try:
            feed_batches(
                itertools.chain([first], it), total, split=split, run=run, stats=stats, decision=decision,
                max_batches=max_batches, progress=progress, title="dlrcore collect_hf", delay=PROGRESS_DELAY,
                dump=dump,
            )
        finally:
            captured.clear()
        if dump is not None:  # outputs derived from the head's weights: save them beside the features
            for key, param in head_params.items():
                np.save(os.path.join(os.fspath(dump), f"{key}.npy"), _host_weight(param))
    if stats.n == 0:
        raise ValueError("no samples were collected: every batch was empty or fully padded")
    return stats


def _host_weight(t: torch.Tensor) -> np.ndarray:
    """A head parameter as a float NumPy array (bfloat16 widened to float32)."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def __getattr__(name: str) -> Any:
    if name == "DLRTrainerCallback":  # imports transformers on first access only
        from .hf_trainer import DLRTrainerCallback

        return DLRTrainerCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
