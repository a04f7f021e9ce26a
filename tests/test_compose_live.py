"""docker compose, run for real: the commands of docs/operations.md ("Docker compose"),
on a real Docker engine.

The stack is built and brought up with three workers; orders go in through the ``cli``
service, one over the threshold is approved, the worker container running an order's
step is killed with ``docker kill`` and the order completes on another worker with one
charge, one reservation and one shipment; Flower refuses a request without credentials
(401) and serves the Orders view with them (200); Redis is restarted and every order is
still there; ``down -v`` removes it all. Then the same with the RabbitMQ override.

Every ``docker compose`` command run here is one the document shows (checked). The
public images the files name cannot be pulled here (no registry), so stand-ins are
built from Debian's packages first (tests/docker_images.py). Without a Docker engine
this module skips with one line; in CI it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from typing import Any

import pytest

from fulfillment.ops.embedded import free_port

from .docker_images import build_stand_ins
from .rabbit import _unavailable
from .support import REPO, order_doc, wait_until

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "operations.md"
#: what the document says to add after ``docker compose`` for the RabbitMQ variant
RABBITMQ_FILES = "-f docker-compose.yml -f docker-compose.rabbitmq.yml "


def documented_commands() -> list[str]:
    """The ``docker ...`` lines of the document's "Docker compose" section."""
    text = DOC.read_text()
    section = text[text.index("## Docker compose") :]
    section = section[: section.index("\n## ", 5)]
    lines = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith("docker"):  # "< order.json": the order on stdin
                lines.append(re.sub(r"\s*<\s*\S+$", "", command))
    assert RABBITMQ_FILES.strip() in section, "the RabbitMQ variant's files are documented"
    return lines


def _docker_engine() -> list[str]:
    """The compose command of this machine (``docker compose``, or compose v1), or skip."""
    if shutil.which("docker") is None:
        _unavailable("no docker command")
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        _unavailable("no Docker engine answers (docker info)")
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
    if v2.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    _unavailable("neither docker compose nor docker-compose")
    raise AssertionError("unreachable")


class Stack:
    """One compose project, driven by the document's own commands."""

    def __init__(self, compose: list[str], env: dict[str, str]) -> None:
        self.compose = compose
        self.env = env
        self.documented = documented_commands()

    def run(self, command: str, *, stdin: str | None = None, check: bool = True,
            timeout: float = 600, **placeholders: str) -> Any:  # fmt: skip
        """Run ``command`` as the document writes it (``ORDER_ID`` and the like filled in;
        a variant's ``-f`` files as the document says to add them)."""
        plain = command.replace(RABBITMQ_FILES, "")
        assert plain in self.documented, f"not in docs/operations.md: {plain}"
        for name, value in placeholders.items():
            command = command.replace(name, value)
        argv = shlex.split(command)
        if argv[:2] == ["docker", "compose"]:
            argv = [*self.compose, *argv[2:]]
        out = subprocess.run(argv, cwd=REPO, env=self.env, input=stdin, capture_output=True,
                             text=True, timeout=timeout)  # fmt: skip
        if check and out.returncode != 0:
            raise AssertionError(f"{command} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def redis(self, *args: str) -> str:
        """``redis-cli`` in the redis container (what the tests read the store with)."""
        out = subprocess.run(
            [*self.compose, "exec", "-T", "redis", "redis-cli", "--no-auth-warning", "-a",
             self.env["REDIS_PASSWORD"], *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return out.stdout.strip()

    def order(self, order_id: str) -> dict[str, str]:
        fields = self.redis("HGETALL", f"fulfillment:{{{order_id}}}:order").splitlines()
        return dict(zip(fields[::2], fields[1::2], strict=False))

    def ledger(self, order_id: str) -> dict[str, str]:
        fields = self.redis("HGETALL", f"fulfillment:{{{order_id}}}:ledger").splitlines()
        return dict(zip(fields[::2], fields[1::2], strict=False))

    def workers(self) -> list[str]:
        return self.redis("ZRANGE", "fulfillment:{watchdog}:workers", "0", "-1").splitlines()

    def down(self) -> None:
        subprocess.run([*self.compose, "down", "-v", "--remove-orphans"], cwd=REPO,
                       env=self.env, capture_output=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _docker_engine()
    build_stand_ins(print)
    return command


def _stack_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILLMENT_")}
    env.update(
        COMPOSE_PROJECT_NAME=f"fulfillment-test-{uuid.uuid4().hex[:8]}",
        REDIS_PASSWORD=secrets.token_hex(16),
        FLOWER_BASIC_AUTH=f"admin:{secrets.token_hex(8)}",
        FLOWER_PORT=str(free_port()),
        # a slower service (and a time limit to match), so that a step is still running
        # when the test has found its worker and kills it
        FULFILLMENT_SERVICE_LATENCY="5",
        FULFILLMENT_STEP_TIME_LIMIT="20",
        FULFILLMENT_APPROVAL_TIMEOUT="300",
        **extra,
    )
    return env


def _flower(env: dict[str, str], auth: bool) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{env['FLOWER_PORT']}/orders")
    if auth:
        token = b64encode(env["FLOWER_BASIC_AUTH"].encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _scenario(stack: Stack, files: str) -> None:
    """The walk every variant takes (``files``: the -f flags of its commands, or "")."""
    up = f"docker compose {files}up --build -d --scale worker=3".replace("  ", " ")
    run = f"docker compose {files}run --rm".replace("  ", " ")
    stack.run(up, timeout=1800)
    wait_until(lambda: len(stack.workers()) == 3, 120, "three workers to heartbeat", every=1)

    ids = {}
    # the order whose worker is killed goes in last, and is watched at once
    for name, doc in (("big", order_doc(("Electric Cargo Bike", "4890.00", 3))),
                      ("a", order_doc()), ("b", order_doc()), ("kill", order_doc())):  # fmt: skip
        doc["id"] = f"compose-{name}-{uuid.uuid4().hex[:6]}"
        # the document's "< order.json": the order goes in on stdin
        placed = stack.run(f"{run} -T cli submit -", stdin=json.dumps(doc))
        assert placed.stdout.strip().splitlines()[-1] == doc["id"], placed.stdout
        ids[name] = doc["id"]

    # the worker container running a step of that order is killed mid-step
    running = wait_until(
        lambda: (o := stack.order(ids["kill"])).get("phase") == "running" and o,
        120, "the order's step to run", every=0.2,
    )  # fmt: skip
    victim, step = running["worker"], running["step"]
    container = victim.split("@", 1)[1].rsplit(":", 1)[0]  # celery@<container id>:<pid>
    stack.run("docker kill CONTAINER", CONTAINER=container)

    wait_until(lambda: stack.order(ids["big"]).get("status") == "waiting", 120,
               "the big order to wait for approval", every=0.5)  # fmt: skip
    approved = stack.run(f"{run} cli approve ORDER_ID --by alice", ORDER_ID=ids["big"])
    assert "approved by alice" in approved.stdout

    def settled() -> bool:
        return all(stack.order(i).get("status") == "completed" for i in ids.values())

    wait_until(settled, 180, "every order to complete", every=1)
    for order_id in ids.values():
        ledger = stack.ledger(order_id)
        effects = [ledger.get(f"{e}_effects") for e in ("charge", "reserve", "ship")]
        assert effects == ["1", "1", "1"], (order_id, ledger)
    shown = json.loads(stack.run(f"{run} cli show ORDER_ID --json", ORDER_ID=ids["kill"]).stdout)
    kinds = [e["type"] for e in shown["events"]]
    assert "attempt_lost" in kinds or "redriven" in kinds, kinds  # it failed over
    (killed_step,) = [s for s in shown["steps"] if s["name"] == step]
    finished_on = [a["worker"] for a in killed_step["attempts"] if a["outcome"] == "succeeded"]
    assert finished_on and victim not in finished_on, killed_step  # another worker did it

    # Flower: the Orders view needs credentials
    wait_until(lambda: _flower(stack.env, auth=True) == 200, 120, "Flower to serve", every=1)
    assert _flower(stack.env, auth=False) == 401

    # a restart of Redis keeps every order (append-only file on its volume)
    stack.run(f"docker compose {files}restart redis".replace("  ", " "))
    listed = wait_until(
        lambda: stack.run(f"{run} cli list --json", check=False).stdout, 120,
        "the cli to answer after the restart", every=1,
    )  # fmt: skip
    found = {o["id"]: o["status"] for o in json.loads(listed)}
    assert all(found.get(i) == "completed" for i in ids.values()), found


def test_the_compose_stack_for_real(compose: list[str]) -> None:
    stack = Stack(compose, _stack_env())
    try:
        _scenario(stack, "")
        stack.run("docker compose down -v")
    finally:
        stack.down()


def test_the_compose_stack_with_rabbitmq_for_real(compose: list[str]) -> None:
    stack = Stack(compose, _stack_env(RABBITMQ_PASSWORD=secrets.token_hex(16)))
    files = RABBITMQ_FILES
    try:
        _scenario(stack, files)
        stack.run(f"docker compose {files}down -v")
    finally:
        stack.down()
