"""The same measurements on the fulfillment pipeline."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

from fulfillment.orders.state import OrderStatus

from .harness import CpuMeter, Deployment, Server, Throughput


def order(expensive: bool = False) -> dict:
    line = (
        {"itemName": "Electric Cargo Bike", "itemPrice": "4890.00", "quantity": 3}
        if expensive
        else {"itemName": "Yoga Mat", "itemPrice": "29.90", "quantity": 1}
    )
    return {
        "id": f"b-{uuid.uuid4().hex}",
        "items": [line],
        "payment": {"creditCard": {"number": "4111111111111111", "expiration": "12/39"}},
    }


def _warm(d: Deployment, n: int = 50) -> None:
    """Run a few orders first: every pool process loads its scripts and connections."""
    handles = [d.client.place_order(order()) for _ in range(n)]
    for handle in handles:
        handle.result(timeout=60)


def throughput(
    server: Server, n: int, workers: int = 1, concurrency: int = 2, **overrides: str
) -> Throughput:
    """``overrides``: more settings (``FULFILLMENT_BROKER_URL`` for RabbitMQ)."""
    with Deployment.create(server, **overrides) as d:
        d.start_workers(workers, concurrency=concurrency)
        _warm(d)
        done_key = d.client.store.space.status_index("completed")
        base = d.redis.zcard(done_key)
        docs = [order() for _ in range(n)]
        cpu = CpuMeter(d.redis, [p.pid for p in d.workers])
        started = time.perf_counter()
        for doc in docs:
            d.client.place_order(doc)
        while d.redis.zcard(done_key) - base < n:
            time.sleep(0.002)
        return Throughput(n / (time.perf_counter() - started), cpu.per_order(n))


@contextlib.contextmanager
def sequential(
    server: Server, concurrency: int = 2, **overrides: str
) -> Iterator[Callable[[], float]]:
    """A warmed-up worker; yields ``one()``: place one order and wait for it, in ms."""
    with Deployment.create(server, **overrides) as d:
        d.start_workers(1, concurrency=concurrency)
        _warm(d)
        for _ in range(20):  # and the one-at-a-time path, before measuring it
            d.client.place_order(order()).result(timeout=30)

        def one() -> float:
            doc = order()
            started = time.perf_counter()
            d.client.place_order(doc).result(timeout=30)
            return (time.perf_counter() - started) * 1000

        yield one


def approval(server: Server, n: int, concurrency: int = 2) -> list[float]:
    with Deployment.create(server) as d:
        d.start_workers(1, concurrency=concurrency)
        _warm(d)
        times = []
        for _ in range(n):
            handle = d.client.place_order(order(expensive=True), approval_timeout=60)
            d.client.wait_for(handle.id, lambda v: v.status is OrderStatus.AWAITING_APPROVAL, 30)
            started = time.perf_counter()
            d.client.approve_order(handle.id, by="bench")
            handle.result(timeout=30)
            times.append((time.perf_counter() - started) * 1000)
        return times


def _keys(d: Deployment, order_id: str) -> tuple[str, ...]:
    k = d.client.store.space.run(order_id)
    return (k.record, k.history, d.client.store.companion(order_id, "ledger"), k.settled)


def memory(server: Server, n: int, retention: float = 3.0) -> dict[str, float]:
    """Redis bytes per finished order (record, history, ledger, doorbell), and after retention."""
    with Deployment.create(server, FULFILLMENT_RETENTION=str(retention)) as d:
        d.start_workers(1, concurrency=2)
        ids = [d.client.place_order(order()).id for _ in range(n)]
        for order_id in ids:
            d.client.wait(order_id, timeout=60)
        total = 0
        keys = 0
        for order_id in ids:
            for key in _keys(d, order_id):
                usage = d.redis.memory_usage(key, samples=0)
                if usage:
                    total += usage
                    keys += 1
        index_bytes = sum(
            d.redis.memory_usage(d.client.store.space.status_index(s), samples=0) or 0
            for s in ("completed",)
        )
        deadline = time.monotonic() + retention + 30
        while time.monotonic() < deadline:  # until the server reclaimed every key
            left = sum(d.redis.exists(*_keys(d, i)) for i in ids)
            if left == 0:
                break
            time.sleep(0.2)
        after = sum(d.redis.memory_usage(key, samples=0) or 0 for i in ids for key in _keys(d, i))
        return {
            "bytes_per_order": total / n,
            "keys_per_order": keys / n,
            "index_bytes_per_order": index_bytes / n,
            "bytes_per_order_after_retention": after / n,
            "retention_s": retention,
        }
