"""Array namespaces: one code path for NumPy, CuPy and any library that follows the array API standard.

The sketch estimators (:mod:`dlrcore.sketch`) do their heavy work (per-batch products, accumulators) in the
namespace of the arrays they are given, so CuPy arrays stay on the GPU; small final factorisations run on the
host in NumPy. :func:`namespace` uses ``array-api-compat`` when it is installed and falls back to NumPy itself
for NumPy arrays (NumPy 2 implements the standard). Nothing here imports CuPy unless a GPU tensor arrives.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .inputs import DLRInputError, as_matrix

__all__ = ["astype", "device_array", "is_device_input", "is_numpy", "namespace", "prepare", "to_numpy"]


def is_numpy(xp: ModuleType) -> bool:
    """True for NumPy itself and array-api-compat's NumPy wrapper."""
    return xp is np or getattr(xp, "__name__", "").endswith("compat.numpy")


def namespace(*arrays: Any) -> ModuleType:
    """The array-API namespace of ``arrays`` (all must share it).

    Examples
    --------
    >>> is_numpy(namespace(np.ones(3)))
    True
    """
    try:
        import array_api_compat
    except ImportError:
        if all(isinstance(a, np.ndarray) for a in arrays):
            return np
        spaces = {a.__array_namespace__() for a in arrays if hasattr(a, "__array_namespace__")}
        if len(spaces) != 1:
            raise TypeError(
                "arrays from different libraries, or without an array API namespace, were mixed"
            ) from None
        return spaces.pop()
    return array_api_compat.array_namespace(*arrays)


def astype(xp: ModuleType, x: Any, dtype: Any) -> Any:
    """``x`` converted to ``dtype`` (no copy when it already has it)."""
    if x.dtype == dtype:
        return x
    if hasattr(xp, "astype"):
        return xp.astype(x, dtype)
    return x.astype(dtype)


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of an array from any namespace (CuPy through ``.get()``)."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    if callable(get) and type(x).__module__.startswith("cupy"):
        return get()
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError):
        return np.from_dlpack(x)


def device_array(xp: ModuleType, a: np.ndarray, like: Any) -> Any:
    """The host array ``a`` moved into ``xp`` on the device of ``like``."""
    if is_numpy(xp):
        return a
    try:
        import array_api_compat

        return xp.asarray(a, device=array_api_compat.device(like))
    except ImportError:
        return xp.asarray(a)


def _module(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def _on_gpu(x: Any) -> bool:
    dev = getattr(x, "device", None)
    kind = getattr(dev, "type", None) or getattr(dev, "platform", None)
    if callable(getattr(x, "devices", None)):  # JAX arrays
        try:
            kind = next(iter(x.devices())).platform
        except (StopIteration, TypeError):
            pass
    return kind in ("cuda", "gpu", "rocm")


def is_device_input(x: Any) -> bool:
    """True for arrays that the array-API path keeps in their own namespace: CuPy and other array-API arrays
    that are not NumPy, and CUDA torch tensors / JAX GPU arrays when CuPy can take them through DLPack."""
    mod = _module(x)
    if mod in ("numpy", "builtins", "dask"):
        return False
    if mod in ("torch", "jax", "jaxlib"):
        if not _on_gpu(x):
            return False
        try:
            import cupy  # noqa: F401
        except ImportError:
            return False
        return True
    return hasattr(x, "__array_namespace__") and hasattr(x, "shape")


def prepare(x: Any, name: str, *, allow_1d: bool = False) -> tuple[ModuleType, Any]:
    """Return ``(xp, array)``: device and array-API arrays stay in their namespace, the rest become NumPy.

    CuPy arrays and arrays of other array-API libraries (``array_api_strict``) are kept; a CUDA ``torch.Tensor``
    or a JAX GPU array becomes a CuPy array through DLPack (no copy to the host) when CuPy is installed, else an
    error says to move it; everything else goes through :func:`dlrcore.inputs.as_matrix`.

    Raises
    ------
    DLRInputError
        For non-numeric, complex or wrongly shaped data.
    """
    mod = _module(x)
    if mod in ("torch", "jax", "jaxlib") and _on_gpu(x):
        try:
            import cupy
        except ImportError as exc:
            raise DLRInputError(
                f"{name}: array lives on a GPU and CuPy is not installed; install cupy to keep it there, "
                "or move it to the host"
            ) from exc
        if mod == "torch":
            x = x.detach()
        x = cupy.from_dlpack(x)
        mod = "cupy"
    if mod == "numpy" or not hasattr(x, "__array_namespace__") or mod in ("torch", "jax", "jaxlib"):
        a = as_matrix(x, name, allow_1d=allow_1d)
        return np, a
    xp = namespace(x)
    if x.ndim == 1 and allow_1d:
        x = xp.reshape(x, (x.shape[0], 1))
    if x.ndim != 2:
        raise DLRInputError(f"{name}: expected a 2-D array (samples x columns), got shape {tuple(x.shape)}")
    if xp.isdtype(x.dtype, "complex floating"):
        raise DLRInputError(f"{name}: complex dtype {x.dtype} is not supported")
    if not xp.isdtype(x.dtype, "real floating"):
        if xp.isdtype(x.dtype, ("integral", "bool")):
            x = astype(xp, x, xp.float64)
        else:
            raise DLRInputError(f"{name}: unsupported dtype {x.dtype}")
    return xp, x
