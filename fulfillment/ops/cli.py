"""The ``fulfillment`` command line.

Every error prints one line (``error: ...``) on stderr and exits non-zero:
1 for a failed operation (bad order, unknown id, decision refused, failed
order with ``--wait``), 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import redis

from ..engine.errors import WorkflowError
from ..orders.errors import InvalidOrder, OrderNotFulfilled
from ..orders.settings import Settings, get_settings
from ..orders.state import OrderStatus
from . import embedded


def _client():
    from ..orders.client import default_client

    return default_client()


def _out():
    from .render import console

    return console()


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Commands(click.Group):
    """The command group: an expected error of any command, and a usage error, is one
    line on stderr."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            fail("interrupted", 130)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "fulfillment"
            fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (WorkflowError, ValueError) as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except redis.RedisError as exc:
            fail(f"cannot reach Redis: {exc}")
        except KeyboardInterrupt:
            fail("interrupted", 130)


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fulfillment")
def main() -> None:
    """Durable order fulfillment on Celery + Redis + Flower."""


# --- orders -----------------------------------------------------------------------------


@main.command()
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option("--wait", is_flag=True, help="Block until the order finishes; print the result.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
@click.option("--approval-timeout", type=float, default=None, help="Seconds to wait for approval.")
def submit(source: str, wait: bool, timeout: float | None, approval_timeout: float | None) -> None:
    """Submit an order (JSON from FILE, or stdin with '-')."""
    settings = get_settings()
    if source == "-" and sys.stdin.isatty():
        fail("no order given: name a FILE, or pipe the order in with '-' "
             "(see 'fulfillment submit --help')", 2)  # fmt: skip
    if source == "-":
        raw = sys.stdin.buffer.read(settings.max_order_bytes + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidOrder(f"no such file: {source}")
        with path.open("rb") as handle:
            raw = handle.read(settings.max_order_bytes + 1)
    handle = _client().place_order(raw, approval_timeout=approval_timeout)
    if not wait:
        click.echo(handle.id)
        _warn_if_no_broker()
        return
    try:  # from here on, an interrupt names the order: it was placed and goes on
        _warn_if_no_broker()
        _warn_if_no_worker()
        click.echo(f"{handle.id}: {handle.result(timeout)}")
    except OrderNotFulfilled as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"interrupted; order {handle.id} was placed and goes on "
             f"(see: fulfillment status {handle.id})", 130)  # fmt: skip


def _warn_if_no_broker() -> None:
    """Say so when the broker (RabbitMQ) cannot be reached: the order is stored, and its
    message is sent by a worker's watchdog once the broker takes it again."""
    from ..engine.config import is_amqp
    from ..engine.connection import redact

    client = _client()
    url = str(client.app.conf.broker_url)
    if not is_amqp(url):
        return  # the broker is the order store's Redis, which just took the order
    try:
        with client.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        click.echo(f"warning: the broker at {redact(url)} cannot be reached ({first}); the "
                   "order is stored, and its message is sent once a worker reaches the "
                   "broker", err=True)  # fmt: skip


def _warn_if_no_worker() -> None:
    """Say so when no worker is alive: the order would wait silently until one starts."""
    from .processes import live_workers

    client = _client()
    if not live_workers(client.store.client, client.settings):
        click.echo("warning: no worker is alive; the order waits until one starts "
                   "(fulfillment worker, or fulfillment up)", err=True)  # fmt: skip


@main.command()
@click.argument("order_id")
@click.option("--by", default=None, help="Who approves (default: your user name).")
def approve(order_id: str, by: str | None) -> None:
    """Approve an order that waits for approval (it resumes at once)."""
    view = _client().approve_order(order_id, by=by)
    click.echo(f"{order_id}: approved by {view.approval.by}; {view.status.value}")


@main.command()
@click.argument("order_id")
@click.option("--reason", default=None, help="Why (recorded as the failure message).")
@click.option("--by", default=None, help="Who rejects (default: your user name).")
def reject(order_id: str, reason: str | None, by: str | None) -> None:
    """Reject an order that waits for approval (it fails: ApprovalRejected)."""
    view = _client().reject_order(order_id, reason=reason, by=by)
    click.echo(f"{order_id}: rejected; {view.status.value}")


@main.command()
@click.argument("order_id")
@click.option("--reason", default=None, help="Why (recorded on the order).")
@click.option("--by", default=None, help="Who cancels (default: your user name).")
def cancel(order_id: str, reason: str | None, by: str | None) -> None:
    """Cancel an unfinished order (a running step finishes first); effects are undone."""
    client = _client()
    view = client.cancel_order(order_id, reason=reason, by=by)
    if view.status.value == "cancelled":
        click.echo(f"{order_id}: cancelled")
    elif view.status.value == "compensating":
        undoing = ", ".join(c.action for c in view.compensations)
        click.echo(f"{order_id}: cancelled; undoing its effects ({undoing}) before it reads "
                   "cancelled")  # fmt: skip
    else:
        asked = client.last_event(order_id, "cancel_requested")  # it may have moved on since
        step = asked.data.get("step") if asked else view.current_step
        click.echo(f"{order_id}: cancel requested; it stops after step {step}")


@main.command()
@click.argument("order_id")
@click.option("--by", default=None, help="Who retries (default: your user name).")
def retry(order_id: str, by: str | None) -> None:
    """Run the step that waits out its retry backoff now."""
    client = _client()
    client.retry_now(order_id, by=by)
    done = client.last_event(order_id, "retried_now")  # the order may have moved on since
    what = f"{done.data['step']} runs again now (epoch {done.data['epoch']})" if done else "retried"
    click.echo(f"{order_id}: {what}")


@main.command()
@click.argument("order_id")
@click.option(
    "--from",
    "step",
    required=True,
    metavar="STEP",
    help="The step to run again from (payment, inventory, delivery, approval).",
)
@click.option("--by", default=None, help="Who resumes (default: your user name).")
def resume(order_id: str, step: str, by: str | None) -> None:
    """Run a failed or cancelled order again from a step (steps whose effect was undone
    run again too)."""
    client = _client()
    client.resume_order(order_id, step, by=by)
    done = client.last_event(order_id, "order_resumed")  # the order may have moved on since
    where = f"{done.data['step']} (epoch {done.data['epoch']})" if done else step
    click.echo(f"{order_id}: resumed from {where}")


@main.command()
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True, help="Print the order as JSON.")
def status(order_id: str, as_json: bool) -> None:
    """One line: where the order is, or how it ended."""
    from .render import status_line

    view = _client().get_order(order_id)
    if as_json:
        _json(view.model_dump(mode="json"))
    else:
        _out().print(status_line(view))
        if not view.status.finished:
            _warn_if_no_broker()
            _warn_if_no_worker()


@main.command()
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
def show(order_id: str, as_json: bool) -> None:
    """The order's timeline: every step, every attempt, every decision."""
    from .render import timeline as render_timeline

    tl = _client().timeline(order_id)
    if as_json:
        _json(tl.model_dump(mode="json"))
    else:
        _out().print(render_timeline(tl))


@main.command(name="list")
@click.option(
    "--status",
    "status_",
    type=click.Choice([*(s.value for s in OrderStatus), "retrying"]),
    default=None,
    help="Only orders in this status ('retrying': a failed step waits for its next attempt).",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the orders as JSON.")
def list_(status_: str | None, limit: int, as_json: bool) -> None:
    """Newest orders first."""
    from .render import order_table

    retrying = status_ == "retrying"
    views = _client().list_orders(None if retrying else status_, retrying=retrying, limit=limit)
    if as_json:
        _json([v.model_dump(mode="json") for v in views])
    else:
        _out().print(order_table(views))


@main.command()
@click.option("-n", "--num-orders", "count", type=click.IntRange(1, 100_000), required=True)
@click.option("-i", "--invalid-percentage", type=click.FloatRange(0, 100), default=0.0)
@click.option("--expensive-percentage", type=click.FloatRange(0, 100), default=0.0)
@click.option("--expired-card-percentage", type=click.FloatRange(0, 100), default=0.0)
@click.option("--seed", type=int, default=None, help="Random seed, for repeatable batches.")
@click.option("--wait", is_flag=True, help="Wait for every order and print final counts.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
def generate(
    count: int,
    invalid_percentage: float,
    expensive_percentage: float,
    expired_card_percentage: float,
    seed: int | None,
    wait: bool,
    timeout: float,
) -> None:
    """Place N random orders, some invalid, expensive (need approval) or with expired cards."""
    from .generator import generate as make

    client = _client()
    batch = make(
        count,
        invalid_pct=invalid_percentage,
        expensive_pct=expensive_percentage,
        expired_pct=expired_card_percentage,
        threshold=client.settings.approval_threshold,
        seed=seed,
    )
    handles = [(g.kind, client.place_order(g.order)) for g in batch]
    kinds = Counter(kind for kind, _ in handles)
    click.echo(f"placed {len(handles)} orders: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    for kind, handle in handles:
        click.echo(f"  {handle.id}  {kind}")
    if wait:
        deadline = time.monotonic() + timeout
        outcomes: Counter[str] = Counter()
        for _, handle in handles:
            remaining = deadline - time.monotonic()
            try:
                view = client.wait_for(
                    handle.id,
                    lambda v: v.settled or v.status.value == "awaiting_approval",
                    max(remaining, 0.1),
                )
                outcomes[view.status.value] += 1
            except WorkflowError:
                outcomes["unfinished"] += 1
        click.echo("final: " + ", ".join(f"{n} {s}" for s, n in sorted(outcomes.items())))


# --- dead letters ----------------------------------------------------------------------------


def _dead_letters():
    from ..engine.deadletter import DeadLetters

    client = _client()
    return DeadLetters(
        client.store.client, client.settings.dead_letter_limit, client.runtime.engine.keys
    )


@main.group(name="dead-letters", invoke_without_command=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.pass_context
def dead_letters(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Messages the workers refused (malformed, an unknown task, bad arguments), newest first.

    A refused message was acknowledged, so it never comes back; it is kept here (at
    most FULFILLMENT_DEAD_LETTER_LIMIT of them) to be looked at and dropped.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .render import dead_letter_table

    letters = _dead_letters().list(limit)
    if as_json:
        _json([letter.as_json() for letter in letters])
    else:
        _out().print(dead_letter_table(letters))


@dead_letters.command("show")
@click.argument("letter_id")
def dead_letters_show(letter_id: str) -> None:
    """One dead letter, with the payload that was refused (as JSON)."""
    letter = _dead_letters().get(letter_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {letter_id!r}")
    _json(letter.as_json())


@dead_letters.command("drop")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Drop every dead letter.")
def dead_letters_drop(letter_ids: tuple[str, ...], everything: bool) -> None:
    """Drop dead letters by id, or all of them."""
    if everything == bool(letter_ids):
        raise click.UsageError("give dead letter ids, or --all (not both)")
    store = _dead_letters()
    dropped = store.drop_all() if everything else store.drop(*letter_ids)
    click.echo(f"dropped {dropped} dead letter(s)")


# --- faults and inventory -------------------------------------------------------------------


@main.group()
def faults() -> None:
    """Inject or clear service outages (shared by every worker)."""


@faults.command("inject")
@click.argument(
    "service", type=click.Choice(["inventory", "payment", "delivery"]), default="inventory"
)
@click.option(
    "--attempts",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="Fail attempts 1..N of the step.",
)
@click.option("--forever", is_flag=True, help="Fail every attempt until cleared.")
@click.option(
    "--mode",
    type=click.Choice(["raise", "hang"]),
    default="raise",
    show_default=True,
    help="raise: fail at once; hang: no answer, the attempt overruns its time limit.",
)
@click.option("--order", "order_id", default=None, help="Only for this order.")
def faults_inject(
    service: str, attempts: int, forever: bool, mode: str, order_id: str | None
) -> None:
    """Take SERVICE down for the first N attempts (or until cleared)."""
    from ..orders.services import set_fault

    set_fault(
        _client().store.client,
        service,
        attempts=None if forever else attempts,
        mode=mode,  # type: ignore[arg-type]  # click.Choice: "raise" or "hang"
        order_id=order_id,
    )
    scope = f"order {order_id}" if order_id else "every order"
    span = "every attempt until cleared" if forever else f"attempts 1..{attempts}"
    click.echo(f"{service} down ({mode}) for {span}, {scope}")


@faults.command("clear")
@click.argument("service", type=click.Choice(["inventory", "payment", "delivery"]), required=False)
@click.option("--order", "order_id", default=None, help="Only the fault set for this order.")
def faults_clear(service: str | None, order_id: str | None) -> None:
    """Clear faults (all, or one service's)."""
    from ..orders.services import clear_faults

    cleared = clear_faults(_client().store.client, service, order_id)
    click.echo(f"cleared {cleared} fault(s)" if service else "cleared all faults")


@faults.command("list")
def faults_list() -> None:
    """Show active faults."""
    from ..orders.services import list_faults

    active = list_faults(_client().store.client)
    if not active:
        click.echo("no faults")
    for target, spec in active.items():
        span = "until cleared" if spec["attempts"] < 0 else f"attempts 1..{spec['attempts']}"
        click.echo(f"{target}: {spec['mode']}, {span}")


@main.group(invoke_without_command=True)
@click.option("--restock", is_flag=True, help="Reset stock to the catalogue's counts.")
@click.pass_context
def inventory(ctx: click.Context, restock: bool) -> None:
    """Show the simulated inventory's stock (or load a catalogue: inventory load FILE)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..orders.keys import STOCK
    from ..orders.services.inventory import current_catalogue, seed_stock

    client = _client().store.client
    seed_stock(client, reset=restock)
    stock = client.hgetall(STOCK)
    for name, item in current_catalogue(client).items():
        click.echo(f"{stock.get(name, '?'):>8}  {name} ({item['price']})")


@inventory.command("load")
@click.argument("source", metavar="FILE|-")
def inventory_load(source: str) -> None:
    """Replace the catalogue and stock with FILE's: this project's {"items": [{"name",
    "price", "stock"}]} or the Temporal demo's [{"itemName", "itemPrice", "stock"}]."""
    from ..orders.services.inventory import load_catalogue, parse_catalogue

    if source == "-":
        raw = sys.stdin.buffer.read(10_000_001)
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"no such file: {source}")
        raw = path.read_bytes()[:10_000_001]
    if len(raw) > 10_000_000:
        raise ValueError("invalid catalogue: larger than 10 MB")
    items = parse_catalogue(raw)
    load_catalogue(_client().store.client, items)
    click.echo(f"loaded {len(items)} item(s), {sum(i['stock'] for i in items.values())} unit(s)")


# --- running things -----------------------------------------------------------------------


def _redis_env(settings: Settings) -> dict[str, str]:
    """Environment for child processes: the resolved Redis URL, so all share one server."""
    from ..engine.connection import resolve_redis_url

    return {**os.environ, "FULFILLMENT_REDIS_URL": resolve_redis_url(settings)}


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Pool processes (default: CPU count).",
)
@click.option("-n", "--name", default=None, help="Node name (default: fulfillment-<pid>@%h).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    concurrency: int | None, name: str | None, loglevel: str, celery_args: tuple[str, ...]
) -> None:
    """Run a Celery worker: it runs order steps and compensations and watches the others.

    The same as ``celery -A fulfillment worker`` with the project's flags (prefork,
    task events on, the order queue); any worker takes its turn as the watchdog that
    fails over a dead worker's step. Extra arguments go to Celery.
    """
    from .processes import worker_command

    settings = get_settings()
    cmd = worker_command(
        name or f"fulfillment-{os.getpid()}@%h",
        queue=settings.queue,
        concurrency=concurrency,
        loglevel=loglevel,
        extra=celery_args,
    )
    os.execve(cmd[0], cmd, _redis_env(settings))


@main.command("cluster-create")
@click.argument("nodes", nargs=-1, required=True, metavar="HOST:PORT...")
@click.option("--replicas", type=click.IntRange(0, 5), default=1, show_default=True,
              help="Replicas per master (the last nodes given).")  # fmt: skip
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the nodes to answer, and for the cluster.")  # fmt: skip
def cluster_create(nodes: tuple[str, ...], replicas: int, timeout: float) -> None:
    """Make a Redis or Valkey Cluster of empty nodes: the first ones masters sharing the
    slots, the rest their replicas. Nodes already in a cluster are left as they are. The
    password is FULFILLMENT_REDIS_URL's (a redis+cluster:// URL), if it has one."""
    from ..engine.cluster import is_cluster_url, parse_cluster_url
    from .cluster_setup import create_cluster

    url = os.environ.get("FULFILLMENT_REDIS_URL", "")
    password = parse_cluster_url(url).password if is_cluster_url(url) else None
    try:
        click.echo(create_cluster(nodes, replicas=replicas, password=password, timeout=timeout))
    except TimeoutError as exc:
        fail(str(exc))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Run Flower on the same broker (persistent state in the data directory)."""
    from .processes import flower_command

    settings = get_settings()
    Path(settings.data_dir).expanduser().mkdir(parents=True, exist_ok=True)
    cmd = flower_command(settings, flower_args)
    os.execve(cmd[0], cmd, _redis_env(settings))


@main.command()
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Worker processes (two, so a failover can be shown by killing one).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Pool processes per worker (default: CPU count).",
)
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
def up(workers: int, concurrency: int | None, no_flower: bool) -> None:
    """Run everything in the foreground: server, N workers, Flower. Ctrl-C stops them all
    (workers first, so they hand their messages back, then the server)."""
    from ..engine.connection import redact
    from .processes import ProcessGroup, flower_command, start_server, worker_command

    settings = get_settings()
    group = ProcessGroup()

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        url = settings.redis_url or embedded.running_url(Path(settings.data_dir).expanduser())
        if not url:
            url = start_server(group, settings)
            click.echo(f"embedded server: {url} (data in {settings.data_dir})")
        group.env = {**os.environ, "FULFILLMENT_REDIS_URL": url}
        for i in range(1, workers + 1):
            group.start(
                f"worker {i}",
                worker_command(f"w{i}@%h", queue=settings.queue, concurrency=concurrency),
            )
        if not no_flower:
            Path(settings.data_dir).expanduser().mkdir(parents=True, exist_ok=True)
            login = _flower_login(group.env)
            group.start("flower", flower_command(settings))
            base = f"http://{settings.flower_address}:{settings.flower_port}"
            click.echo(f"Flower: {base}   Orders: {base}/orders")
            click.echo(login)
        click.echo(f"{workers} worker(s) on {redact(url)}. Ctrl-C stops everything.")
        restarts: Counter[str] = Counter()
        while True:
            time.sleep(0.5)
            for label, code in group.exited():
                # Like compose's `restart: unless-stopped` for workers: another worker
                # carries on the orders of the dead one, and a new one takes its place.
                if label.startswith("worker") and restarts[label] < 5:
                    restarts[label] += 1
                    click.echo(f"{label} exited with code {code}; restarting it", err=True)
                    group.restart(label)
                    continue
                click.echo(f"{label} exited with code {code}; stopping the rest", err=True)
                sys.exit(1)
    except KeyboardInterrupt:
        click.echo("stopping: workers first (they hand their messages back), then the "
                   "server ...", err=True)  # fmt: skip
    finally:
        group.stop()


def _flower_login(env: dict[str, str]) -> str:
    """Flower's login for acting on orders: ``FLOWER_BASIC_AUTH`` if set, else one made up
    now (put in ``env`` for the Flower ``up`` starts); what to tell the user."""
    given = env.get("FLOWER_BASIC_AUTH")
    if given:
        user = given.split(",")[0].split(":", 1)[0]
        return f"Log in as {user} (FLOWER_BASIC_AUTH) to approve, cancel or retry orders there."
    import secrets

    password = secrets.token_urlsafe(9)
    env["FLOWER_BASIC_AUTH"] = f"admin:{password}"
    return (f"Log in as admin / {password} to approve, cancel or retry orders there "
            "(set FLOWER_BASIC_AUTH=user:password to choose your own).")  # fmt: skip


@main.command()
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Workers to start if none is running.",
)
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option(
    "--leave-waiting",
    is_flag=True,
    help="Also leave one order waiting for a person's approval (10 minutes).",
)
def demo(workers: int, timeout: float, leave_waiting: bool) -> None:
    """Run the demo scenarios against live workers and print the outcome table."""
    from .demo import run

    ok = run(_client(), _out(), workers=workers, timeout=timeout, leave_waiting=leave_waiting)
    if not ok:
        sys.exit(1)


@main.group()
def server() -> None:
    """The embedded server (used when FULFILLMENT_REDIS_URL is unset)."""


@server.command("start")
def server_start() -> None:
    """Start it in the background (commands also start it on demand)."""
    click.echo(embedded.ensure_server(get_settings().data_dir))


@server.command("stop")
def server_stop() -> None:
    """Stop it (its append-only file keeps the data)."""
    stopped = embedded.stop_server(get_settings().data_dir)
    click.echo("stopped" if stopped else "not running")


@server.command("status")
def server_status() -> None:
    """Print its URL if it runs."""
    url = embedded.running_url(Path(get_settings().data_dir).expanduser().resolve())
    if not url:
        fail("embedded server not running")
    click.echo(url)


@server.command("run")
def server_run() -> None:
    """Run it in the foreground."""
    sys.exit(embedded.serve(get_settings().data_dir))


if __name__ == "__main__":
    main()
