"""Django: a real project made in a temporary directory from the document's own blocks
(docs/operations.md, "Django": ``proj/settings.py``, ``proj/celery.py``,
``proj/__init__.py``), a worker of the project's own Celery app, and orders approved
through ``python manage.py approve_order``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fulfillment.orders.state import OrderStatus

from .support import EXPENSIVE, REPO, SCALED, Deployment, base_env, kill_tree, order_doc

pytest.importorskip("django")

DOC = REPO / "docs" / "operations.md"

#: what ``django-admin startproject`` would have put in settings.py (what matters here)
STARTPROJECT = """
SECRET_KEY = "test-only"
DEBUG = False
DATABASES = {}
USE_TZ = True
"""

#: the test's own server and data directory, over the document's example values
TEST_VALUES = """
FULFILLMENT.update({{"REDIS_URL": {url!r}, "DATA_DIR": {data!r}, "APPROVAL_TIMEOUT": 120,
                    "service_latency": 0}})
"""


def documented(path: str) -> str:
    """The document's block that starts with ``# <path>``."""
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(f"# {path}:"):
            return block
    raise AssertionError(f"docs/operations.md has no block for {path}")


MANAGE = """
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""


class Project:
    """A Django project on disk, with its environment (no FULFILLMENT_REDIS_URL in it)."""

    def __init__(self, root: Path, d: Deployment) -> None:
        self.root = root
        (root / "proj").mkdir(parents=True)
        (root / "proj" / "__init__.py").write_text(documented("proj/__init__.py"))
        # the "..." of INSTALLED_APPS stands for what startproject lists: none needed here
        settings = documented("proj/settings.py").replace("[..., ", "[")
        values = TEST_VALUES.format(url=d.url, data=str(root / "data"))
        (root / "proj" / "settings.py").write_text(STARTPROJECT + settings + values)
        (root / "proj" / "celery.py").write_text(documented("proj/celery.py"))
        (root / "manage.py").write_text(textwrap.dedent(MANAGE))
        self.env = {**base_env(), **SCALED, "PYTHONPATH": f"{root}:{REPO}"}
        self.env.pop("FULFILLMENT_SERVICE_LATENCY")  # settings.py says 0
        self.workers: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root, env={**self.env, "COLUMNS": "200"}, input=input,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def start_worker(self) -> None:
        log = (self.root / "worker.log").open("ab")
        cmd = [sys.executable, "-m", "celery", "-A", "proj", "worker", "-l", "INFO",
               "-c", "1", "-n", "django@%h", "--without-gossip", "--without-mingle"]  # fmt: skip
        self.workers.append(
            subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=log, stderr=log)
        )

    def stop(self) -> None:
        for proc in self.workers:
            kill_tree(proc.pid)
            proc.wait(10)


@pytest.fixture
def project(deploy, tmp_path: Path) -> Iterator[tuple[Project, Deployment]]:  # type: ignore[no-untyped-def]
    d = deploy()
    p = Project(tmp_path / "site", d)
    try:
        yield p, d
    finally:
        p.stop()


def test_approve_a_waiting_order_with_manage_py(project, oid: str) -> None:  # type: ignore[no-untyped-def]
    p, d = project
    p.start_worker()
    placed = p.manage("place_order", "-", input=json.dumps(order_doc(EXPENSIVE, order_id=oid)))
    assert placed.returncode == 0 and placed.stdout.strip() == oid, placed.stderr
    d.wait_status(oid, OrderStatus.AWAITING_APPROVAL, timeout=60)

    approved = p.manage("approve_order", oid, "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"{oid}: approved by alice; running"
    done = d.wait(oid, timeout=60)
    assert done.status is OrderStatus.COMPLETED, d.explain(oid)
    # the project's worker ran the steps (its node name), with settings from settings.py
    workers = {a.worker for s in d.client.timeline(oid).steps for a in s.attempts}
    assert workers and all(w and w.startswith("django@") for w in workers), workers

    again = p.manage("approve_order", oid)
    assert again.returncode == 1, again
    assert again.stderr == (
        f"error: cannot approve order {oid}: it is already completed (approval approved by alice)\n"
    )
    shown = p.manage("show_order", oid, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["order"]["status"] == "completed"
    listed = p.manage("list_orders", "--status", "completed", "--json")
    assert [o["id"] for o in json.loads(listed.stdout)] == [oid], listed.stderr


def test_the_other_commands_match_the_cli(project, oid: str) -> None:  # type: ignore[no-untyped-def]
    p, d = project
    p.start_worker()
    waiting = f"{oid}-r"
    for order_id in (oid, waiting):
        placed = p.manage(
            "place_order", "-", input=json.dumps(order_doc(EXPENSIVE, order_id=order_id))
        )
        assert placed.returncode == 0, placed.stderr
    for order_id in (oid, waiting):
        d.wait_status(order_id, OrderStatus.AWAITING_APPROVAL, timeout=60)
    rejected = p.manage("reject_order", oid, "--reason", "too big")
    assert rejected.returncode == 0 and "rejected" in rejected.stdout, rejected.stderr
    assert d.wait(oid).failure.message == "too big"  # type: ignore[union-attr]
    cancelled = p.manage("cancel_order", waiting, "--by", "bob")
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"{waiting}: cancelled"
    cheap = f"{oid}-w"
    waited = p.manage("place_order", "-", "--wait", input=json.dumps(order_doc(order_id=cheap)))
    assert waited.returncode == 0 and waited.stdout.startswith(f"{cheap}: Order fulfilled")
    missing = p.manage("show_order", "nope")
    assert (
        missing.returncode == 1
        and missing.stderr.startswith("error: ")
        and (missing.stderr.count("\n") == 1)
    ), missing.stderr
    bad = p.manage("place_order", "-", input="{")
    cli = d.cli("submit", "-", input="{")
    assert (bad.returncode, bad.stderr) == (cli.returncode, cli.stderr)


def test_unknown_fulfillment_setting_is_named(project) -> None:  # type: ignore[no-untyped-def]
    p, _ = project
    settings = p.root / "proj" / "settings.py"
    settings.write_text(settings.read_text() + "FULFILLMENT['APROVAL_TIMEOUT'] = 5\n")
    out = p.manage("list_orders")
    assert out.returncode != 0
    assert "FULFILLMENT: unknown setting 'APROVAL_TIMEOUT'" in out.stderr, out.stderr


def test_a_usage_error_is_one_line(project) -> None:  # type: ignore[no-untyped-def]
    p, _ = project
    out = p.manage("approve_order")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: the following arguments are required: order_id "
        "(see 'manage.py approve_order --help')"
    ]
