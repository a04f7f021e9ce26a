"""Loads the Lua scripts in ``fulfillment/lua`` (each prefixed with ``lib.lua``)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

import redis

ORDER_SCRIPTS = (
    "create",
    "begin",
    "complete",
    "retry",
    "fail",
    "enter_approval",
    "decide",
    "redrive",
    "begin_compensation",
    "compensated",
    "compensation_failed",
)
SERVICE_SCRIPTS = ("charge", "refund", "reserve", "release", "ship", "cancel_shipment")
OTHER_SCRIPTS = ("tick",)


@cache
def source(name: str) -> str:
    """The full text of script ``name``: the shared library, then the script."""
    lua = files("fulfillment") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """All scripts, registered on one client (EVALSHA, reloaded after a server restart)."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts = {
            name: client.register_script(source(name))
            for name in ORDER_SCRIPTS + SERVICE_SCRIPTS + OTHER_SCRIPTS
        }

    def call(
        self, name: str, keys: list[str], args: dict[str, Any], extra: list[str] | None = None
    ) -> dict[str, Any]:
        """Run script ``name``; return its decoded JSON reply.

        ``args`` is the script's one JSON argument (``ARGV[1]``); ``extra`` are
        further arguments passed as they are (``ARGV[2]``, ...).
        """
        payload = json.dumps({k: v for k, v in args.items() if v is not None})
        return json.loads(self._scripts[name](keys=keys, args=[payload, *(extra or ())]))


def as_list(value: Any) -> list[Any]:
    """Lua's cjson encodes an empty table as ``{}``: read it as an empty list."""
    return value if isinstance(value, list) else []


def csv(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]
