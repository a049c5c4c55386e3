"""Parameter checks with one wording: every integer and every choice a user passes is checked here.

Examples
--------
>>> check_int(3, "rank")
3
>>> check_int(0, "rank")
Traceback (most recent call last):
...
ValueError: rank must be a positive integer, got 0
>>> check_choice("span", "output_kernel", ("span", "sqrt"))
'span'
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

__all__ = ["check_choice", "check_int", "check_optional_int"]


def _wanted(minimum: int) -> str:
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"


def check_int(
    value: object, name: str, *, minimum: int = 1, why: str = "", error: type[ValueError] = ValueError
) -> int:
    """``value`` as an ``int`` when it is an integer (Python or NumPy, not bool) of at least ``minimum``.

    Raises
    ------
    ValueError
        ``"<name> must be a positive integer, got <value>"`` (or ``an integer >= minimum``), with ``why``
        appended in parentheses when given; of class ``error`` (a ``ValueError`` subclass such as
        :class:`~dlrcore.DLRInputError` where the number came from the data's description).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        reason = f" ({why})" if why else ""
        raise error(f"{name} must be {_wanted(minimum)}{reason}, got {value!r}")
    return int(value)


def check_optional_int(
    value: object, name: str, *, minimum: int = 1, error: type[ValueError] = ValueError
) -> int | None:
    """:func:`check_int` that lets ``None`` through (the wording then says "or None").

    Examples
    --------
    >>> check_optional_int(None, "max_batches") is None
    True
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise error(f"{name} must be {_wanted(minimum)} or None, got {value!r}")
    return int(value)


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """``value`` when it is one of ``choices``.

    Raises
    ------
    ValueError
        ``"<name> must be one of (...), got <value>"``.
    """
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value
