"""Two services under real OpenTelemetry, structlog and Sentry, served by gunicorn -k gevent.

Not a test module.  ``make_traced()`` (service A) creates one child of a given kind per
``/fan/<kind>`` request, inside a span of its own, and the child calls ``make_downstream()``
(service B) with ``requests``; both services record their finished spans in memory
(``/spans``).  A's children also write a structlog line and capture a Sentry event (an
in-memory transport: nothing leaves the process), read back from ``/observed``.  ``/late``
(``make_late()``) sets a user's own ``ContextVar`` to the request's id and leaves a child
that reads it after the response (``/late-results``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from contextvars import ContextVar
from typing import Any

import gevent
import gevent.pool
import requests
import sentry_sdk
import structlog
from flask import Flask, jsonify, request
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sentry_sdk.transport import Transport
from structlog.testing import LogCapture

from flask_reqctx import ReqCtx, get_request_context, stats
from flask_reqctx.integrations import requests as reqctx_requests

#: A user's own variable, set per request.
USER: ContextVar[str] = ContextVar("traced_services.user", default="unset")

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("traced_services")


class MemoryTransport(Transport):
    """Sentry events kept in this process: the tags of each captured message."""

    events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Any) -> None:
        for item in envelope.items:
            event = item.get_event()
            if event is not None:
                self.events.append({"message": event.get("message"), "tags": event.get("tags", {})})


log_capture = LogCapture()
#: What each late child saw: ``{"user": ..., "ctx": request id}``.
LATE: list[dict[str, Any]] = []


def _spans() -> Any:
    """The spans finished so far in this worker, as plain data."""
    return jsonify(
        [
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": format(span.context.trace_id, "032x"),
                "span_id": format(span.context.span_id, "016x"),
                "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
            }
            for span in exporter.get_finished_spans()
        ]
    )


def _common(app: Flask) -> None:
    app.get("/spans")(_spans)

    @app.get("/stats")
    def live_units() -> Any:
        return jsonify(pid=os.getpid(), live_besides_this_request=stats()["live"] - 1)

    @app.get("/health")
    def health() -> Any:
        return jsonify(pid=os.getpid())


def make_downstream() -> Flask:
    """Service B: reports the ``traceparent`` it received and its own trace id."""
    app = Flask("downstream")
    ReqCtx(app)
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    _common(app)

    @app.get("/hop")
    def hop() -> Any:
        return jsonify(
            traceparent=request.headers.get("traceparent"), trace_id=get_request_context().trace_id
        )

    return app


def _work(kind: str) -> dict[str, Any]:
    """What every child does: log, capture an event, call B, and report what it saw."""
    structlog.get_logger().info("child", kind=kind)
    sentry_sdk.capture_message(f"child {kind}")
    response = requests.get(os.environ["DOWNSTREAM_URL"] + "/hop", timeout=20)
    ctx = get_request_context()
    return {"ctx_trace_id": ctx.trace_id if ctx else None, "user": USER.get(), "downstream": response.json()}


def _in_thread(kind: str) -> Any:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(_work(kind)))
    thread.start()
    thread.join()
    return box[0]


def _in_executor(kind: str) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_work, kind).result()


CHILDREN = {
    "spawn": lambda kind: gevent.spawn(_work, kind).get(),
    "pool-map": lambda kind: gevent.pool.Pool(2).map(_work, [kind])[0],
    "imap-unordered": lambda kind: next(iter(gevent.pool.Pool(2).imap_unordered(_work, [kind]))),
    "threadpool": lambda kind: gevent.get_hub().threadpool.spawn(_work, kind).get(),
    "thread": _in_thread,
    "executor": _in_executor,
}


async def _async_work() -> Any:
    return _work("asyncio")


def _answer(span: Any, child: Any) -> Any:
    creation = span.get_span_context()
    return jsonify(
        trace_id=format(creation.trace_id, "032x"),
        creation_span=format(creation.span_id, "016x"),
        request_trace_id=get_request_context().trace_id,
        child=child,
    )


def make_late() -> Flask:
    """A service whose ``/late`` leaves a child that reads the user's variable after the
    response went out (no tracing: the load test is about the variable alone)."""
    app = Flask("late")
    ReqCtx(app)
    _common(app)

    @app.get("/late")
    def late() -> Any:
        request_id = get_request_context().request_id
        USER.set(request_id)

        def child() -> None:
            ctx = get_request_context()
            LATE.append({"user": USER.get(), "ctx": ctx.request_id if ctx else None})
            USER.set("set by a late child")  # must reach no other unit

        gevent.spawn_later(0.01, child)
        USER.set("set after the child was created")
        return jsonify(request_id=request_id)

    @app.get("/late-results")
    def late_results() -> Any:
        out = list(LATE)
        LATE.clear()
        return jsonify(out)

    return app


def make_traced() -> Flask:
    """Service A: one child of each kind calls B, inside a span of the view's."""
    reqctx_requests.install()
    RequestsInstrumentor().instrument(tracer_provider=provider)
    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=MemoryTransport, default_integrations=False)
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, log_capture])
    app = Flask("traced")
    ReqCtx(app)
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    _common(app)

    @app.before_request
    def bind_user() -> None:
        user = request.headers.get("X-User", "anonymous")
        structlog.contextvars.bind_contextvars(user=user)
        USER.set(user)

    @app.get("/fan/<kind>")
    def fan_out(kind: str) -> Any:
        sentry_sdk.get_isolation_scope().set_tag("user", USER.get())
        with tracer.start_as_current_span(f"create {kind}") as span:
            child = CHILDREN[kind](kind)
        return _answer(span, child)

    @app.get("/fan-async")
    async def fan_async() -> Any:
        sentry_sdk.get_isolation_scope().set_tag("user", USER.get())
        with tracer.start_as_current_span("create asyncio") as span:
            child = await asyncio.create_task(_async_work())
        return _answer(span, child)

    @app.get("/observed")
    def observed() -> Any:
        out = {"logs": list(log_capture.entries), "events": list(MemoryTransport.events)}
        log_capture.entries.clear()
        MemoryTransport.events.clear()
        return jsonify(out)

    return app
