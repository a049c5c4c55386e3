"""TensorBoard output shared by the adapters: D_LR scalars and the spectrum figure of a record, to a summary writer.

:class:`SummaryLog` writes one measurement record (a dict of :func:`dlrcore.adapters.batches.result_record`, as
:class:`dlrcore.adapters.torch.Tracker` and :class:`dlrcore.adapters.keras.DLRKerasCallback` keep them) to a
TensorBoard event file: the scalars of :func:`record_scalars` under ``<key>/value``, ``<key>/span``,
``<key>/sqrt``, ... (the metric names of the Lightning callback) and, when the record carries a ``"spectrum"``
and matplotlib is installed, the three-panel figure of :func:`dlrcore.plot.spectrum` as an image under
``<key>/spectrum``.

The writer is either one you made (a ``torch.utils.tensorboard.SummaryWriter``, a ``tensorboardX`` writer or
anything else with ``add_scalar``/``add_image``, or a ``tf.summary`` writer from
``tf.summary.create_file_writer``), or a log folder, for which a writer of the adapter's framework is made
(``flavour="torch"`` or ``"tf"``). No framework is imported by importing this module; a writer made from a folder
needs the ``tensorboard`` package (``pip install "dlrcore[tensorboard]"``).

Examples
--------
A stand-in writer with the ``SummaryWriter`` methods (any such object works):

>>> class Printer:
...     def add_scalar(self, tag, value, global_step=None): print(tag, round(value, 3), global_step)
...     def add_image(self, tag, img, global_step=None, dataformats="CHW"): print(tag, img.shape, global_step)
...     def flush(self): pass
>>> rec = {"step": 10, "dlr": 0.3, "dlr_span": 0.3, "dlr_sqrt": 0.1, "output_rank": 3,
...        "output_effective_rank": 2.5, "constant_share": 0.0}
>>> SummaryLog(Printer()).write(rec)
dlr/value 0.3 10
dlr/span 0.3 10
dlr/sqrt 0.1 10
dlr/output_rank 3.0 10
dlr/output_effective_rank 2.5 10
dlr/constant_share 0.0 10
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .batches import user_stacklevel

__all__ = ["ERROR_NAMES", "FLAVOURS", "SCALAR_NAMES", "SummaryLog", "record_scalars", "spectrum_image"]

#: The names of the scalars written per measurement, after ``<key>/``.
SCALAR_NAMES: tuple[str, ...] = ("value", "span", "sqrt", "output_rank", "output_effective_rank", "constant_share")
#: Written too when the record has them: the jackknife standard errors (statistics built with ``blocks=``).
ERROR_NAMES: tuple[str, ...] = ("stderr", "span_stderr", "sqrt_stderr")
#: Writers made from a log folder: ``torch.utils.tensorboard.SummaryWriter`` or ``tf.summary.create_file_writer``.
FLAVOURS: tuple[str, ...] = ("torch", "tf")

_NEEDS_TB = 'needs the tensorboard package to write to a log folder: pip install "dlrcore[tensorboard]"'


def record_scalars(record: Mapping[str, Any], key: str = "dlr") -> dict[str, float]:
    """The scalars of a measurement record, by the names of :data:`SCALAR_NAMES` and :data:`ERROR_NAMES`.

    ``value`` is ``record[key]`` (the measure the output kernel chose), ``span`` the literal D_LR and ``sqrt``
    D_half (``record[key + "_span"]``, ``record[key + "_sqrt"]``), ``stderr``, ``span_stderr`` and ``sqrt_stderr``
    their jackknife standard errors (statistics built with ``blocks=``); the rest are the record's own entries.
    Entries the record lacks are left out.

    Examples
    --------
    >>> record_scalars({"dlr": 0.5, "dlr_span": 0.5, "dlr_sqrt": 0.25, "output_rank": 2})
    {'value': 0.5, 'span': 0.5, 'sqrt': 0.25, 'output_rank': 2.0}
    """
    sources = dict(zip(SCALAR_NAMES + ERROR_NAMES, (
        key, f"{key}_span", f"{key}_sqrt", "output_rank", "output_effective_rank", "constant_share",
        f"{key}_stderr", f"{key}_span_stderr", f"{key}_sqrt_stderr",
    )))
    out: dict[str, float] = {}
    for name, src in sources.items():
        v = record.get(src)
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[name] = float(v)
    return out


def spectrum_image(spectrum: Any, *, title: str | None = None) -> np.ndarray:
    """The three-panel figure of :func:`dlrcore.plot.spectrum` as an RGB image, ``(height, width, 3)`` uint8.

    Parameters
    ----------
    spectrum : Spectrum or dict
        A :class:`dlrcore.Spectrum` or its ``to_dict()`` (as records keep it).
    title : str, optional
        Figure title.

    Raises
    ------
    ImportError
        When matplotlib is not installed.

    Examples
    --------
    >>> import dlrcore
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(100, 8)); out = phi @ rng.normal(size=(8, 3))
    >>> img = spectrum_image(dlrcore.spectrum(phi, out))
    >>> img.ndim, img.shape[2], img.dtype
    (3, 3, dtype('uint8'))
    """
    from .. import plot

    fig = plot.spectrum(spectrum, title=title, figsize=(10.5, 3.5))
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def _torch_writer(logdir: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(f"dlrcore.adapters (tensorboard={logdir!r}) {_NEEDS_TB}") from err
    return SummaryWriter(log_dir=logdir)


def _tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError('dlrcore.adapters (tensorboard=) needs tensorflow: pip install "dlrcore[keras]"') from err
    try:  # tf.summary.scalar and image are TensorBoard's: without it they raise when called
        import tensorboard  # noqa: F401
    except ImportError as err:
        raise ImportError(f"dlrcore.adapters (tensorboard=) {_NEEDS_TB}") from err
    return tf


class SummaryLog:
    """Write measurement records to TensorBoard.

    Parameters
    ----------
    target : str, path, SummaryWriter or tf.summary writer
        A log folder (a writer of ``flavour`` is made, and closed by :meth:`close`), an object with
        ``add_scalar`` (``torch.utils.tensorboard.SummaryWriter``, ``tensorboardX.SummaryWriter``) or a
        ``tf.summary`` writer (with ``as_default``); writers you pass stay open.
    flavour : {"torch", "tf"}
        The writer made for a log folder.
    key : str
        The record's measure key and the tag prefix: tags are ``<key>/value``, ``<key>/span``, ...,
        ``<key>/spectrum``.
    images : bool
        Write the spectrum figure of records that carry a ``"spectrum"`` (skipped, with one warning, when
        matplotlib is missing).

    Examples
    --------
    See the module docstring.
    """

    def __init__(
        self, target: Any, *, flavour: str = "torch", key: str = "dlr", images: bool = True
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
        self.key = str(key)
        self.images = bool(images)
        self.owned = isinstance(target, (str, os.PathLike))
        if self.owned:
            logdir = os.fspath(target)
            self.writer = _torch_writer(logdir) if flavour == "torch" else _tf().summary.create_file_writer(logdir)
        elif hasattr(target, "add_scalar") or hasattr(target, "as_default"):
            self.writer = target
        else:
            raise TypeError(
                "tensorboard must be a log folder, a SummaryWriter (torch.utils.tensorboard, tensorboardX) or a "
                f"tf.summary writer (tf.summary.create_file_writer), got {type(target).__name__}"
            )
        self.tf_style = not hasattr(self.writer, "add_scalar")

    def write(self, record: Mapping[str, Any], step: int | None = None) -> None:
        """Write the scalars (and spectrum figure) of ``record`` at ``step`` (default ``record["step"]``), flush."""
        step = int(record.get("step", 0) if step is None else step)
        scalars = {f"{self.key}/{name}": v for name, v in record_scalars(record, self.key).items()}
        image = None
        spec = record.get("spectrum")
        if self.images and spec is not None:
            try:
                image = spectrum_image(spec, title=f"step {step}")
            except ImportError as err:
                self.images = False
                warnings.warn(f"spectrum figures are not written to TensorBoard: {err}", UserWarning,
                              stacklevel=user_stacklevel())
        tag = f"{self.key}/spectrum"
        if self.tf_style:
            tf = _tf()
            with self.writer.as_default():
                for name, v in scalars.items():
                    tf.summary.scalar(name, v, step=step)
                if image is not None:
                    tf.summary.image(tag, image[None], step=step)
        else:
            for name, v in scalars.items():
                self.writer.add_scalar(name, v, global_step=step)
            if image is not None:
                self.writer.add_image(tag, image, global_step=step, dataformats="HWC")
        self.flush()

    def flush(self) -> None:
        """Flush the writer to its event file."""
        flush = getattr(self.writer, "flush", None)
        if callable(flush):
            flush()

    def close(self) -> None:
        """Flush, and close the writer when this object made it."""
        self.flush()
        if self.owned:
            self.writer.close()
