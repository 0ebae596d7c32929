"""Put the request id and trace id on every log record, wherever the request's work runs.

:class:`RequestIdFilter` sets ``record.request_id`` and ``record.trace_id`` from the
context current where the log call is made: a view, a greenlet or thread it spawned, an
executor job; ``"-"`` outside any request (start-up, the gunicorn arbiter), so a format
string never fails.  It never rejects a record, and it keeps a value the record already
has (``extra={"request_id": ...}``, or a factory installed with
:func:`install_log_record_factory`).

Attach it to a **handler** (it then sees records from every logger that reaches the
handler); on a logger, it only sees records logged on that very logger, not those
propagated up from its children.  With a ``QueueHandler``, put it on the
``QueueHandler`` (which runs in the logging unit), not on the listener's handlers.

A ``logging.config.dictConfig`` set-up::

    import logging.config

    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "flask_reqctx.logging.RequestIdFilter"},
        },
        "formatters": {
            "default": {
                "format": "%(asctime)s %(levelname)s [%(request_id)s %(trace_id)s] %(name)s: %(message)s",
            },
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request_id"],
            },
        },
        "root": {"level": "INFO", "handlers": ["console"]},
    })

Access logs are written after the request, outside its context: under gunicorn, log the
echoed response header instead, e.g. ``--access-logformat '%(h)s "%(r)s" %(s)s
%({x-request-id}o)s'``.

structlog (optional, not imported here): add :func:`add_request_id` to the processor
chain (and to ``foreign_pre_chain`` of a ``ProcessorFormatter`` for stdlib records)::

    structlog.configure(processors=[add_request_id, ..., structlog.processors.JSONRenderer()])

The trace id is the request's W3C trace id (see :mod:`flask_reqctx.tracecontext`): the
caller's when a valid ``traceparent`` came in, else a new one started on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from .context import current_context

__all__ = ["RequestIdFilter", "add_request_id", "install_log_record_factory", "uninstall_log_record_factory"]

#: The value of ``request_id``/``trace_id`` on records logged outside any request.
NO_REQUEST = "-"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` and ``trace_id`` to records (``default`` outside a request)."""

    def __init__(self, name: str = "", default: str = NO_REQUEST) -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        context = current_context.get()
        if context is None:
            fields.setdefault("request_id", self.default)
            fields.setdefault("trace_id", self.default)
            return True
        if "request_id" not in fields:
            fields["request_id"] = context.request_id
        if "trace_id" not in fields:
            fields["trace_id"] = context.trace_id
        return True


def install_log_record_factory(default: str = NO_REQUEST) -> None:
    """Give every record ``request_id``/``trace_id`` at creation (the OpenTelemetry way).

    No per-handler wiring, so third-party handlers see them too.  Chains the current
    factory; idempotent.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_reqctx", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        context = current_context.get()
        if context is None:
            record.request_id = record.trace_id = default
        else:
            record.request_id = context.request_id
            record.trace_id = context.trace_id
        return record

    factory._reqctx = True  # type: ignore[attr-defined]
    factory._previous = previous  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def uninstall_log_record_factory() -> None:
    """Undo :func:`install_log_record_factory` (for tests)."""
    factory: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
    if getattr(factory, "_reqctx", False):
        logging.setLogRecordFactory(factory._previous)  # type: ignore[attr-defined]


def add_request_id(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: ``request_id`` and ``trace_id`` of the current request.

    Adds nothing outside a request (structlog renders absent keys as absent), and keeps
    keys already bound.
    """
    context = current_context.get()
    if context is not None:
        event_dict.setdefault("request_id", context.request_id)
        if "trace_id" not in event_dict:
            event_dict["trace_id"] = context.trace_id
    return event_dict
