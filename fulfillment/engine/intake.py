"""What a worker accepts: the checks a message passes before kombu or Celery acts on it.

A message that fails one of them (a payload that is not JSON, a body that is not
``[args, kwargs, embed]``, time limits that are not numbers, an engine task with
arguments that are not a run id and an epoch, a task nobody registered, ...) would
otherwise raise inside kombu's consumer loop or Celery's strategy and kill the worker,
and its redelivery would kill the next one. It is refused instead: one WARNING line,
the message kept in the dead letters (:mod:`fulfillment.engine.deadletter`), and
acknowledged, so it never comes back.

Two places check: :func:`envelope_problem` for the Redis transport's raw payload
(:mod:`fulfillment.engine.transport`), and :func:`task_problem` for a decoded task
message on any broker (:mod:`fulfillment.engine.consumer`). Each returns what is wrong
in a few words, or None.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

#: what an engine task takes: a step's or gate's (run_id, epoch) or an undo's (run_id)
TaskShape = Literal["step", "undo"]

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
#: header fields that are text (or absent)
TEXT_HEADERS = ("root_id", "parent_id", "group", "shadow", "argsrepr", "kwargsrepr", "origin",
                "lang", "replaced_task_nesting")  # fmt: skip
TIME_HEADERS = ("eta", "expires")


def envelope_problem(raw: bytes | str) -> tuple[dict[str, Any] | None, str | None]:
    """The Redis transport's payload decoded, or what is wrong with it.

    kombu reads ``properties.delivery_tag``, ``properties.delivery_info.exchange`` and
    ``.routing_key``, and decodes ``body`` by ``properties.body_encoding``.
    """
    try:
        payload = json.loads(raw)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        return None, f"payload is not JSON ({_short(exc)})"
    if not isinstance(payload, dict):
        return None, f"payload is a JSON {type(payload).__name__}, not an object"
    props = payload.get("properties")
    if not isinstance(props, dict):
        return None, "payload has no properties object"
    if not isinstance(props.get("delivery_tag"), str) or not props["delivery_tag"]:
        return None, "properties.delivery_tag is missing or not text"
    info = props.get("delivery_info")
    if not isinstance(info, dict):
        return None, "properties.delivery_info is missing or not an object"
    for key in ("exchange", "routing_key"):
        if not isinstance(info.get(key), str):
            return None, f"properties.delivery_info.{key} is missing or not text"
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return None, "headers is not an object"
    for key in ("content-type", "content-encoding"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return None, f"{key} is not text"
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return None, "body is not text"
    encoding = props.get("body_encoding")
    if body and encoding is not None:
        if encoding != "base64":
            return None, f"unknown body_encoding {str(encoding)[:20]!r}"
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None, "body is not base64"
    return payload, None


def task_problem(message: Any, shapes: Mapping[str, TaskShape]) -> str | None:
    """What is wrong with a task message (kombu's ``Message``), or None.

    ``shapes``: the engine's tasks and the arguments each takes. Tasks of other
    names are checked only for Celery's own protocol (their arguments are theirs).
    """
    headers = message.headers
    if not isinstance(headers, dict):
        return "headers are not an object"
    name = headers.get("task")
    if name is None:
        return "not a task message (no task header)"
    if not isinstance(name, str) or not name:
        return "the task header is not a task name"
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "the id header is missing or not text"
    problem = _header_problem(headers)
    if problem:
        return problem
    body = _body(message)
    if isinstance(body, str):
        return body
    args, kwargs, _embed = body
    shape = shapes.get(name)
    if shape is not None:
        return _arguments_problem(shape, args, kwargs)
    return None


def _header_problem(headers: dict[str, Any]) -> str | None:
    limits = headers.get("timelimit")
    if limits is not None:
        if not isinstance(limits, list | tuple) or len(limits) != 2:
            return "timelimit is not a pair [hard, soft]"
        for which, value in zip(("hard", "soft"), limits, strict=True):
            if value is not None and not _seconds(value):
                return f"the {which} time limit is not a number of seconds: {_show(value)}"
    for key in TIME_HEADERS:
        value = headers.get(key)
        if value is not None and not _iso_time(value):
            return f"{key} is not an ISO 8601 time: {_show(value)}"
    retries = headers.get("retries")
    if retries is not None and (type(retries) is not int or retries < 0):
        return f"retries is not a whole number: {_show(retries)}"
    for key in TEXT_HEADERS:
        value = headers.get(key)
        if value is not None and not isinstance(value, str | int):
            return f"{key} is not text: {_show(value)}"
    stamped = headers.get("stamped_headers")
    if stamped is not None and not (
        isinstance(stamped, list) and all(isinstance(s, str) for s in stamped)
    ):
        return "stamped_headers is not a list of names"
    if headers.get("stamps") is not None and not isinstance(headers["stamps"], dict):
        return "stamps is not an object"
    return None


def _body(message: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any] | None] | str:
    """``(args, kwargs, embed)`` of a protocol 2 JSON body, or what is wrong with it."""
    if message.content_type != "application/json":
        return f"content type {str(message.content_type)[:40]!r} is not JSON"
    try:
        raw = message.body
        body = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        return f"the body is not JSON ({_short(exc)})"
    if not isinstance(body, list) or len(body) != 3:
        kind = f"a list of {len(body)}" if isinstance(body, list) else f"a {type(body).__name__}"
        return f"the body is {kind}, not [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list):
        return "the body's args are not a list"
    if not isinstance(kwargs, dict):
        return "the body's kwargs are not an object"
    if embed is not None and not isinstance(embed, dict):
        return "the body's embed is not an object"
    for key in ("callbacks", "errbacks", "chain"):
        links = (embed or {}).get(key)
        if links is not None and not (
            isinstance(links, list)
            and all(isinstance(s, dict) and isinstance(s.get("task"), str) for s in links)
        ):
            return f"the body's {key} is not a list of signatures"
    chord = (embed or {}).get("chord")
    if chord is not None and not isinstance(chord, dict):
        return "the body's chord is not a signature"
    return args, kwargs, embed


def _arguments_problem(shape: TaskShape, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    if not args:
        return "no run id"
    run_id = args[0]
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        return f"the run id is not a run id: {_show(run_id)}"
    if shape == "undo":
        if len(args) != 1 or kwargs:
            return "an undo takes the run id alone"
        return None
    if len(args) > 2 or set(kwargs) - {"epoch"} or (len(args) == 2 and "epoch" in kwargs):
        return "a step takes the run id and an epoch"
    epoch = args[1] if len(args) == 2 else kwargs.get("epoch", 1)
    if type(epoch) is not int or epoch < 1:
        return f"the epoch is not a whole number >= 1: {_show(epoch)}"
    return None


def _seconds(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _iso_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _show(value: Any) -> str:
    return repr(value)[:60]


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__


__all__ = ["RUN_ID", "TaskShape", "envelope_problem", "task_problem"]
