"""Tag every Sentry event captured during a request with its ``request_id`` and ``trace_id``.

::

    import sentry_sdk
    from flask_reqctx.integrations.sentry import ReqCtxIntegration

    sentry_sdk.init(dsn=..., integrations=[ReqCtxIntegration()])

An error event then joins the request's log lines (which carry the same two ids, see
:class:`flask_reqctx.logging.RequestIdFilter`) and the services it called (which received
them in ``X-Request-ID`` and ``traceparent``).  The tags are read from
:func:`flask_reqctx.get_request_context` when the event is captured, so an event captured
in a greenlet, thread or asyncio task the request started carries the request's ids too;
outside a context nothing is added, and a ``request_id``/``trace_id`` tag set by the
application is kept.  ``trace_id`` is the W3C trace id of the request (the one in the
``traceparent`` it received or sent), not Sentry's own trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentry_sdk import get_client
from sentry_sdk.integrations import Integration
from sentry_sdk.scope import add_global_event_processor

from ..context import get_request_context

if TYPE_CHECKING:
    from sentry_sdk._types import Event, Hint

__all__ = ["ReqCtxIntegration", "tag_event"]


class ReqCtxIntegration(Integration):
    """A Sentry integration: one event processor, added once per process by the SDK."""

    identifier = "flask_reqctx"

    @staticmethod
    def setup_once() -> None:
        add_global_event_processor(tag_event)


def tag_event(event: Event, hint: Hint) -> Event:
    """The event processor: adds the current context's ids as tags (only while a client
    that was given :class:`ReqCtxIntegration` is active)."""
    context = get_request_context()
    if context is None or get_client().get_integration(ReqCtxIntegration) is None:
        return event
    tags = event.get("tags")
    if not isinstance(tags, dict):
        tags = event["tags"] = {}
    tags.setdefault("request_id", context.request_id)
    tags.setdefault("trace_id", context.trace_id)
    return event
