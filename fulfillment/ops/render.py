"""Terminal output (rich): status lines, the order timeline, order lists."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..engine.deadletter import DeadLetter
from ..engine.views import ClaimView
from ..orders.state import HistoryEvent, OrderStatus, OrderView
from ..orders.timeline import AttemptView, Timeline

STATUS_STYLE = {
    OrderStatus.PENDING: "cyan",
    OrderStatus.AWAITING_APPROVAL: "yellow",
    OrderStatus.RUNNING: "blue",
    OrderStatus.COMPLETED: "green",
    OrderStatus.FAILED: "red",
    OrderStatus.CANCELLED: "magenta",
    OrderStatus.COMPENSATING: "dark_orange",
}


def console(stderr: bool = False) -> Console:
    """A console that keeps wide tables readable when output is piped."""
    width = None if os.isatty(2 if stderr else 1) else 160
    return Console(stderr=stderr, width=width, highlight=False)


def clock(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def stamp(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def duration(ms: float | None) -> str:
    """A duration people read: ``850 ms``, ``2.41 s``, ``3 min 5 s`` (the CLI and the
    order page's chart say it the same way)."""
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{minutes:.0f} min {seconds:.0f} s"


def until(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = (moment - datetime.now(UTC)).total_seconds()
    return f"in {seconds:.1f}s" if seconds >= 0 else f"{-seconds:.1f}s overdue"


def status_text(view: OrderView) -> Text:
    return Text(view.status.value, style=f"bold {STATUS_STYLE[view.status]}")


def status_line(view: OrderView) -> Text:
    """One line: where the order is, or how it ended."""
    line = Text(f"{view.id}: ")
    line.append_text(status_text(view))
    if view.status is OrderStatus.COMPLETED:
        line.append(f"  {view.result}")
    elif view.failure:
        line.append(f"  {view.failure.type}: {view.failure.message}")
        if view.status is OrderStatus.COMPENSATING:
            undos = ", ".join(f"{c.action} {c.state}" for c in view.compensations)
            line.append(f"  (undoing, then {view.ends_as.value if view.ends_as else 'ended'}: "
                        f"{undos})")  # fmt: skip
        elif view.compensated:
            line.append(f"  (compensated: {'; '.join(view.compensated)})")
    elif view.status is OrderStatus.AWAITING_APPROVAL:
        line.append(f"  total {view.total}, deadline {stamp(view.approval.deadline)}")
    elif view.current_step:
        step = next(s for s in view.steps if s.name == view.current_step)
        line.append(f"  step {step.name} ({view.phase}, {step.attempts} attempt(s))")
        if view.retrying:
            line.append(f", next retry {until(view.next_retry_at)} after {step.last_error}")
    return line


def _outcome(attempt: AttemptView) -> Text:
    if attempt.outcome == "succeeded":
        text = Text("✓ ", style="green").append(attempt.result or "")
    elif attempt.outcome == "running":
        text = Text("… running", style="blue")
    elif attempt.outcome == "lost":
        text = Text("✗ lost: ", style="magenta").append(attempt.error or "")
    else:
        text = Text("✗ ", style="red").append(f"{attempt.error_type}: {attempt.error}")
        if attempt.retry_in_ms is not None:
            text.append(f" → retry in {duration(attempt.retry_in_ms)}", style="yellow")
        elif attempt.retryable is False:
            text.append(" (non-retryable)", style="red")
    if attempt.note:
        text.append(f"\n{attempt.note}", style="dim")
    return text


EVENT_TEXT = {
    "order_placed": lambda d: (
        f"placed: total {d.get('total')}, {d.get('items')} line(s), "
        + ("approval required" if d.get("needs_approval") else "no approval needed")
    ),
    "approval_requested": lambda d: (
        f"approval requested: waits until {_deadline(d.get('deadline'))} "
        f"({duration(_ms(d.get('timeout_us')))})"
    ),
    "approval_decided": lambda d: (
        f"approval {d.get('decision')} by {d.get('by')}"
        + (f": {d['reason']}" if d.get("reason") else "")
        + (" (before the wait began)" if d.get("early") else "")
    ),
    "approval_timed_out": lambda d: (
        f"approval timed out (by the {d.get('source')}, {int(d.get('late_by_us', 0)) / 1000:.0f}"
        " ms after the deadline)"
    ),
    "cancel_requested": lambda d: f"cancel requested by {d.get('by')}: {d.get('reason')}",
    "redriven": lambda d: (
        f"watchdog re-drove step {d.get('step')} (epoch {d.get('epoch')}): {d.get('reason')}"
    ),
    "attempt_lost": lambda d: (
        f"attempt {d.get('attempt')} of {d.get('step')} lost: {d.get('reason')}"
    ),
    "result_discarded": lambda d: (
        f"late {d.get('outcome')} of {d.get('step')} attempt {d.get('attempt')} discarded: "
        f"{d.get('reason')}"
    ),
    "compensation_started": lambda d: (
        f"undo {d.get('action')} started (try {d.get('claim')}) on {d.get('worker')}"
    ),
    "compensated": lambda d: f"undo {d.get('action')} {d.get('outcome')}: {d.get('summary')}",
    "compensation_failed": lambda d: (
        f"undo {d.get('action')} failed: {d.get('error_type')}: {d.get('error')}"
        f" (failure {d.get('failures')}, again in {duration(_ms(d.get('retry_in_us')))})"
    ),
    "compensation_lost": lambda d: f"undo {d.get('action')} lost: {d.get('reason')}",
    "compensation_resent": lambda d: f"undo {d.get('action')} sent again: {d.get('reason')}",
    "order_compensating": lambda d: _compensating(d),
    "retried_now": lambda d: (
        f"retry now by {d.get('by')}: step {d.get('step')} runs again (epoch {d.get('epoch')})"
    ),
    "order_resumed": lambda d: (
        f"resumed by {d.get('by')} from {d.get('step')} (asked: {d.get('requested')}, "
        f"epoch {d.get('epoch')})"
    ),
    "order_completed": lambda d: f"completed: {d.get('result')}",
    "order_failed": lambda d: (
        f"failed: {d.get('type')}: {d.get('message')}"
        + (f" (undone: {_undo_order(d['compensations'])})" if d.get("compensations") else "")
    ),
    "order_cancelled": lambda d: (
        f"cancelled: {d.get('reason')}"
        + (f" (undone: {_undo_order(d['compensations'])})" if d.get("compensations") else "")
    ),
}


def _compensating(d: dict[str, object]) -> str:
    if d.get("late_effect"):
        return f"late effect of {d['late_effect']}: undoing it again"
    if d.get("ends_as") == "failed":
        why = f"failed: {d.get('type')}: {d.get('message')}"
    else:
        why = f"cancelled: {d.get('reason')}"
    return f"{why}; undoing, in this order: {_undo_order(d.get('compensations'))}"


def _ms(micros: object) -> float | None:
    return None if micros in (None, "") else int(str(micros)) / 1000


def _deadline(micros: object) -> str:
    if micros in (None, ""):
        return "its deadline"
    return clock(datetime.fromtimestamp(int(str(micros)) / 1_000_000, tz=UTC))


def _undo_order(names: object) -> str:
    return " -> ".join(str(names or "").split(",")) if names else "nothing"


def event_text(event: HistoryEvent) -> str:
    describe = EVENT_TEXT.get(event.type)
    return describe(event.data) if describe else f"{event.type} {event.data}"


def timeline(tl: Timeline) -> Group:
    """``fulfillment show``: header, every attempt of every step, then order events."""
    view = tl.order
    head = Text()
    head.append(f"{view.id}  ")
    head.append_text(status_text(view))
    head.append(f"   total {view.total}  ({view.items} line(s), card {view.card})\n")
    head.append(f"created {stamp(view.created_at)}")
    if view.finished_at:
        elapsed = (view.finished_at - view.created_at).total_seconds()
        head.append(f"   finished {stamp(view.finished_at)}   elapsed {elapsed:.3f} s")
    if view.result:
        head.append("\nresult: ", style="bold").append(view.result, style="green")
    if view.failure:
        head.append("\nfailure: ", style="bold")
        head.append(f"{view.failure.type}: {view.failure.message}", style="red")
        if view.failure.step:
            head.append(f" (step {view.failure.step})")
    if view.status is OrderStatus.COMPENSATING and view.ends_as:
        head.append(f"\nundoing its effects, then {view.ends_as.value}", style="dark_orange")

    steps = Table(title="Steps and attempts", title_justify="left", expand=False)
    for column in ("step", "#", "started (UTC)", "duration", "worker", "celery task id", "outcome"):
        wrap = column == "outcome"
        steps.add_column(column, overflow="fold", no_wrap=not wrap)
    for step in tl.steps:
        if step.name == "approval":
            continue
        if not step.attempts:
            steps.add_row(step.name, "", "", "", "", "", Text(step.state, style="dim"))
        for attempt in step.attempts:
            steps.add_row(
                step.name,
                str(attempt.number),
                clock(attempt.started_at),
                duration(attempt.duration_ms),
                attempt.worker or "-",
                attempt.task_id or "-",
                _outcome(attempt),
            )
        if step.next_retry_at:
            steps.add_row(
                step.name,
                str(len(step.attempts) + 1),
                clock(step.next_retry_at),
                "",
                "",
                "",
                Text(f"⏳ next attempt {until(step.next_retry_at)}", style="yellow"),
            )

    undos = Table(title="Undos, in the order they run", title_justify="left", expand=False)
    for column in ("#", "undo", "of step", "try", "started (UTC)", "duration", "worker",
                   "celery task id", "outcome"):  # fmt: skip
        undos.add_column(column, overflow="fold", no_wrap=column != "outcome")
    for comp in tl.compensations:
        if not comp.claims:
            undos.add_row(str(comp.position), comp.action, comp.step or "-", "", "", "", "", "",
                          Text(comp.state, style="dim"))  # fmt: skip
        for claim in comp.claims:
            undos.add_row(
                str(comp.position),
                comp.action,
                comp.step or "-",
                str(claim.number),
                clock(claim.started_at),
                duration(claim.duration_ms),
                claim.worker or "-",
                claim.task_id or "-",
                _undo_outcome(claim),
            )

    events = Table(title="Order events", title_justify="left", expand=False)
    events.add_column("time (UTC)")
    events.add_column("event", overflow="fold")
    for event in tl.events:
        if event.type.startswith("attempt_") and event.type != "attempt_lost":
            continue
        events.add_row(clock(event.at), event_text(event))
    parts: list[Panel | Table] = [Panel(head, title="order", title_align="left"), steps]
    if tl.compensations:
        parts.append(undos)
    return Group(*parts, events)


def _undo_outcome(claim: ClaimView) -> Text:
    if claim.outcome == "done":
        return Text("✓ ", style="green").append(claim.summary or "")
    if claim.outcome == "not_needed":
        return Text("- nothing to undo: ", style="dim").append(claim.summary or "")
    if claim.outcome == "running":
        return Text("… running", style="blue")
    text = Text(f"✗ {claim.outcome}: ", style="red").append(claim.error or "")
    if claim.retry_in_ms is not None:
        text.append(f" → again in {duration(claim.retry_in_ms)}", style="yellow")
    return text


def dead_letter_table(letters: list[DeadLetter]) -> Table:
    """``fulfillment dead-letters``."""
    table = Table(expand=False, title=f"{len(letters)} dead letter(s), newest first",
                  title_justify="left")  # fmt: skip
    for column in ("id", "refused at (UTC)", "reason", "task", "task id", "queue", "worker"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for letter in letters:
        table.add_row(letter.id, stamp(letter.at), letter.reason, letter.task or "-",
                      letter.task_id or "-", letter.queue or "-", letter.worker or "-")  # fmt: skip
    return table


def order_table(views: list[OrderView]) -> Table:
    """``fulfillment list``."""
    table = Table(expand=False)
    for column in ("order", "status", "step", "attempts", "total", "created (UTC)", "detail"):
        # an order id is copied from here: it is never wrapped nor cut (the detail folds)
        width = max([len(column), *(len(v.id) for v in views)]) if column == "order" else None
        table.add_column(column, overflow="fold", no_wrap=column == "order", min_width=width)
    for view in views:
        step = next((s for s in view.steps if s.name == view.current_step), None)
        detail = ""
        if view.result:
            detail = view.result
        elif view.failure:
            detail = f"{view.failure.type}: {view.failure.message}"
        elif view.retrying and step:
            detail = f"retry {until(view.next_retry_at)} after {step.last_error}"
        table.add_row(
            view.id,
            status_text(view),
            f"{view.current_step} ({view.phase})" if view.current_step else "",
            " ".join(f"{s.name[0]}{s.attempts}" for s in view.steps if s.name != "approval"),
            str(view.total),
            stamp(view.created_at),
            detail,
        )
    return table
