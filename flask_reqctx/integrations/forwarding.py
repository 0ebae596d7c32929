"""Adding the current request's headers to a call another library is about to send.

Shared by the HTTP client integrations (``requests``, ``httpx``): each finds the call's
header mapping its own way and hands it here, so the rules are the same for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import TypeVar

from ..context import RequestContext
from ..outgoing import outgoing_headers

__all__ = ["add_missing_headers", "propagation_allowed"]

log = logging.getLogger("flask_reqctx")

R = TypeVar("R")


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
