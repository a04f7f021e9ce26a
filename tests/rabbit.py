"""RabbitMQ for tests: the machine's broker (a vhost per test) and a node a test owns.

The shared broker on 127.0.0.1:5672 runs the pipeline, failover, backlog, race and
chaos tests in vhosts of their own. A test that must SIGKILL and restart the broker
itself starts :class:`OwnNode`: a RabbitMQ node of the machine's installation with
its own name, ports and data directory, so that killing it touches nobody else.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from bench.rabbitmq import HOST, PORT, reachable, vhost
from fulfillment.ops.embedded import free_port

from .support import wait_until

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the node itself, not the su wrapper


def _unavailable(why: str) -> None:
    """Skip the caller (a test or a module) with one line; in CI, which must run it, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run these tests)", pytrace=False)
    pytest.skip(why, allow_module_level=True)


def require_broker() -> None:
    """Skip the caller when no broker answers on HOST:PORT (fail in CI)."""
    if not reachable():
        _unavailable(f"RabbitMQ not reachable on {HOST}:{PORT}")


def amqp(vhost: str, port: int = PORT) -> str:
    """The broker URL of ``vhost`` ("" is the default vhost) on ``port``."""
    return f"amqp://guest:guest@{HOST}:{port}/{vhost}"


@contextlib.contextmanager
def broker_env(broker: str) -> Iterator[dict[str, str]]:
    """The deployment settings of ``broker``: "redis" (the store's own server) or
    "rabbitmq" (a vhost of its own on the machine's broker, a queue of its own)."""
    if broker == "redis":
        yield {}
        return
    require_broker()
    with vhost() as name:
        queue = f"fulfillment-{uuid.uuid4().hex[:8]}"  # its own even on the default vhost
        yield {"FULFILLMENT_BROKER_URL": amqp(name), "FULFILLMENT_QUEUE": queue}


def require_own_node() -> None:
    """Skip the calling test when no node of its own can start here (fail in CI)."""
    why = own_node_unavailable()
    if why is not None:
        _unavailable(f"cannot start a RabbitMQ node of the test's own: {why}")


def own_node_unavailable() -> str | None:
    """Why this machine cannot start a node of its own, or None when it can."""
    if not Path(SERVER).exists():
        return f"{SERVER} is missing (no RabbitMQ installation)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("rabbitmq")
        except KeyError:
            return "running as root without a rabbitmq user to run the node as"
    return None


class OwnNode:
    """A RabbitMQ node of the test's own: started, SIGKILLed, restarted from its data.

    It keeps its AMQP port across restarts (clients holding its URL reconnect), and
    its data directory, so durable queues and persistent messages survive a kill.
    """

    def __init__(self) -> None:
        # not under pytest's tmp_path: that is private to this user, the node runs as its own
        self.workdir = Path(tempfile.mkdtemp(prefix="fulfillment-rabbitmq-"))
        self.name = f"fulfillment-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, port: int | None = None) -> str:
        return amqp("", port or self.port)

    def _env(self) -> dict[str, str]:
        base = self.workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "HOME": str(base),  # the node makes its own Erlang cookie there
        })  # fmt: skip
        return env

    def start(self, timeout: float = 90) -> OwnNode:
        user = None
        if os.geteuid() == 0:  # RabbitMQ refuses to run as root: run it as its own user
            user = "rabbitmq"
            shutil.chown(self.workdir, user, user)
        log = (self.workdir / "node.out").open("ab")
        self.proc = subprocess.Popen(
            [SERVER], env=self._env(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            cwd=self.workdir, user=user, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_until(self._answers, timeout, f"RabbitMQ node {self.name} to accept connections",
                   every=0.25)  # fmt: skip
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = (self.workdir / "node.out").read_text(errors="replace")[-2000:]
            raise AssertionError(f"RabbitMQ node {self.name} exited:\n{tail}")
        conn = kombu.Connection(self.url(), connect_timeout=1)
        try:
            conn.connect()
            conn.default_channel.queue_declare("fulfillment-probe", auto_delete=True)
            return True
        except Exception:
            return False
        finally:
            conn.release()

    def kill(self) -> None:
        """SIGKILL the node (its whole process group): unconfirmed state is lost."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """Kill the node and remove its data."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OwnNode:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
