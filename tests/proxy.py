"""A small TCP proxy for fault injection: reset every connection, or stall them all.

Workers connect to Redis through it; the test reaches Redis directly. ``reset()``
aborts every open connection with a TCP RST (as a dropped NAT entry or a
restarted load balancer would); ``drop_clients()`` aborts only the clients' ends
and leaves the server's open and silent (a half-open connection);
``stall(seconds)`` stops forwarding in both directions for a while (a congested
or partitioned network), leaving the connections open.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time

from fulfillment.ops.embedded import free_port


class Proxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream = (host, upstream_port)
        self.port = free_port()
        self._listener = socket.create_server((host, self.port))
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: set[socket.socket] = set()  # upstream ends kept open by drop_clients()
        self._lock = threading.Lock()
        self._stalled_until = 0.0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="proxy")

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self) -> Proxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closing.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.2)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                _abort(client)  # upstream down: the client sees a refused connection
                continue
            pair = (client, server)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, server = pair
        peers = {client: server, server: client}
        try:
            while not self._closing.is_set():
                if time.monotonic() < self._stalled_until:
                    time.sleep(0.02)
                    continue
                ready, _, _ = select.select([client, server], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
                keep = self._held
            for sock in pair:
                if sock not in keep:
                    _abort(sock)

    def reset(self) -> int:
        """Abort every open connection (RST); returns how many."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            for sock in pair:
                _abort(sock)
        return len(pairs)

    def drop_clients(self) -> int:
        """A half-open cut: abort the clients' ends (they see a reset and reconnect) while
        the upstream ends stay open and silent, as after a client's network blip; the
        server notices only when its heartbeat times out. Returns how many."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
            self._held |= {server for _, server in pairs}
        for client, _ in pairs:
            _abort(client)
        return len(pairs)

    def stall(self, seconds: float) -> None:
        """Forward nothing, either way, for ``seconds`` (connections stay open)."""
        self._stalled_until = time.monotonic() + seconds

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._listener.close()
        self.reset()
        with self._lock:
            held, self._held = self._held, set()
        for sock in held:
            _abort(sock)


def _abort(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
