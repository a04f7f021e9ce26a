"""One way to say what pydantic refused: a path and a reason per problem, no input echoed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError


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
