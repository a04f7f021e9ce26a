"""The local topology as child processes: embedded server, N workers, Flower.

``fulfillment up`` is docker compose without Docker: the same services, as plain
processes, stopped together on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ..engine.keys import SharedKeys
from ..engine.replies import US
from ..orders.errors import ConfigError
from ..orders.settings import Settings
from . import embedded


def worker_command(
    name: str,
    *,
    queue: str,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
    app: str = "fulfillment",
) -> list[str]:
    """``celery worker`` as this project runs it (prefork: it enforces time limits).

    ``app``: the module of the Celery app (another app with workflows of its own).
    """
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "prefork"]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    cmd += ["--hostname", name, "--queues", queue, "--loglevel", loglevel]
    cmd += ["--without-gossip", "--without-mingle", *extra]
    return cmd


def flower_command(settings: Settings, extra: Sequence[str] = ()) -> list[str]:
    """Flower on the same broker, keeping its state across restarts."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "fulfillment",
        "flower",
        f"--port={settings.flower_port}",
        f"--address={settings.flower_address}",
        "--persistent=True",
        f"--db={Path(settings.data_dir).expanduser() / 'flower.db'}",
        "--state_save_interval=5000",
        # The order id and the masked summary are in args/kwargs: show them first.
        "--tasks_columns=name,uuid,state,args,kwargs,result,started,runtime,retries,worker",
        *extra,
    ]


class ProcessGroup:
    """Child processes started together and stopped together (last started, first stopped)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or dict(os.environ)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: list[IO[bytes]] = []
        self._specs: dict[str, tuple[list[str], Path | None]] = {}

    def start(self, label: str, cmd: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        self._specs[label] = (cmd, log)
        out: IO[bytes] | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(out)
        # a session of its own: a Ctrl-C in the terminal reaches the parent only, which
        # then stops the children in order (stop)
        proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=out, start_new_session=True)
        self.procs.append((label, proc))
        return proc

    def restart(self, label: str) -> subprocess.Popen[bytes]:
        """Start ``label`` again with the same command (it exited)."""
        self.procs = [(name, p) for name, p in self.procs if name != label]
        cmd, log = self._specs[label]
        return self.start(label, cmd, log)

    def exited(self) -> list[tuple[str, int]]:
        """Children that exited, with their exit codes."""
        return [(label, p.returncode) for label, p in self.procs if p.poll() is not None]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL whatever is left after ``timeout``.

        The server goes last: a worker's warm shutdown hands the messages it holds but
        has not started back to the broker, which must still be there to take them (a
        step it was running finishes first, within its time limit).
        """
        deadline = time.monotonic() + timeout
        servers = [p for label, p in self.procs if label == "server"]
        others = [p for label, p in reversed(self.procs) if label != "server"]
        for tier in (others, servers):
            for proc in tier:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            for proc in tier:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in self._logs:
            log.close()
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(group: ProcessGroup, settings: Settings, timeout: float = 20.0) -> str:
    """Run the embedded server as a child of ``group``; return its URL."""
    data_dir = Path(settings.data_dir).expanduser().resolve()
    cmd = [
        sys.executable,
        "-m",
        "fulfillment.ops.embedded",
        "serve",
        "--data-dir",
        str(data_dir),
    ]
    proc = group.start("server", cmd, log=data_dir / embedded.LOG_FILE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = embedded.running_url(data_dir)
        if url:
            return url
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise ConfigError(f"embedded server did not start; see {data_dir / embedded.LOG_FILE}")


def live_workers(client, settings: Settings) -> list[str]:
    """Workers whose heartbeat is recent (``worker_dead_after``), by id."""
    now_s, now_us = client.time()
    now = now_s * US + now_us
    workers = SharedKeys(settings.key_namespace).workers
    return list(client.zrangebyscore(workers, now - int(settings.worker_dead_after * US), "+inf"))


def wait_for_workers(client, settings: Settings, names: list[str], timeout: float) -> None:
    """Block until every worker in ``names`` (node names) heartbeats."""
    deadline = time.monotonic() + timeout
    hostname = os.uname().nodename
    expected = {name.replace("%h", hostname) for name in names}
    while time.monotonic() < deadline:
        alive = {worker.rsplit(":", 1)[0] for worker in live_workers(client, settings)}
        if expected <= alive:
            return
        time.sleep(0.1)
    raise ConfigError(f"workers {sorted(expected)} did not come up within {timeout:.0f}s")
