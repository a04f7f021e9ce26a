"""OpenTelemetry traces of runs (optional: ``pip install "fulfillment[otel]"``).

One trace per run. Starting it opens the root span (``<workflow>.start``); its W3C
``traceparent`` is kept in the run record and goes in the headers of every message
the sender builds (the first step, the next steps, retries, re-drives, gate
countdowns, compensations), so each step attempt (``<workflow>.step <step>``), each
compensation (``<workflow>.undo <action>``) and each gate's wait
(``<workflow>.gate <gate>``) is a span of that trace, whichever process runs it.
Attributes: ``run.id``, ``workflow``, ``step``/``action``/``gate``, ``attempt``,
``epoch``, ``outcome``, ``worker``.

Only the OpenTelemetry API is used: the application configures the SDK and its
exporters as usual. Without the API installed, or with no SDK configured (spans
that do not record), every function here costs next to nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:  # the API is an optional dependency
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    trace = None  # type: ignore[assignment]

HEADER = "traceparent"
#: the run record's field that keeps the run's trace context
FIELD = "trace"

_propagator = TraceContextTextMapPropagator() if trace is not None else None


def enabled() -> bool:
    """Is an SDK configured (would a span record)?"""
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, if one records."""
    if trace is None or _propagator is None:
        return None
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(HEADER)


def _parent(traceparent: str | None) -> Any:
    if traceparent is None or _propagator is None:
        return None
    return _propagator.extract({HEADER: traceparent})


@contextlib.contextmanager
def span(
    name: str,
    traceparent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time_ns: int | None = None,
    end_time_ns: int | None = None,
) -> Iterator[Any]:
    """A span, child of ``traceparent`` if given (else of the current context); nothing
    at all (``None``) when no SDK is configured, so the hot path pays no more.
    ``start_time_ns`` / ``end_time_ns``: when it began and ended, if not now (a wait
    recorded after it ended)."""
    if not enabled():
        yield None
        return
    tracer = trace.get_tracer("fulfillment.engine")
    parent = _parent(traceparent)
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with tracer.start_as_current_span(
            name,
            attributes={k: v for k, v in (attributes or {}).items() if v is not None},
            start_time=start_time_ns,
            kind=trace.SpanKind.INTERNAL,
            end_on_exit=end_time_ns is None,
        ) as current:
            yield current
            if end_time_ns is not None:
                current.end(end_time=end_time_ns)
    finally:
        if token is not None:
            otel_context.detach(token)


def set_outcome(current: Any, outcome: str, **attributes: Any) -> None:
    """Record how the span's work ended (``succeeded``, ``retried``, ``failed``, ...)."""
    if current is None or not current.is_recording():
        return
    current.set_attribute("outcome", outcome)
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(key, value)
    if outcome in ("failed", "retried", "lost"):
        current.set_status(trace.Status(trace.StatusCode.ERROR, outcome))


def message_headers(traceparent: str | None) -> dict[str, str]:
    """The headers that carry a run's trace context in a Celery message."""
    return {HEADER: traceparent} if traceparent else {}


def from_request(request: Any) -> str | None:
    """The trace context a Celery task's message carried, if any."""
    value = getattr(request, HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(HEADER) if isinstance(headers, Mapping) else None
    return value if isinstance(value, str) else None
