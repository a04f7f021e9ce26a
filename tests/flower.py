"""A live Flower for tests: started on a free port against a deployment's broker."""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fulfillment.ops.embedded import free_port
from fulfillment.ops.processes import flower_command

from .support import Deployment, kill_tree, wait_until


class Flower:
    def __init__(self, d: Deployment, db: Path, basic_auth: str | None = None) -> None:
        self.d = d
        self.port = free_port()
        self.db = db
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = d.workdir / "flower.log"
        #: ``user:password`` for Flower's --basic-auth (None: no auth)
        self.basic_auth = basic_auth
        self.cookies = http.cookiejar.CookieJar()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Flower:
        settings = self.d.settings.model_copy(update={"flower_port": self.port})
        cmd = flower_command(settings)
        cmd = [a for a in cmd if not a.startswith("--db=")] + [f"--db={self.db}"]
        if self.basic_auth:
            cmd.append(f"--basic-auth={self.basic_auth}")
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
        return self.request("GET", path)[1]

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | list[tuple[str, str]] | None = None,
        *,
        auth: bool = True,
        xsrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """(status, body) of one request; with Flower's basic auth unless ``auth`` is off,
        and for a POST the XSRF token (cookie and form field) unless ``xsrf`` is off."""
        creds = {}
        if self.basic_auth:
            creds["Authorization"] = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
        headers = {**(creds if auth else {}), **(headers or {})}
        data = None
        if method == "POST":
            fields = list(form.items()) if isinstance(form, dict) else list(form or [])
            if xsrf:  # a valid token (and cookie), even where the request has no credentials
                fields.append(("_xsrf", self.xsrf_token(creds)))
            data = urllib.parse.urlencode(fields).encode()
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect()
        )
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def xsrf_token(self, headers: dict[str, str]) -> str:
        for cookie in self.cookies:
            if cookie.name == "_xsrf":
                return cookie.value
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        opener.open(urllib.request.Request(self.url + "/orders", headers=headers), timeout=10)
        return next(c.value for c in self.cookies if c.name == "_xsrf")

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


#: Flower's basic auth in the Orders view's tests
AUTH = "alice:s3cret"


@contextlib.contextmanager
def orders_stack(deploy: Callable[..., Deployment]) -> Iterator[tuple[Deployment, Flower]]:
    """A deployment with Flower behind basic auth and one worker. Retries wait 30 s, so
    an order stays "retrying" until someone retries it now."""
    d = deploy(
        FULFILLMENT_RETRY_INITIAL_INTERVAL="30",
        FULFILLMENT_RETRY_MAXIMUM_INTERVAL="60",
        FULFILLMENT_APPROVAL_TIMEOUT="120",
    )
    flower = Flower(d, d.workdir / "flower.db", basic_auth=AUTH).start()
    d.start_worker(concurrency=2)
    try:
        yield d, flower
    finally:
        flower.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report a redirect (a form's answer) instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


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
