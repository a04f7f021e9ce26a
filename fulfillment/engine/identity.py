"""Which worker this process belongs to: ``<nodename>:<main pid>``, inherited by pool processes."""

from __future__ import annotations

import os
import socket

_worker_id: str | None = None


def set_worker_id(hostname: str) -> str:
    """Fix this worker's identity (before the pool forks, so its processes inherit it)."""
    global _worker_id
    _worker_id = f"{hostname}:{os.getpid()}"
    return _worker_id


def worker_id() -> str:
    """This worker's identity; outside a worker, this process's."""
    return _worker_id or f"{socket.gethostname()}:{os.getpid()}"
