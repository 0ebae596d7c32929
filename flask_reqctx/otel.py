"""Follow OpenTelemetry's current span, so a request's logs and its spans share one trace id.

Never imports OpenTelemetry: the span is looked up only when the application has imported
``opentelemetry.trace`` itself (``sys.modules``), and only when a request's trace is first
needed (:mod:`flask_reqctx.tracecontext`), so without OpenTelemetry nothing changes and
nothing is paid.  ``opentelemetry-instrumentation-flask`` starts its server span in a
``before_request`` function, after the extension's middleware made the context: that is
why the trace is resolved on first use rather than at the request's start.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

__all__: list[str] = []  # internal: nothing here for users to import

#: The module whose presence in ``sys.modules`` says the application uses OpenTelemetry.
OTEL_TRACE_MODULE = "opentelemetry.trace"


class SpanIds(NamedTuple):
    """The W3C fields of a span: 32-hex trace id, 16-hex span id, 2-hex flags, tracestate."""

    trace_id: str
    span_id: str
    parent_id: str | None
    flags: str
    tracestate: str | None


def current_span() -> SpanIds | None:
    """The current OpenTelemetry span's ids, or None (no OpenTelemetry, or no valid span)."""
    trace_api: Any = sys.modules.get(OTEL_TRACE_MODULE)
    if trace_api is None:
        return None
    try:
        span = trace_api.get_current_span()
        context = span.get_span_context()
        if not context.is_valid:
            return None
        parent = getattr(span, "parent", None)  # the SDK's spans know their parent
        parent_id = format(parent.span_id, "016x") if parent is not None and parent.is_valid else None
        state = context.trace_state.to_header() if context.trace_state else ""
        return SpanIds(
            format(context.trace_id, "032x"),
            format(context.span_id, "016x"),
            parent_id,
            format(int(context.trace_flags), "02x"),
            state or None,
        )
    except Exception:  # an API we do not know: behave as without OpenTelemetry
        return None
