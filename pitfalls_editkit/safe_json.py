"""JSON read from files a user hands over: parsed with bounds, every fault one line naming where it is.

The standard parser accepts what a hand-edited or hostile file can hold and
what later code cannot use: nesting deep enough to exhaust the stack, integers
of thousands of digits (an allocation sized by one), strings of gigabytes.
:func:`loads` refuses them, and turns every parse error into
:class:`JsonInputError`, whose message starts with ``where`` (a file, a line).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # the files of this project nest 5 levels at most
MAX_INT_DIGITS = 19  # an int64
MAX_STRING = 1_000_000  # characters in one string


class JsonInputError(ValueError):
    """A JSON text that cannot be used; the message names where it came from and what is wrong."""


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise OverflowError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def loads(text: str | bytes, where: str, *, allow_nan: bool = True) -> Any:
    """``json.loads`` with bounds on depth, integer size and string length; ``where`` starts every error message.

    ``allow_nan`` keeps NaN/Infinity (the harness writes them for undefined metrics); False refuses them.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError(f"{where}: not UTF-8 text (byte {exc.start})") from None

    def constant(name: str) -> float:
        if not allow_nan:
            raise ValueError(f"{name} is not a number JSON allows here")
        return float(name)

    try:
        value = json.loads(text, parse_int=_integer, parse_constant=constant)
    except RecursionError:
        raise JsonInputError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (OverflowError, ValueError) as exc:
        raise JsonInputError(f"{where}: {exc}") from None
    _check_bounds(value, where)
    return value


def _check_bounds(value: Any, where: str) -> None:
    """Depth and string length, walked level by level without recursion (``json.loads`` makes exact dicts, lists and
    strs, so ``type(...) is`` is enough, and a level is a plain list: a dataset of 100,000 values is walked in a
    fraction of its parse time)."""
    level, depth = [value], 1
    while level:
        if depth > MAX_DEPTH:
            raise JsonInputError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        deeper: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str:
                if len(item) > MAX_STRING:
                    raise JsonInputError(f"{where}: a string of {len(item)} characters (at most {MAX_STRING})")
            elif kind is dict:
                for key in item:
                    if len(key) > MAX_STRING:
                        raise JsonInputError(f"{where}: a key of {len(key)} characters (at most {MAX_STRING})")
                deeper.extend(item.values())
            elif kind is list:
                deeper.extend(item)
        level, depth = deeper, depth + 1


def is_number(value: Any) -> bool:
    """An int or float, not a bool (JSON's true is not 1 here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)
