"""PyTorch Lightning adapter: :class:`DLRCallback`, D_LR on a held-out loader during ``Trainer.fit``.

This module imports Lightning (``lightning.pytorch``, or ``pytorch_lightning`` when only that one is installed) and
torch; ``import dlrcore`` and ``import dlrcore.adapters.torch`` do not import it. The callback drives a
:class:`dlrcore.adapters.torch.Tracker`; no mathematics lives here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..checks import check_optional_int
from ..extras import require

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as err:
        raise ImportError(
            'dlrcore.adapters.lightning needs lightning: pip install "dlrcore[lightning]" (or pytorch_lightning)'
        ) from err

from ..output_kernels import CENTER_LOGITS
from ..stats import DLRStats
from .torch import Tracker
from .torch_model import LayerSpec

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = require("torch", "torch", "dlrcore.adapters.lightning")
    nn = torch.nn

__all__ = ["DLRCallback", "lightning_callback_class"]


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
        self.every_n_steps = check_optional_int(every_n_steps, "every_n_steps")
        # not self.on_validation_end: that name is Lightning's own hook method, which a bool would shadow
        self.measure_on_validation_end = bool(on_validation_end)
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
        if self.measure_on_validation_end and not trainer.sanity_checking:
            self.measure(trainer, pl_module)


def lightning_callback_class() -> type:
    """:class:`DLRCallback` (kept for code written against the earlier factory)."""
    return DLRCallback
