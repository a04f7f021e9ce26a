"""Runs Lua scripts: the engine's own and a workflow's (its services'), each after ``lib.lua``.

Every script documents its keys and arguments at its top. They all take one JSON
argument (``ARGV[1]``, plus any raw payloads after it) and reply with one JSON
object; :meth:`Scripts.call` is the one caller of all of them (EVALSHA, reloaded
after a server restart by redis-py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from hashlib import sha1
from importlib.resources import files
from typing import Any

import redis
from redis.cluster import RedisCluster

from .cluster import Router


@cache
def library() -> str:
    """The engine's ``lib.lua``: helpers every script may use (fencing included)."""
    return (files("fulfillment.engine") / "lua" / "lib.lua").read_text()


@cache
def source(package: str, name: str) -> str:
    """The full text of script ``name`` of ``package``'s ``lua`` directory.

    The engine's ``lib.lua`` comes first, then the package's own ``lib.lua`` if it
    has one, then the script.
    """
    lua = files(package) / "lua"
    own = lua / "lib.lua"
    parts = [library()]
    if package != "fulfillment.engine" and own.is_file():
        parts.append(own.read_text())
    parts.append((lua / f"{name}.lua").read_text())
    return "\n".join(parts)


def fenced_script(client: redis.Redis, lua: str) -> Any:
    """A script of your own (a service's effect) with the engine's ``lib.lua`` before it.

    In it, ``stale_attempt(record_key, token)`` and ``stale_claim(record_key, token)``
    say whether a call's fencing token is still the live one (nil) or why not; check
    it in the same script as the effect's write.
    """
    return client.register_script(library() + "\n" + lua)


class Scripts:
    """The scripts of one package's ``lua`` directory, registered on one client.

    On a Redis Cluster each call goes to the primary of its first key's slot
    (:class:`~fulfillment.engine.cluster.Router`); a script in ``durable`` then waits for
    ``wait`` = (replicas, timeout ms) before it returns (``WAIT``).
    """

    def __init__(
        self,
        client: redis.Redis,
        package: str,
        names: Iterable[str],
        *,
        durable: Iterable[str] = (),
        wait: tuple[int, int] | None = None,
    ) -> None:
        self._router = Router(client) if isinstance(client, RedisCluster) else None
        self._sources = {name: source(package, name) for name in names}
        self._shas = {name: sha1(text.encode()).hexdigest() for name, text in self._sources.items()}
        self._durable = frozenset(durable)
        self._wait = wait
        if self._router is None:
            self._scripts = {
                name: client.register_script(text) for name, text in self._sources.items()
            }

    def call(
        self, name: str, keys: list[str], args: dict[str, Any], extra: list[str] | None = None
    ) -> dict[str, Any]:
        """Run script ``name``; return its decoded JSON reply.

        ``args`` is the script's JSON argument (``ARGV[1]``; None values left out);
        ``extra`` are further arguments passed as they are (``ARGV[2]``, ...).
        """
        payload = json.dumps({k: v for k, v in args.items() if v is not None})
        argv = [payload, *(extra or ())]
        if self._router is None:
            reply = self._scripts[name](keys=keys, args=argv)
        else:
            wait = self._wait if name in self._durable else None
            reply = self._router.script(self._shas[name], self._sources[name], keys, argv, wait)
        return json.loads(reply)


ENGINE_SCRIPTS = (
    "create",
    "begin",
    "complete",
    "retry",
    "fail",
    "gate",
    "signal",
    "cancel",
    "retry_now",
    "resume",
    "redrive",
    "begin_undo",
    "undone",
    "undo_failed",
    "tick",
    "queued",
    "unsent",
)


#: transitions whose outcome a caller is told about: on a cluster they wait for a replica
DURABLE = ("create", "complete", "fail", "signal", "cancel", "retry_now", "resume", "unsent")


def engine_scripts(client: redis.Redis, wait: tuple[int, int] | None = None) -> Scripts:
    return Scripts(client, "fulfillment.engine", ENGINE_SCRIPTS, durable=DURABLE, wait=wait)
