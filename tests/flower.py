"""A live Flower for tests: started on a free port against a deployment's broker."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from fulfillment.engine.embedded import free_port
from fulfillment.processes import flower_command

from .support import Deployment, kill_tree, wait_until


class Flower:
    def __init__(self, d: Deployment, db: Path) -> None:
        self.d = d
        self.port = free_port()
        self.db = db
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = d.workdir / "flower.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Flower:
        settings = self.d.settings.model_copy(update={"flower_port": self.port})
        cmd = flower_command(settings)
        cmd = [a for a in cmd if not a.startswith("--db=")] + [f"--db={self.db}"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.d.env, stdout=out, stderr=out)
        wait_until(self._healthy, 60, "Flower to answer")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"Flower exited:\n{self.log.read_text()[-3000:]}")
        try:
            return self.get("/healthcheck") == "OK"
        except OSError:
            return False

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read().decode()

    def tasks(self, search: str) -> list[dict[str, Any]]:
        """What Flower's Tasks page lists for a search term (its datatable endpoint)."""
        query = urllib.parse.urlencode(
            {
                "draw": 1,
                "start": 0,
                "length": 100,
                "search[value]": search,
                "order[0][column]": 0,
                "order[0][dir]": "asc",
                "columns[0][data]": "name",
            }
        )
        return json.loads(self.get(f"/tasks/datatable?{query}"))["data"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # Flower saves its state on SIGTERM
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait(5)
            self.proc = None


def settled_in_flower(flower: Flower, order_id: str, names: set[str]) -> list[dict[str, Any]]:
    """Flower's tasks of the order, once every task in ``names`` shows as succeeded."""

    def ready() -> list[dict[str, Any]] | None:
        tasks = flower.tasks(order_id)
        done = {t["name"] for t in tasks if t["state"] == "SUCCESS"}
        return tasks if names <= done else None

    return wait_until(ready, 30, f"Flower to show the tasks of {order_id}", every=0.2)


STEP_TASKS = {
    "fulfillment.process_payment",
    "fulfillment.reserve_inventory",
    "fulfillment.deliver_order",
}
