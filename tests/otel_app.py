"""A worker app with the OpenTelemetry SDK on: every finished span is appended, as one
JSON line, to the file ``OTEL_TEST_SPANS`` names (each pool process appends its own).

``celery -A tests.otel_app worker`` (the tests start it with Deployment.start_worker).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from fulfillment.orders.app import app

from .spans import span_record


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(span_record(span), default=str) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["OTEL_TEST_SPANS"])))
trace.set_tracer_provider(provider)

__all__ = ["app"]
