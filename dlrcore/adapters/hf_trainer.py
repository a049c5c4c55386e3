"""Hugging Face ``Trainer`` callback: :class:`DLRTrainerCallback`, D_LR and D_half on held-out data during training.

The callback runs :func:`dlrcore.adapters.hf.collect_hf` on an evaluation set every N optimizer steps (and/or
after each evaluation) and logs the values *through the trainer*: ``trainer.log`` puts them in
``trainer.state.log_history`` and hands them to every reporter of ``TrainingArguments.report_to`` (TensorBoard,
Weights & Biases, MLflow, ...). No mathematics lives here.

A ``TrainerCallback`` is not given the trainer, and the callbacks that report (``TensorBoardCallback``,
``WandbCallback``...) run before those you add, so a callback cannot slip values into the trainer's own logs.
Give the callback the trainer instead: ``DLRTrainerCallback(data, trainer=trainer)`` or
``callback.attach(trainer)`` (which also adds it). Without the trainer the values still go to
``state.log_history`` and :attr:`DLRTrainerCallback.records`, and a warning says that no reporter saw them.

This module imports ``transformers`` and torch; ``import dlrcore`` and ``import dlrcore.adapters.hf`` do not
import it (``dlrcore.adapters.hf.DLRTrainerCallback`` does, on first access).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..checks import check_optional_int
from ..output_kernels import CENTER_LOGITS, kernel_options
from ..stats import DLRStats
from .batches import result_record, user_stacklevel
from .hf import collect_hf
from .tensorboard import record_scalars

try:  # imported at run time only, so that type checking does not read all of transformers
    transformers: Any = importlib.import_module("transformers")
    torch: Any = importlib.import_module("torch")
except ImportError as err:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "dlrcore.adapters.hf_trainer needs transformers (and accelerate for its Trainer): "
        'pip install "dlrcore[torch,hf]"'
    ) from err

__all__ = ["DLRTrainerCallback"]

#: Label names kept, with the model's ``forward`` arguments, in examples batched by the callback.
_LABEL_NAMES = ("label", "labels", "label_ids")


def _forward_names(model: Any) -> set[str] | None:
    """Named arguments of ``model.forward`` (the columns a ``Trainer`` keeps), or None when unknown."""
    forward = getattr(model, "forward", None)
    try:
        params = inspect.signature(forward).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names or None


class DLRTrainerCallback(transformers.TrainerCallback):  # type: ignore[misc]
    """``transformers.TrainerCallback``: D_LR and D_half on an evaluation set, logged through the ``Trainer``.

    Parameters
    ----------
    data : Dataset, DataLoader or list of batches
        The evaluation set, iterated in full at every measurement (cap it with ``max_batches``). A dataset of
        examples (a ``torch.utils.data.Dataset`` or ``datasets.Dataset`` of dicts, as given to ``Trainer``) is
        batched with ``batch_size`` (default ``args.per_device_eval_batch_size``) and ``data_collator`` (default
        the trainer's, or ``transformers.default_data_collator``), keeping only the columns the model's
        ``forward`` names and the labels, as the ``Trainer`` does. A ``DataLoader`` or a list of dict batches is
        read as it is (see :func:`~dlrcore.adapters.hf.collect_hf`). It must be re-iterable.
    every_n_steps : int or None
        Measure after the optimizer step that makes ``state.global_step`` a multiple of this (``on_step_end``),
        and at the start of training. None: no step-wise measurement.
    on_evaluate : bool
        Also measure after every evaluation of the trainer (``on_evaluate``; the values are also added to the
        evaluation's metrics, so ``trainer.evaluate()`` returns them). A step already measured is not measured
        again.
    trainer : transformers.Trainer, optional
        The trainer whose ``log`` reports the values; or call :meth:`attach`.
    batch_size : int, optional
        Rows per batch when ``data`` is a dataset of examples.
    data_collator : callable, optional
        Collates examples into a batch when ``data`` is a dataset of examples.
    log_prefix : str
        Prefix of the logged names: ``{prefix}dlr`` (the measure chosen by ``output_kernel``),
        ``{prefix}dlr_span`` (literal D_LR), ``{prefix}dlr_sqrt`` (D_half), ``{prefix}dlr_output_rank``,
        ``{prefix}dlr_output_effective_rank``, ``{prefix}dlr_constant_share``. The default ``"eval_"`` makes the
        reporters file them with the evaluation metrics (``eval/dlr`` in TensorBoard and W&B).
    spectrum : bool
        Also store the eigen-spectrum (:meth:`dlrcore.Spectrum.to_dict`) in each record under ``"spectrum"``.
    rtol, output_kernel, center_logits
        Passed to :meth:`dlrcore.DLRStats.result`: ``output_kernel="sqrt"`` makes ``{prefix}dlr`` D_half (the
        measure to read for cross-entropy logits); both measures are logged either way.
    **collect_kwargs
        Further keyword arguments of :func:`~dlrcore.adapters.hf.collect_hf` (``pooling``, ``head``,
        ``labels``, ``max_batches``, ``precision``, ``batch_to_input``, ...); ``progress`` defaults to False.

    Attributes
    ----------
    records : list of dict
        One dict per measurement, as :attr:`dlrcore.adapters.torch.Tracker.records`: ``step``
        (``state.global_step``), ``epoch``, ``dlr``, ``dlr_span``, ``dlr_sqrt``, ``output_kernel``,
        ``output_rank``, ``output_effective_rank``, ``constant_share``, ``n``, ``p``, ``C`` (and ``spectrum``).
        They feed :func:`dlrcore.plot.trajectory`.
    stats : DLRStats or None
        The statistics of the last measurement.
    trainer : transformers.Trainer or None
        The trainer that logs.

    Notes
    -----
    The model is measured in eval mode under ``torch.no_grad`` and its training modes are restored. The values
    are logged with ``trainer.log`` (its own entry in ``log_history``, at ``state.global_step``), which leaves the
    trainer's own logging of the loss at that step as it was. Under multi-process training every process
    measures ``data``; only the main process's reporters write.

    Examples
    --------
    Usage (a real run is in ``tests/adapters/test_hf_trainer.py``)::

        from dlrcore.adapters.hf import DLRTrainerCallback
        trainer = Trainer(model=model, args=args, train_dataset=train_ds)
        dlr = DLRTrainerCallback(eval_ds, every_n_steps=200, output_kernel="sqrt").attach(trainer)
        trainer.train()
        [e["eval_dlr_sqrt"] for e in trainer.state.log_history if "eval_dlr" in e]
        dlrcore.plot.trajectory(dlr.records, "dlr.png")

    >>> DLRTrainerCallback([], every_n_steps=10).log_names({"dlr": 0.4, "dlr_span": 0.4, "dlr_sqrt": 0.2})
    {'eval_dlr': 0.4, 'eval_dlr_span': 0.4, 'eval_dlr_sqrt': 0.2}
    """

    def __init__(
        self,
        data: Iterable[Any],
        every_n_steps: int | None = 100,
        *,
        on_evaluate: bool = False,
        trainer: Any = None,
        batch_size: int | None = None,
        data_collator: Callable[[list[Any]], Any] | None = None,
        log_prefix: str = "eval_",
        spectrum: bool = False,
        rtol: float | None = None,
        output_kernel: str = "span",
        center_logits: bool = CENTER_LOGITS,
        **collect_kwargs: Any,
    ) -> None:
        super().__init__()
        if every_n_steps is None and not on_evaluate:
            raise ValueError("give every_n_steps or on_evaluate=True, or the callback never measures")
        self.every_n_steps = check_optional_int(every_n_steps, "every_n_steps")
        # not self.on_evaluate: that name is the TrainerCallback's own event method, which a bool would shadow
        self.measure_on_evaluate = bool(on_evaluate)
        self.data = data
        self.trainer = trainer
        self.batch_size = check_optional_int(batch_size, "batch_size")
        self.data_collator = data_collator
        self.log_prefix = str(log_prefix)
        self.spectrum = bool(spectrum)
        self.kernel: dict[str, Any] = kernel_options(rtol, output_kernel, center_logits)
        self.collect_kwargs = {"progress": False, **collect_kwargs}
        inspect.signature(collect_hf).bind(None, None, **self.collect_kwargs)  # unknown keywords fail here
        self.records: list[dict[str, Any]] = []
        self.stats: DLRStats | None = None
        self._last_step: int | None = None
        self._last_values: dict[str, float] = {}
        self._warned = False

    def attach(self, trainer: Any) -> DLRTrainerCallback:
        """Log through ``trainer`` and add this callback to it (once); return the callback."""
        self.trainer = trainer
        if not any(cb is self for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        return self

    def log_names(self, record: Mapping[str, Any]) -> dict[str, float]:
        """The logged ``{name: value}`` of a record (names as described under ``log_prefix``)."""
        p = self.log_prefix
        return {(f"{p}dlr" if n == "value" else f"{p}dlr_{n}"): v for n, v in record_scalars(record).items()}

    # ------------------------------------------------------------------------------------------ measuring
    def _batches(self, args: Any, model: Any) -> Iterable[Any]:
        """``data`` as batches: datasets of examples are batched and collated, anything else is read as it is."""
        d = self.data
        if isinstance(d, Mapping):  # one batch of tensors
            return [d]
        if isinstance(d, (list, tuple, torch.utils.data.DataLoader)):
            return d
        examples = isinstance(d, torch.utils.data.IterableDataset) or (
            hasattr(d, "__getitem__") and hasattr(d, "__len__")
        )
        if not examples:
            return d
        collate = self.data_collator or getattr(self.trainer, "data_collator", None)
        collate = collate or transformers.default_data_collator
        keep = _forward_names(model)
        if keep is not None and getattr(args, "remove_unused_columns", True):
            keep |= set(_LABEL_NAMES)
            inner = collate

            def collate(features: list[Any]) -> Any:
                return inner([{k: v for k, v in f.items() if k in keep} if isinstance(f, Mapping) else f
                              for f in features])

        size = self.batch_size or int(getattr(args, "per_device_eval_batch_size", 8) or 8)
        return torch.utils.data.DataLoader(d, batch_size=size, shuffle=False, collate_fn=collate)

    def measure(self, args: Any, state: Any, model: Any) -> dict[str, Any]:
        """Measure ``model`` now, at ``state.global_step``; append the record to :attr:`records` and return it."""
        if model is None and self.trainer is not None:
            model = self.trainer.model
        if model is None:
            raise ValueError("DLRTrainerCallback got no model to measure")
        step = int(state.global_step)
        stats = collect_hf(model, self._batches(args, model), **self.collect_kwargs)
        res = stats.result(**self.kernel)
        record = result_record(res, step=step, epoch=state.epoch)
        if self.spectrum:
            record["spectrum"] = stats.spectrum(name=f"step {step}", **self.kernel).to_dict()
        self.stats = stats
        self.records.append(record)
        self._last_step = step
        self._last_values = self.log_names(record)
        return record

    def _log(self, state: Any, control: Any) -> None:
        """Log the last values through the trainer (or, without one, into ``state.log_history`` only)."""
        values = dict(self._last_values)
        if self.trainer is not None:
            should_log = control.should_log  # the trainer's log resets it; its own log of this step must stay
            self.trainer.log(values)
            control.should_log = should_log
            return
        entry = {**values, **({} if state.epoch is None else {"epoch": state.epoch}), "step": int(state.global_step)}
        state.log_history.append(entry)
        if not self._warned:
            self._warned = True
            warnings.warn(
                "DLRTrainerCallback has no trainer: D_LR went to trainer.state.log_history and callback.records, "
                "but no reporter (TensorBoard, W&B, ...) saw it; pass trainer=trainer or call "
                "callback.attach(trainer)",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    # ------------------------------------------------------------------------------------------ events
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.every_n_steps is not None and int(state.global_step) % self.every_n_steps == 0:
            self.measure(args, state, model)  # the starting point (step 0, or a resumed step)
            self._log(state, control)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.every_n_steps is None:
            return
        step = int(state.global_step)
        if step % self.every_n_steps == 0 and step != self._last_step:
            self.measure(args, state, model)
            self._log(state, control)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, model: Any = None,
        **kwargs: Any,
    ) -> None:
        if not self.measure_on_evaluate:
            return
        if self._last_step != int(state.global_step) or not self._last_values:
            self.measure(args, state, model)
            self._log(state, control)
        if metrics is not None:
            metrics.update(self._last_values)
