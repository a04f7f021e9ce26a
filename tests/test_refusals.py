"""Redis refusing writes is an outage to ride out, not a crash.

With orders in flight on two real workers, the test's own server refuses writes for
3 s, four ways in turn: out of memory (``maxmemory`` 1mb with ``noeviction``), a failed
snapshot (``MISCONF``: ``stop-writes-on-bgsave-error`` after a ``BGSAVE`` into a
directory that is gone), a demoted master (``READONLY``: it becomes a replica of its
own replica, then master again) and a script running too long (``BUSY``). Every time:
the same worker processes stay up, nothing is logged as unrecoverable, and every order
completes with one charge, one reservation and one shipment.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from fulfillment.orders.state import OrderStatus

from .servers import OwnServer
from .support import Deployment, order_doc, wait_until

pytestmark = pytest.mark.slow

REFUSE_FOR = 3.0
ORDERS = 30


def _oom(r: redis.Redis) -> Callable[[], None]:
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1mb")
    return lambda: r.config_set("maxmemory", "0")


def _misconf(r: redis.Redis, server: OwnServer) -> Callable[[], None]:
    gone = server.data_dir / "gone"
    gone.mkdir()
    r.config_set("dir", str(gone))
    gone.rmdir()
    r.config_set("save", "3600 1")  # writes stop after a failed snapshot only with save points
    r.bgsave()
    wait_until(
        lambda: r.info("persistence")["rdb_last_bgsave_status"] == "err", 10, "BGSAVE to fail"
    )

    def heal() -> None:
        r.config_set("dir", str(server.data_dir))
        r.bgsave()
        wait_until(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "ok", 10, "BGSAVE")
        r.config_set("save", "")

    return heal


def _readonly(r: redis.Redis, replica: redis.Redis) -> Callable[[], None]:
    replica.replicaof("NO", "ONE")  # the replica has everything; the master follows it
    r.replicaof("127.0.0.1", str(replica.connection_pool.connection_kwargs["port"]))
    return lambda: r.replicaof("NO", "ONE")


def _busy(r: redis.Redis, url: str) -> Callable[[], None]:
    r.config_set("busy-reply-threshold", "100")  # BUSY replies after 100 ms of a script
    script = ("local t = redis.call('TIME'); local stop = tonumber(t[1]) * 1e6 + t[2] + ARGV[1];"
              "while true do local n = redis.call('TIME');"
              " if tonumber(n[1]) * 1e6 + n[2] >= stop then return 1 end end")  # fmt: skip
    busy = threading.Thread(
        target=lambda: redis.Redis.from_url(url).eval(script, 0, int(REFUSE_FOR * 1e6)),
        daemon=True,
    )
    busy.start()
    return lambda: busy.join(10)


def _refused(r: redis.Redis) -> bool:
    try:
        r.set("fulfillment:test:probe", "1")
    except redis.ResponseError:
        return True
    return False


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Deployment, OwnServer, OwnServer]]:
    extra = ("--enable-protected-configs", "yes")  # CONFIG SET dir, for MISCONF
    with (
        OwnServer(tmp_path / "a", extra=extra) as server,
        OwnServer(tmp_path / "b", extra=("--replicaof", "127.0.0.1", str(server.port))) as replica,
    ):
        d = Deployment(server.url, tmp_path / "dep", FULFILLMENT_SERVICE_LATENCY="0.2")
        try:
            yield d, server, replica
        finally:
            d.close()


def test_workers_ride_out_refused_writes(stack: tuple[Deployment, OwnServer, OwnServer]) -> None:
    d, server, replica_server = stack
    r = redis.Redis.from_url(server.url, decode_responses=True)
    replica = redis.Redis(port=replica_server.port, decode_responses=True)
    workers = [d.start_worker(concurrency=2, wait=False) for _ in range(2)]
    for w in workers:
        d.wait_for_worker(w)
    pids = [w.pid for w in workers]
    refusals = {
        "OOM": lambda: _oom(r),
        "MISCONF": lambda: _misconf(r, server),
        "READONLY": lambda: _readonly(r, replica),
        "BUSY": lambda: _busy(r, server.url),
    }
    for kind, refuse in refusals.items():
        ids = [d.client.place_order(order_doc()).id for _ in range(ORDERS)]
        wait_until(lambda ids=ids: d.client.get_order(ids[0]).status is not OrderStatus.PENDING,
                   30, "the batch to be under way")  # fmt: skip
        heal = refuse()
        started = time.monotonic()
        wait_until(lambda: _refused(r), 10, f"{kind}: the server to refuse writes")
        time.sleep(max(0.0, REFUSE_FOR - (time.monotonic() - started)))  # the outage itself
        heal()
        wait_until(lambda: not _refused(r), 30, f"{kind}: the server to take writes again")
        d.wait_all_settled(ids, 90)
        for order_id in ids:
            view = d.client.get_order(order_id)
            assert view.status is OrderStatus.COMPLETED, (kind, d.explain(order_id))
            effects = [
                d.ledger(order_id).get(f"{e}_effects") for e in ("charge", "reserve", "ship")
            ]
            assert effects == ["1", "1", "1"], (kind, order_id, d.ledger(order_id))
        assert [w.pid for w in workers if w.alive()] == pids, f"{kind}: a worker died"
    for w in workers:
        log = w.log.read_text()
        assert "Unrecoverable" not in log and "CRITICAL" not in log, log[-4000:]
    with contextlib.suppress(redis.RedisError):
        r.close()
