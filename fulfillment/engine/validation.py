"""One way to say what is refused: a path and a reason per problem, no input echoed; and
what text may be shown to people (names, reasons) at all."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .errors import InvalidArgument

# control characters, surrogates, private use, line and paragraph separators, and
# invisible format characters (bidi overrides) are refused; joiners are kept (emoji)
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})


def printable(value: str) -> str:
    """``value`` if it is safe to show in a terminal, a log line or a web page; else ValueError.

    Refuses control characters, line/paragraph separators and invisible format
    characters (bidi overrides can make a shown name read differently from what it is).
    """
    for char in value:
        if unicodedata.category(char) in _REFUSED_CATEGORIES and char not in _ALLOWED_FORMAT:
            raise ValueError(f"must not contain control or format characters (U+{ord(char):04X})")
    return value


def shown_text(name: str, value: object, limit: int) -> str:
    """``value`` as text that will be shown (who decided, why): one printable line of at
    most ``limit`` characters, or :class:`InvalidArgument` naming ``name``."""
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {name}: must be text")
    if len(value) > limit:
        raise InvalidArgument(f"invalid {name}: longer than {limit} characters")
    try:
        return printable(value)
    except ValueError as exc:
        raise InvalidArgument(f"invalid {name}: {exc}") from None


def field_path(loc: tuple[Any, ...], default: str = "") -> str:
    """``('items', 0, 'itemName')`` -> ``items[0].itemName``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or default


def problems(exc: ValidationError, name: Callable[[tuple[Any, ...]], str]) -> list[str]:
    """``"<name>: <reason>"`` for every error; ``name`` turns a location into what to call it.

    An error with no location (a rule across fields) is its message alone. Input values
    are never echoed: they may hold a card number or a password.
    """
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        elif err["type"] == "missing":
            reason = "field required"
        else:
            reason = err["msg"].removeprefix("Value error, ")
        where = name(err["loc"]) if err["loc"] else ""
        out.append(f"{where}: {reason}" if where else reason)
    return out


def one_line(prefix: str, items: list[str], limit: int = 5) -> str:
    """``prefix`` and the first ``limit`` problems on one line."""
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return prefix + "; ".join(items[:limit]) + more
