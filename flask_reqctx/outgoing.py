"""Headers that carry the current request's identity to the services it calls.

``outgoing_headers()`` works wherever the context reaches (child greenlets, threads,
executor jobs), because everything it needs is on the :class:`RequestContext` itself:
its request id, its trace, and the settings of the app that made it.
"""

from __future__ import annotations

from .context import RequestContext, current_context

__all__ = ["DEFAULT_OUTGOING_HEADER", "outgoing_headers"]

#: The request-id header for contexts made outside Flask (``create_request_context``).
DEFAULT_OUTGOING_HEADER = "X-Request-ID"


def outgoing_headers(context: RequestContext | None = None) -> dict[str, str]:
    """``{request-id header: id, "traceparent": ..., ["tracestate": ...]}`` for a call out.

    For ``context`` (default: the current one); ``{}`` outside any request context, so it
    is safe to merge unconditionally.  The ``traceparent`` has the request's trace id and
    the request's own span id as parent (a new trace is started if none came in); the
    request-id header name is the app's ``REQCTX_OUTGOING_HEADER`` (default: its first
    plain ``REQCTX_HEADER``), ``X-Request-ID`` outside Flask.
    """
    if context is None:
        context = current_context.get()
        if context is None:
            return {}
    origin = context.origin
    name = origin.outgoing_header if origin is not None else DEFAULT_OUTGOING_HEADER
    headers = {name: context.request_id} if name is not None else {}
    headers.update(context.trace.headers())
    return headers
