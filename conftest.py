"""Repository-level pytest configuration: skip collecting optional-framework modules whose framework is absent."""

from __future__ import annotations

import importlib.util


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


collect_ignore = []
if _missing("torch"):  # the torch adapters' doctests need torch
    collect_ignore += ["dlrcore/adapters/torch.py", "dlrcore/adapters/hf.py"]
if _missing("transformers") or _missing("torch"):  # the Trainer callback imports transformers at load
    collect_ignore.append("dlrcore/adapters/hf_trainer.py")
if _missing("matplotlib"):  # the plot module's and the TensorBoard image's doctests draw figures
    collect_ignore += ["dlrcore/plot.py", "dlrcore/adapters/tensorboard.py"]
if _missing("jax") or _missing("flax"):
    collect_ignore.append("dlrcore/adapters/jax.py")
if _missing("keras") or _missing("tensorflow"):
    collect_ignore.append("dlrcore/adapters/keras.py")
if _missing("dask"):  # dlrcore.dask imports dask at the top (users import it explicitly)
    collect_ignore.append("dlrcore/dask.py")
