"""Headers that carry the current request's identity to the services it calls.

``outgoing_headers()`` works wherever the context reaches (child greenlets, threads,
executor jobs), because everything it needs is on the :class:`RequestContext` itself:
its request id, its trace, and the settings of the app that made it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import TypeVar

from .context import RequestContext, current_context

__all__ = ["outgoing_headers"]

log = logging.getLogger("flask_reqctx")

R = TypeVar("R")

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


# Shared by the HTTP client integrations (``requests``, ``httpx``): each finds the call's
# header mapping its own way and hands it here, so the rules are the same for all of them.


def propagation_allowed(predicate: Callable[[R], bool] | None, request: R) -> bool:
    """``predicate(request)``, True without one; a predicate that raises sends nothing
    (logged): ids must never reach a host the user meant to keep them from."""
    if predicate is None:
        return True
    try:
        return bool(predicate(request))
    except Exception:
        log.exception("should_propagate raised; no ids sent on this call")
        return False


def add_missing_headers(context: RequestContext, headers: MutableMapping[str, str]) -> None:
    """Add ``outgoing_headers(context)`` to ``headers`` (a case-insensitive mapping), never
    overriding a header the caller set; a caller's own ``traceparent`` gets no ``tracestate``
    of ours (it would not belong to their trace)."""
    caller_traces = "traceparent" in headers
    for name, value in outgoing_headers(context).items():
        if name in headers or (caller_traces and name == "tracestate"):
            continue
        headers[name] = value
