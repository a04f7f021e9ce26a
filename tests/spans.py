"""What the tracing tests read of a finished span."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan


def span_record(span: ReadableSpan) -> dict[str, object]:
    """What the tests read of a span."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "attributes": dict(span.attributes or {}),
        "start": span.start_time,
        "end": span.end_time,
    }
