"""JAX / Flax adapter: D_LR of a Flax linen module (or any JAX function) over batches, without copying activations.

:func:`collect` runs ``apply_fn(params, x)`` over the data, captures the input (features) and the output of the
module's last ``flax.linen.Dense`` (or a named module) and feeds them, batch by batch, to
:class:`dlrcore.DLRStats`. :func:`collect_fn` does the same for a plain function ``x -> (features, outputs)``.
No mathematics lives here.

This module imports jax and flax; ``import dlrcore`` does not import this module.

Usage (not a doctest)::

    import dlrcore.adapters.jax as dj
    stats = dj.collect(model.apply, variables, test_batches)          # last nn.Dense of the model
    print(stats.result().value)
    stats = dj.collect(model.apply, variables, test_batches, layer="head")   # a named module
    stats = dj.collect_fn(lambda x: (embed(x), logits(x)), test_batches)      # any JAX function
    stats = dj.collect(model.apply, variables, test_batches, dump="run")   # also run/features.npy, ... for the CLI

How the layer is captured
-------------------------
Flax's ``capture_intermediates`` stores the *outputs* of modules only, and only works when ``apply_fn`` is the
module's own ``apply`` with ``mutable=["intermediates"]``. D_LR also needs the *input* of the last linear layer,
so the adapter wraps the call in :func:`flax.linen.intercept_methods`: an interceptor sees every module method
call (``context.module``, ``context.method_name``, the positional arguments and the return value), and records
the first positional argument and the output of ``__call__`` of the chosen module, identified by its scope path
(``("encoder", "Dense_1")``, written ``"encoder/Dense_1"``). The interception happens while JAX traces the
function, so the whole extraction (forward pass, capture, per-sample reshape) is one ``jax.jit``-compiled
function returning ``(features, outputs)``; it works for any ``apply_fn`` that calls linen modules
(``model.apply``, ``TrainState.apply_fn``, a lambda adding ``train=False``...). The layer is found by an abstract
trace (:func:`jax.eval_shape`, no computation) on the first batch: the last ``nn.Dense`` whose ``__call__`` runs,
with an error when none runs or when it runs several times per forward pass. Modules inside lifted
transformations (``nn.scan``, ``nn.remat``, ``nn.vmap``...) cannot be captured this way (their values live in
an inner trace); use :func:`collect_fn` there.

How batches are read
--------------------
``data`` is any iterable of batches. Each batch is one of

* an array (NumPy, JAX or anything with ``__array__``): the model input, no labels;
* a tuple or list ``(inputs, labels, ...)``: labels from the second element when there is one;
* a dict: the input is the value of the first key present among :data:`INPUT_KEYS`, labels the value of the first
  key present among :data:`LABEL_KEYS`.

``batch_to_input=fn`` overrides the model input: ``fn(batch)`` returns the single argument after ``params``.
``labels=False`` ignores labels, ``labels=fn`` takes them from ``fn(batch)``. Features and outputs are flattened
per sample; at a layer applied token-wise (input ``(batch, seq, hidden)``, output ``(batch, seq, C)``) every
token is a sample. The arrays reach the core as NumPy arrays (:func:`numpy.asarray`, a zero-copy view on CPU);
arrays on a GPU reach it as CuPy arrays through DLPack when CuPy is installed, and the statistics are then
accumulated on the device.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..backend import is_device_input
from ..extras import require
from ..stats import DLRStats
from .batches import LABEL_KEYS, check_max_batches, first_and_total, model_input_and_labels
from .loop import BatchRows, feed_batches

if TYPE_CHECKING:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
else:
    jax = require("jax", "jax", "dlrcore.adapters.jax")
    jnp = require("jax.numpy", "jax", "dlrcore.adapters.jax")
    nn = require("flax.linen", "jax", "dlrcore.adapters.jax")

__all__ = ["INPUT_KEYS", "LABEL_KEYS", "collect", "collect_fn", "last_dense"]

#: Dict keys searched, in this order, for the model input of a dict batch.
INPUT_KEYS: tuple[str, ...] = ("x", "image", "images", "inputs", "input", "pixel_values", "input_ids")

LayerSpec = Union[str, Sequence[str]]  # noqa: UP007 - a runtime alias, needs Union on Python 3.10


# ---------------------------------------------------------------------------------------------- batches
def _to_jax_input(x: Any) -> Any:
    """Leave JAX arrays and pytrees alone; turn other array-likes (torch CPU tensors, lists) into NumPy."""
    if isinstance(x, (jax.Array, np.ndarray)):
        return x
    if isinstance(x, Mapping):
        return {k: _to_jax_input(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to_jax_input(v) for v in x)
    if hasattr(x, "__array__") or isinstance(x, list):
        return np.asarray(x)
    return x


def _split_batch(
    batch: Any, batch_to_input: Callable[[Any], Any] | None, labels: bool | Callable[[Any], Any]
) -> tuple[Any, Any]:
    """(model input, raw labels or None) of one batch, following the rules in the module docstring."""
    inputs, lab = model_input_and_labels(batch, INPUT_KEYS, batch_to_input, labels)
    return _to_jax_input(inputs), lab


def _rows(feats: jax.Array, outs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-sample rows (traced inside jit): token-wise layers give one row per token, others one per sample."""
    if feats.ndim == 0 or outs.ndim == 0:
        raise ValueError(f"the layer's input and output must have a batch axis, got shapes {feats.shape}, {outs.shape}")
    if feats.ndim >= 3 and outs.ndim == feats.ndim and feats.shape[:-1] == outs.shape[:-1]:
        lead = math.prod(feats.shape[:-1])
        return feats.reshape(lead, feats.shape[-1]), outs.reshape(lead, outs.shape[-1])
    b = feats.shape[0]
    if outs.shape[0] != b:
        raise ValueError(f"the layer's input {feats.shape} and output {outs.shape} differ in batch size")
    return feats.reshape(b, -1), outs.reshape(b, -1)


# ---------------------------------------------------------------------------------------------- layer capture
def _path(module: nn.Module) -> tuple[str, ...]:
    scope = getattr(module, "scope", None)
    path = getattr(scope, "path", None)
    return tuple(str(p) for p in path) if path is not None else ()


def _path_name(path: tuple[str, ...]) -> str:
    return "/".join(path) if path else "<root>"


def _parse_layer(layer: LayerSpec) -> tuple[str, ...]:
    if isinstance(layer, str):
        if layer in ("", "<root>"):
            return ()
        return tuple(layer.split("/"))
    if isinstance(layer, Sequence) and all(isinstance(p, str) for p in layer):
        return tuple(layer)
    raise TypeError(f"layer must be a module path such as 'Dense_1' or 'block/Dense_0', got {layer!r}")


def _first_array(values: Iterable[Any]) -> Any:
    for v in values:
        if isinstance(v, jax.Array) or hasattr(v, "shape"):
            return v
    return None


def _output_array(out: Any) -> Any:
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return out if hasattr(out, "shape") else None


def _calls(apply_fn: Callable[..., Any], params: Any, x: Any, custom: bool) -> Any:
    if custom and isinstance(x, Mapping):
        return apply_fn(params, **x)
    if custom and isinstance(x, tuple):
        return apply_fn(params, *x)
    return apply_fn(params, x)


def _dense_order(
    apply_fn: Callable[..., Any], params: Any, x: Any, custom: bool
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Scope paths of the nn.Dense modules called, in call order, and of all modules called (abstract trace)."""
    dense: list[tuple[str, ...]] = []
    every: list[tuple[str, ...]] = []

    def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            path = _path(context.module)
            every.append(path)
            if isinstance(context.module, nn.Dense):
                dense.append(path)
        return out

    def run(p: Any, xx: Any) -> Any:
        with nn.intercept_methods(interceptor):
            return _calls(apply_fn, p, xx, custom)

    jax.eval_shape(run, params, x)
    return dense, every


def _choose_layer(
    apply_fn: Callable[..., Any], params: Any, x: Any, custom: bool, layer: LayerSpec | None
) -> tuple[str, ...]:
    dense, every = _dense_order(apply_fn, params, x, custom)
    if layer is None:
        if not dense:
            raise ValueError(
                "no flax.linen.Dense module was called by apply_fn, so there is no last linear layer to measure; "
                "pass layer= (the module path, e.g. 'head' or 'block/Dense_0') whose input are the features and "
                "whose output are the outputs, or use collect_fn"
            )
        path = dense[-1]
        count = sum(p == path for p in dense)
        if count > 1:
            raise ValueError(
                f"ambiguous last Dense layer: {_path_name(path)!r} is called {count} times in one forward pass, so "
                "its input and output are not one (features, outputs) pair; pass layer= naming the module to measure"
            )
        return path
    path = _parse_layer(layer)
    count = sum(p == path for p in every)
    if count == 0:
        seen = list(dict.fromkeys(_path_name(p) for p in dense))
        called = list(dict.fromkeys(_path_name(p) for p in every))
        raise ValueError(
            f"no module with path {_path_name(path)!r} is called by apply_fn; its Dense modules are {seen} "
            f"(all modules called: {called})"
        )
    if count > 1:
        raise ValueError(
            f"layer {_path_name(path)!r} is called {count} times in one forward pass; a measured layer must be "
            "called exactly once"
        )
    return path


def last_dense(
    apply_fn: Callable[..., Any], params: Any, batch: Any, *, batch_to_input: Callable[[Any], Any] | None = None
) -> str:
    """Path of the last ``flax.linen.Dense`` that ``apply_fn(params, x)`` calls (the layer :func:`collect` uses).

    Parameters
    ----------
    apply_fn : callable
        ``apply_fn(params, x)``, e.g. ``model.apply``.
    params : pytree
        Its variables, e.g. ``{"params": ...}``.
    batch : array, tuple or dict
        One batch, read as in :func:`collect`.
    batch_to_input : callable, optional
        As in :func:`collect`.

    Returns
    -------
    str
        The module's scope path joined with ``"/"`` (e.g. ``"Dense_1"``, ``"block/head"``).

    Raises
    ------
    ValueError
        When no ``nn.Dense`` is called, or the last one is called several times per forward pass.
    """
    x, _ = _split_batch(batch, batch_to_input, False)
    return _path_name(_choose_layer(apply_fn, params, x, batch_to_input is not None, None))


def _capture_fn(
    apply_fn: Callable[..., Any], path: tuple[str, ...], custom: bool
) -> Callable[[Any, Any], tuple[jax.Array, jax.Array]]:
    """A jitted ``(params, x) -> (feature rows, output rows)`` capturing the module at ``path``."""

    def extract(params: Any, x: Any) -> tuple[jax.Array, jax.Array]:
        got: list[tuple[Any, Any]] = []

        def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and _path(context.module) == path:
                feat = _first_array(args)
                if feat is None:
                    feat = _first_array(kwargs.values())
                got.append((feat, _output_array(out)))
            return out

        with nn.intercept_methods(interceptor):
            _calls(apply_fn, params, x, custom)
        if len(got) != 1:
            what = "was not called" if not got else f"was called {len(got)} times"
            raise ValueError(
                f"layer {_path_name(path)!r} {what} in the forward pass; a measured layer must be called exactly "
                "once per forward pass"
            )
        feat, out = got[0]
        if feat is None or out is None:
            raise ValueError(
                f"layer {_path_name(path)!r} must take an array input and return an array (or a tuple starting "
                "with one); pass layer= naming a module that does"
            )
        return _rows(jnp.asarray(feat), jnp.asarray(out))

    return jax.jit(extract)


# ---------------------------------------------------------------------------------------------- the loop
def _run(
    make_step: Callable[[Any], Callable[[Any], tuple[Any, Any]]],
    data: Iterable[Any],
    *,
    max_batches: int | None,
    progress: bool,
    labels: bool | Callable[[Any], Any],
    num_classes: int | None,
    precision: str,
    blocks: int | None,
    batch_to_input: Callable[[Any], Any] | None,
    dump: str | os.PathLike[str] | None,
) -> DLRStats:
    """Statistics of ``step(x) -> (feature rows, output rows)`` over ``data``; ``step = make_step(first batch)``."""
    first, it, total = first_and_total(data, max_batches)
    step = make_step(first)

    def run(x: Any, nb: int) -> BatchRows | None:
        feats, outs = step(x)
        if not is_device_input(feats):  # GPU arrays go to CuPy through DLPack when it is installed
            feats, outs = np.asarray(feats), np.asarray(outs)
        if feats.shape[0] == 0:
            return None
        leaves = jax.tree_util.tree_leaves(x)
        n_batch = int(leaves[0].shape[0]) if leaves and np.ndim(leaves[0]) else feats.shape[0]
        return BatchRows(feats, outs, n_batch=n_batch)

    stats = DLRStats(num_classes=num_classes, precision=precision, blocks=blocks)
    feed_batches(
        itertools.chain([first], it), total, split=lambda batch: _split_batch(batch, batch_to_input, labels),
        run=run, stats=stats, max_batches=max_batches, progress=progress, dump=dump,
    )
    if stats.n == 0:
        raise ValueError("no samples were collected: every batch was empty")
    return stats


def collect(
    apply_fn: Callable[..., Any],
    params: Any,
    data: Iterable[Any],
    *,
    layer: LayerSpec | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    labels: bool | Callable[[Any], Any] = True,
    num_classes: int | None = None,
    precision: str = "auto",
    blocks: int | None = None,
    batch_to_input: Callable[[Any], Any] | None = None,
    dump: str | os.PathLike[str] | None = None,
) -> DLRStats:
    """Run ``apply_fn(params, x)`` over ``data`` and accumulate the D_LR statistics of its last Dense layer.

    Parameters
    ----------
    apply_fn : callable
        ``apply_fn(params, x)`` calling Flax linen modules, e.g. ``model.apply`` or
        ``lambda v, x: model.apply(v, x, train=False)``.
    params : pytree
        The variables passed as the first argument, e.g. ``{"params": params}``.
    data : iterable of batches
        Arrays, tuples ``(x, y, ...)`` or dicts, see the module docstring. A one-shot iterator is consumed once.
    layer : str or sequence of str, optional
        Scope path of the module whose input are the features and whose output are the outputs: ``"Dense_1"``,
        ``"block/head"`` or ``("block", "head")``. Default: the last ``nn.Dense`` called, found by an abstract
        trace of the first batch.
    max_batches : int, optional
        Stop after this many batches.
    progress : bool
        Show a progress display on stderr for passes lasting more than two seconds.
    labels : bool or callable
        True: labels from the batches when present; False: none; a callable: ``labels(batch)``. Labels that do
        not fit the samples are dropped with a warning.
    num_classes : int, optional
        Number of classes for integer labels (default: the output width C).
    precision : {"auto", "float32", "float64"}
        Precision of the products, see :class:`dlrcore.DLRStats`.
    blocks : int, optional
        Keep the statistics in this many row blocks for jackknife error bars (``result().stderr``), see
        :class:`dlrcore.DLRStats` and docs/uncertainty.md.
    batch_to_input : callable, optional
        ``batch_to_input(batch)`` gives the model input: a dict is passed as keyword arguments, a tuple as
        positional arguments after ``params``, anything else as the single argument.
    dump : path, optional
        A folder to also write the rows measured to, appended batch by batch (memory stays at one batch):
        ``features.npy``, ``outputs.npy`` and ``labels.npy`` (when labels are used), for ``dlr compute
        DIR/features.npy DIR/outputs.npy --labels DIR/labels.npy`` later (the same statistics).

    Returns
    -------
    DLRStats
        The statistics (``.result()`` is D_LR).

    Raises
    ------
    ValueError
        Empty data, no ``nn.Dense`` called, a layer path that is not called, or one called several times.
    DLRInputError
        Data the core rejects (NaN, shapes that change between batches, labels in some batches only, ...).
    """
    check_max_batches(max_batches)
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable (e.g. model.apply), got {type(apply_fn).__name__}")
    custom = batch_to_input is not None

    def make_step(first: Any) -> Callable[[Any], tuple[jax.Array, jax.Array]]:
        """The jitted capture of the layer, chosen by an abstract trace on the first batch."""
        x0, _ = _split_batch(first, batch_to_input, False)
        try:
            path = _choose_layer(apply_fn, params, x0, custom, layer)
        except jax.errors.UnexpectedTracerError as exc:  # pragma: no cover - lifted transforms
            raise ValueError(
                "the layer could not be traced (inside nn.scan / nn.remat / nn.vmap?); use collect_fn with a "
                f"function returning (features, outputs): {exc}"
            ) from exc
        fn = _capture_fn(apply_fn, path, custom)
        return lambda x: fn(params, x)

    return _run(make_step, data, max_batches=max_batches, progress=progress, labels=labels,
                num_classes=num_classes, precision=precision, blocks=blocks, batch_to_input=batch_to_input, dump=dump)


def collect_fn(
    features_and_outputs_fn: Callable[[Any], tuple[Any, Any]],
    data: Iterable[Any],
    *,
    jit: bool = True,
    max_batches: int | None = None,
    progress: bool = True,
    labels: bool | Callable[[Any], Any] = True,
    num_classes: int | None = None,
    precision: str = "auto",
    blocks: int | None = None,
    batch_to_input: Callable[[Any], Any] | None = None,
    dump: str | os.PathLike[str] | None = None,
) -> DLRStats:
    """Accumulate D_LR statistics of a plain function ``x -> (features, outputs)`` over ``data``.

    Parameters
    ----------
    features_and_outputs_fn : callable
        ``fn(x)`` returning ``(features, outputs)`` with a leading batch axis (flattened per sample; token-wise
        shapes ``(batch, seq, .)`` give a sample per token). Close over the parameters.
    data : iterable of batches
        As in :func:`collect`.
    jit : bool
        Wrap the function in :func:`jax.jit` (skipped when it is already jitted).
    max_batches, progress, labels, num_classes, precision, batch_to_input, dump
        As in :func:`collect` (``batch_to_input`` gives the single argument of the function).

    Returns
    -------
    DLRStats
    """
    check_max_batches(max_batches)
    if not callable(features_and_outputs_fn):
        raise TypeError(f"features_and_outputs_fn must be callable, got {type(features_and_outputs_fn).__name__}")

    def rows(x: Any) -> tuple[jax.Array, jax.Array]:
        res = features_and_outputs_fn(x)
        if not isinstance(res, (tuple, list)) or len(res) != 2:
            raise ValueError("features_and_outputs_fn must return a pair (features, outputs)")
        return _rows(jnp.asarray(res[0]), jnp.asarray(res[1]))

    step = jax.jit(rows) if jit else rows
    return _run(lambda first: step, data, max_batches=max_batches, progress=progress, labels=labels,
                num_classes=num_classes, precision=precision, blocks=blocks, batch_to_input=batch_to_input, dump=dump)
