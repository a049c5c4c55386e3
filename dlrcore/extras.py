"""Optional dependencies: :func:`require` imports one, or raises an ImportError that names the pip command.

The core needs only NumPy and SciPy (and Numba for the fused kernels). Frameworks, matplotlib, Dask, zarr, h5py,
safetensors and CuPy are extras, imported only by the modules that use them, through this one function so that
every missing extra reads the same way.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import ``module``, or raise ImportError naming ``pip install "dlrcore[extra]"``.

    Examples
    --------
    >>> require("math", "none", "this example").sqrt(4.0)
    2.0
    >>> try:
    ...     require("no_such_module_dlrcore", "torch", "dlrcore.adapters.torch")
    ... except ImportError as err:
    ...     print(err)
    dlrcore.adapters.torch needs no_such_module_dlrcore: pip install "dlrcore[torch]"
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        root = module.split(".")[0]
        raise ImportError(f'{needed_by} needs {root}: pip install "dlrcore[{extra}]"') from err
