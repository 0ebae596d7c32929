"""Celery: the request context follows work into tasks (``init_celery(celery_app)``).

Only ids cross the process boundary, in the task message's headers (never its
arguments): the sender's request id under ``X-Request-ID``, and the W3C ``traceparent``
(plus ``tracestate`` when the sender has one), whose parent id is the sender's own span.
The sender's ``data`` stays in its process.

* Sending: Celery's ``before_task_publish`` signal, which every path that publishes a
  task message goes through (``delay``, ``apply_async``, ``send_task``, chains, groups,
  chords, retries, and the callbacks a worker sends after a task).  Outside a context the
  message is left as it is.
* Running: ``task_prerun`` binds a context made for exactly that task with
  :func:`~flask_reqctx.create_request_context` (kind ``"task"``): ``request_id`` is the
  sender's id and ``data["parent_request_id"]`` too, its trace is the sender's trace.  A
  message without our headers (sent outside a context, or by a service without this
  extension) or with values that fail validation gets a fresh id and a new trace.
  ``task_postrun``, which Celery sends from a ``finally`` (success, failure, retry,
  revoke with terminate, a gevent pool's time limit), closes it, so nothing reaches the
  next task run by the same process, thread or greenlet.  A prefork child killed by a
  hard time limit or a signal takes its contexts with it.
* Eager execution (``task.apply()``, ``task_always_eager``) is a plain call in the
  caller's unit: under a current context the task simply runs in it; outside one it gets
  a context of its own as in a worker.

Celery signals are process-wide: once called, every task message published in this
process while a context is current carries the headers, whichever app sends it; tasks
get a context only when their app was passed to :func:`init_celery`.  Task protocol 2
(Celery's default) is assumed.  Celery is imported here only, never by ``import
flask_reqctx``.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from contextvars import Context, ContextVar
from typing import Any

from celery import Celery, signals  # type: ignore[import-untyped]

from .context import RequestContext, current_context
from .ids import is_valid_request_id, log_rejected
from .otel import current_span
from .outgoing import DEFAULT_OUTGOING_HEADER
from .registry import close_request_context, create_request_context
from .state import holds_state
from .tracecontext import TraceContext

__all__ = ["init_celery"]

log = logging.getLogger("flask_reqctx")

#: The task-message headers that carry a context's ids (the only things that travel).
REQUEST_ID_HEADER = DEFAULT_OUTGOING_HEADER
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

#: ``(task id, context)`` of the task run in progress in this unit, from prerun to postrun
#: (a ContextVar: Celery's ``task.request`` costs microseconds per read).
_running: ContextVar[tuple[str | None, RequestContext] | None] = ContextVar(
    "flask_reqctx.celery.running", default=None
)

#: The signal receivers' ``dispatch_uid``.
_UID = "flask_reqctx.celery"


class _Hookup:
    """The apps whose tasks get contexts, and whether Celery's signals are connected (with
    the result drainer's original ``start``, restored by :meth:`reset`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.apps: weakref.WeakSet[Celery] = weakref.WeakSet()
        self.connected = False
        self.drainer_start: tuple[Any, Any] | None = None  # (class, its own start)

    def reset(self) -> None:
        """Disconnect from Celery, as before the first :func:`init_celery` (for tests)."""
        with self.lock:
            if self.connected:
                signals.before_task_publish.disconnect(dispatch_uid=_UID)
                signals.task_prerun.disconnect(dispatch_uid=_UID)
                signals.task_postrun.disconnect(dispatch_uid=_UID)
            if self.drainer_start is not None:
                drainer, start = self.drainer_start
                drainer.start = start
            self.apps = weakref.WeakSet()
            self.connected, self.drainer_start = False, None


_hookup = holds_state(_Hookup())


def init_celery(celery_app: Celery) -> None:
    """Carry request contexts into the tasks of ``celery_app`` (idempotent).

    Call it where the tasks are defined, so that the web processes (which send) and the
    workers (which run) both do.
    """
    if not isinstance(celery_app, Celery):
        raise TypeError(f"init_celery expects a celery.Celery app, not {type(celery_app).__name__}")
    _hookup.apps.add(celery_app)
    with _hookup.lock:
        if _hookup.connected:
            return
        signals.before_task_publish.connect(_add_headers, weak=False, dispatch_uid=_UID)
        signals.task_prerun.connect(_enter_task, weak=False, dispatch_uid=_UID)
        signals.task_postrun.connect(_leave_task, weak=False, dispatch_uid=_UID)
        _hookup.drainer_start = _detach_result_drainer()
        _hookup.connected = True


def _detach_result_drainer() -> tuple[Any, Any] | None:
    """Celery's gevent result drainer must not inherit the context of the request that
    happens to start it.

    A greenlet-local result backend (``app.backend`` under gevent) starts a drainer greenlet
    the first time a result is watched (``res.then()``, e.g. by a group's ``apply_async``)
    and it runs for as long as the process: spawned from a request, it would keep that
    request's context forever (never destroyed, ``live`` never back to 0).  It is started
    from an empty ``contextvars`` context instead, as plain gevent would.  Returns the
    drainer class and its own ``start``, for :meth:`_Hookup.reset`.
    """
    try:
        from celery.backends.asynchronous import greenletDrainer  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - a Celery without it
        return None
    original_start = greenletDrainer.start

    @functools.wraps(original_start)
    def start(self: Any) -> None:
        if current_context.get() is None:
            original_start(self)
        else:
            Context().run(original_start, self)

    greenletDrainer.start = start
    return greenletDrainer, original_start


def _add_headers(headers: dict[str, Any] | None = None, **_ignored: Any) -> None:
    """``before_task_publish``: put the current context's ids in the message headers."""
    context = current_context.get()
    if context is None or headers is None:
        return
    headers[REQUEST_ID_HEADER] = context.request_id
    headers.pop(TRACESTATE_HEADER, None)  # one copied from a retried message is not ours
    # An OpenTelemetry span of this trace current now (opentelemetry-instrumentation-celery's
    # PRODUCER span, whichever of the two receivers runs first) is the message's parent: the
    # one traceparent the message carries then agrees with the one OpenTelemetry injects.
    span = current_span()
    trace = context.trace
    if span is not None and span.trace_id == trace.trace_id:
        trace = TraceContext.from_span(span)
    headers.update(trace.headers())


def _header(request: Any, name: str) -> Any:
    """A custom header of the running task's message (``apply(headers=...)`` when eager)."""
    headers = request.headers
    value = headers.get(name) if isinstance(headers, dict) else None
    return value if value is not None else request.get(name)


def _enter_task(task: Any = None, task_id: str | None = None, **_ignored: Any) -> None:
    """``task_prerun``: bind a context made for this task run."""
    if task is None or getattr(task, "app", None) not in _hookup.apps:
        return
    request = task.request
    if request.is_eager and current_context.get() is not None:
        return  # a plain call in the caller's unit: it runs in the caller's context
    sent_id = _header(request, REQUEST_ID_HEADER)
    sender_id = sent_id if is_valid_request_id(sent_id) else None
    traceparent = _header(request, TRACEPARENT_HEADER)
    trace = None
    if isinstance(traceparent, str):
        tracestate = _header(request, TRACESTATE_HEADER)
        trace = TraceContext.from_headers(traceparent, tracestate if isinstance(tracestate, str) else None)
    data = {"parent_request_id": sender_id, "task": task.name, "task_id": task_id}
    context = create_request_context(data, sender_id, kind="task")
    if trace is not None:
        context.trace = trace
    _running.set((task_id, context))
    # Logged once bound, so the record carries the task's (fresh) id; never the values.
    if sent_id is not None and sender_id is None:
        log_rejected(f"{REQUEST_ID_HEADER} task header", len(str(sent_id)))
    if traceparent is not None and trace is None:
        log.debug("ignored an invalid traceparent task header")


def _leave_task(task_id: str | None = None, **_ignored: Any) -> None:
    """``task_postrun``: close the task's context, and any the task left bound in its unit."""
    running = _running.get()
    if running is None or running[0] != task_id:
        return  # not ours: an eager run inside a context
    _running.set(None)
    if not close_request_context(running[1]):
        close_request_context()
