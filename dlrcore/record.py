"""One dict/JSON protocol for every result: :class:`Record`, a mixin for frozen dataclasses.

``to_dict`` gives plain JSON-compatible values (arrays become lists, tuples lists, nested records dicts);
``from_dict`` reads them back and validates every field against its annotation (unknown or missing fields, wrong
types and non-finite values where a count is expected all raise :class:`~dlrcore.inputs.DLRInputError` naming the
field), so a result loaded from a file is as trustworthy as one computed. ``float(result)`` is its ``value``.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Toy(Record):
...     value: float
...     n: int
>>> Toy.from_json(Toy(0.5, 10).to_json())
Toy(value=0.5, n=10)
>>> Toy.from_dict({"value": 0.5, "n": "10"})
Traceback (most recent call last):
...
dlrcore.inputs.DLRInputError: Toy.n: expected an integer, got '10'
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar, Union

import numpy as np

from .inputs import DLRInputError

__all__ = ["Record"]

R = TypeVar("R", bound="Record")


class Record:
    """Mixin for the frozen dataclasses that dlrcore returns: dict/JSON out, validated dict/JSON in."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-compatible values (arrays and tuples become lists, records dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (keyword arguments go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Fill fields that files written by older dlrcore versions lack (none here)."""
        return d

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """Rebuild from :meth:`to_dict` output, every field checked against its annotation.

        Raises
        ------
        DLRInputError
            For a field that is unknown, missing or of the wrong type.
        """
        if not isinstance(d, dict):
            raise DLRInputError(f"{cls.__name__}: expected a dict of fields, got {type(d).__name__}")
        d = cls._upgrade(dict(d))
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise DLRInputError(f"{cls.__name__}: unknown field(s) {unknown}")
        missing = sorted(
            name for name, f in fields.items()
            if name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise DLRInputError(f"{cls.__name__}: missing field(s) {missing}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _checked(v, hints[k], f"{cls.__name__}.{k}") for k, v in d.items()})

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        """Rebuild from :meth:`to_json` output (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DLRInputError(f"{cls.__name__}: not JSON ({exc})") from None
        return cls.from_dict(data)

    def __float__(self) -> float:
        return float(self.value)  # type: ignore[attr-defined]  # every record has a headline ``value``


def _plain(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, np.ndarray):
        return [float(x) for x in v.reshape(-1)]
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return v


def _checked(v: Any, hint: Any, where: str) -> Any:
    """``v`` converted to the annotated type ``hint`` (``X | None``, int, float, str, bool, tuple[str, ...],
    ndarray or a nested record), or a DLRInputError naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _checked(v, inner, where)
    if hint is bool:
        if not isinstance(v, (bool, np.bool_)):
            raise DLRInputError(f"{where}: expected true or false, got {v!r}")
        return bool(v)
    if hint is int:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise DLRInputError(f"{where}: expected an integer, got {v!r}")
        return int(v)
    if hint is float:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise DLRInputError(f"{where}: expected a number, got {v!r}")
        return float(v)
    if hint is str:
        if not isinstance(v, str):
            raise DLRInputError(f"{where}: expected a string, got {v!r}")
        return v
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise DLRInputError(f"{where}: expected a list, got {v!r}")
        (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return tuple(_checked(x, item, f"{where}[{i}]") for i, x in enumerate(v))
    if hint is np.ndarray:
        if isinstance(v, np.ndarray):
            return v
        if not isinstance(v, (list, tuple)) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
        ):
            raise DLRInputError(f"{where}: expected a list of numbers, got {str(v)[:80]}")
        return np.asarray(v, dtype=np.float64)
    if isinstance(hint, type) and issubclass(hint, Record):
        if isinstance(v, hint):
            return v
        return hint.from_dict(v)
    raise TypeError(f"{where}: no rule for fields of type {hint!r}")  # pragma: no cover - a new field type

