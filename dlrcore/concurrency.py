"""One re-entrant lock per state object, so that one :class:`~dlrcore.DLRStats`, :class:`~dlrcore.DLRSketch` or
:class:`~dlrcore.CKAStats` can be updated, merged, read and saved from several threads.

The lock is not part of the state: pickling drops it and unpickling (also ``copy.copy``) makes a new one, so
objects travel to worker processes and back under every multiprocessing start method.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["Locked", "locked", "locked_pair"]

F = TypeVar("F", bound=Callable[..., Any])


class Locked:
    """Mixin: ``self._lock`` (a :class:`threading.RLock`), left out of the pickled state."""

    _lock: threading.RLock

    def _init_lock(self) -> None:
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()


def locked(method: F) -> F:
    """Run ``method`` holding its object's lock."""

    @functools.wraps(method)
    def wrapper(self: Locked, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def locked_pair(a: Locked, b: Any) -> Iterator[None]:
    """Hold the locks of ``a`` and ``b`` (when it has one), always in the same order, so that ``a.merge(b)`` in one
    thread and ``b.merge(a)`` in another cannot deadlock."""
    other = getattr(b, "_lock", None)
    if other is None or b is a:
        with a._lock:
            yield
        return
    first, second = (a._lock, other) if id(a) < id(b) else (other, a._lock)
    with first, second:
        yield
