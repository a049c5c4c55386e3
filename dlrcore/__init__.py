"""dlrcore: the dynamical low-rank measure D_LR of Nam et al. (ICLR 2026), exact and streaming.

D_LR compares a network's penultimate features with the span of its outputs: near 0 when the features
concentrate in the few directions the outputs use (rich dynamics), near 1 when they spread over many (lazy).

Examples
--------
>>> import numpy as np, dlrcore
>>> rng = np.random.default_rng(0)
>>> phi = rng.normal(size=(300, 40)); out = phi @ rng.normal(size=(40, 5))
>>> 0.0 <= dlrcore.dlr(phi, out).value <= 1.0
True
"""

from __future__ import annotations

from typing import Any

from .functions import METHODS as METHODS  # the method names dlr() accepts
from .functions import dlr, dlr_from_weights, spectrum
from .inputs import DLRInputError
from .measures import CKAResult, CKAStats, NC1Result, cka, nc1, s_init
from .randomized import randomized_dlr
from .result import Baseline, DLRResult
from .sketch import DLRSketch
from .spectral import Spectrum
from .stats import DLRStats

__all__ = [
    "Baseline",
    "CKAResult",
    "CKAStats",
    "DLRInputError",
    "DLRResult",
    "DLRSketch",
    "DLRStats",
    "NC1Result",
    "Spectrum",
    "__version__",
    "cka",
    "dlr",
    "dlr_from_weights",
    "nc1",
    "randomized_dlr",
    "s_init",
    "spectrum",
]
__version__ = "0.1.0"


# names that dlrcore's namespace carried before the front-door functions moved to dlrcore.functions: still
# importable from here, from their own modules
_MOVED = {
    "CENTER_LOGITS": "exact",
    "DEFAULT_OVERSAMPLE": "sketch",
    "DEFAULT_PROBES": "sketch",
    "DEFAULT_RANK": "sketch",
    "choose_method": "method_choice",
    "exact_arrays": "device_exact",
    "sketch_arrays": "sketch",
}


def __getattr__(name: str) -> Any:
    import importlib

    # dlrcore.plot on first use; the module itself imports matplotlib only when a figure is drawn
    if name == "plot":
        return importlib.import_module(".plot", __name__)
    if name in _MOVED:
        return getattr(importlib.import_module(f".{_MOVED[name]}", __name__), name)
    raise AttributeError(f"module 'dlrcore' has no attribute {name!r}")
