"""The apps every benchmark compares: one Flask app per (variant, shape), all served at ``/``.

Variants (how a request gets an id):

* ``bare``: plain Flask, no id at all (the baseline);
* ``reqctx``: ``ReqCtx(app)``;
* ``flask-log-request-id``: its ``RequestID(app)`` (the id lives in ``g.log_request_id``;
  its ``current_request_id()`` imports ``flask._app_ctx_stack``, gone in Flask 3);
* ``g+uuid4``: what users write by hand, ``g.request_id = str(uuid4())`` in a
  ``before_request`` and the ``X-Request-ID`` header set in an ``after_request``;
* ``otel``: OpenTelemetry's Flask instrumentation, SDK ``TracerProvider``,
  ``SimpleSpanProcessor`` into an in-memory exporter (the trace id is the request's id).

Shapes:

* ``hello``: returns ``"Hello, World!"``;
* ``realistic``: reads the variant's id 5 times, logs one line through
  :class:`flask_reqctx.logging.RequestIdFilter` (the same handler for every variant, writing to a
  null stream; ReqCtx's line takes its id from the filter, the others pass theirs in
  ``extra``), returns a 20-key JSON object;
* ``fanout``: spawns 10 greenlets (``gevent.spawn`` + ``gevent.joinall``), each reading its
  context once, and returns how many saw one.  Its variants are ``bare`` (gevent's own
  class, nothing carried), ``copy-context`` (the hand-written
  ``gevent.spawn(copy_context().run, f)``) and ``reqctx`` (the ``gevent.spawn`` that
  ``import flask_reqctx`` patches).

Only ``reqctx`` apps import flask_reqctx's extension; the realistic shape imports its
logging filter, which imports the package: run baselines with ``FLASK_REQCTX_PATCH=0``
(as :func:`variant_env` does) when gevent must stay unpatched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from contextvars import copy_context
from typing import Any
from uuid import uuid4

from flask import Flask, Response, g, has_request_context
from werkzeug.test import EnvironBuilder

VARIANTS = ("bare", "reqctx", "flask-log-request-id", "g+uuid4", "otel")
FANOUT_VARIANTS = ("bare", "copy-context", "reqctx")
SHAPES = ("hello", "realistic", "fanout")
FANOUT = 10
ID_HEADER = "X-Request-ID"
LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s %(trace_id)s] %(name)s: %(message)s"
#: 19 keys besides the request id: the realistic view's JSON has 20.
PAYLOAD = {f"field_{i:02d}": i * 7 for i in range(19)}

log = logging.getLogger("benchmarks.view")


def variants_for(shape: str) -> tuple[str, ...]:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: one of {', '.join(SHAPES)}")
    return FANOUT_VARIANTS if shape == "fanout" else VARIANTS


def variant_env(variant: str) -> dict[str, str]:
    """Environment for a process running ``variant``: only ReqCtx's may patch gevent."""
    return {"FLASK_REQCTX_PATCH": "1" if variant == "reqctx" else "0"}


class NullStream:
    """A stream that drops what it is given (a log handler's target)."""

    write = staticmethod(len)

    def flush(self) -> None:
        return None


def configure_logging() -> None:
    """One handler with ReqCtx's filter for every variant (idempotent)."""
    if log.handlers:
        return
    from flask_reqctx.logging import RequestIdFilter

    handler = logging.StreamHandler(NullStream())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _no_id() -> str:
    return "-"


def _g_id() -> str:
    return g.request_id  # type: ignore[no-any-return]


def _log_request_id() -> str:
    return g.log_request_id  # type: ignore[no-any-return]


def _install(app: Flask, variant: str) -> Callable[[], str]:
    """Set ``variant`` up on ``app``; return how a view reads the request's id."""
    if variant == "bare":
        return _no_id
    if variant == "reqctx":
        from flask_reqctx import ReqCtx, get_request_context

        ReqCtx(app)
        return lambda: get_request_context().request_id  # type: ignore[union-attr]
    if variant == "flask-log-request-id":
        from flask_log_request_id import RequestID

        RequestID(app)
        return _log_request_id
    if variant == "g+uuid4":

        @app.before_request
        def set_request_id() -> None:
            g.request_id = str(uuid4())

        @app.after_request
        def echo_request_id(response: Response) -> Response:
            response.headers[ID_HEADER] = g.request_id
            return response

        return _g_id
    if variant == "otel":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.trace import get_current_span

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_bounded_exporter()))
        FlaskInstrumentor.instrument_app(app, tracer_provider=provider)  # type: ignore[no-untyped-call]

        def otel_id() -> str:
            return format(get_current_span().get_span_context().trace_id, "032x")

        return otel_id
    raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")


def _bounded_exporter() -> Any:
    """OpenTelemetry's in-memory exporter, emptied every 1024 spans so a long load run
    does not grow without bound."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class BoundedInMemorySpanExporter(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            result = super().export(spans)
            if len(self._finished_spans) >= 1024:
                self.clear()
            return result

    return BoundedInMemorySpanExporter()


def make_app(variant: str, shape: str) -> Flask:
    """The app for ``variant`` in ``shape`` (see the module docstring)."""
    if variant not in variants_for(shape):
        raise ValueError(f"variant {variant!r} has no {shape!r} app: one of {variants_for(shape)}")
    app = Flask(f"bench_{variant}_{shape}")
    if shape == "fanout":
        _fanout_view(app, variant)
        return app
    read_id = _install(app, variant)
    if shape == "hello":

        @app.get("/")
        def hello() -> str:
            return "Hello, World!"

        return app

    configure_logging()
    # ReqCtx's log line takes its id from the filter: passing it would skip the lookup.
    extra = variant != "reqctx"

    @app.get("/")
    def realistic() -> dict[str, Any]:
        request_id = read_id()
        read_id(), read_id(), read_id(), read_id()
        log.info("handled", extra={"request_id": request_id} if extra else None)
        return {"request_id": request_id, **PAYLOAD}

    return app


def _fanout_view(app: Flask, variant: str) -> None:
    import gevent
    import gevent.greenlet

    # Each child reads its variant's context once: Flask's own (carried only by
    # copy_context) or ReqCtx's.
    seen: Callable[[], Any] = has_request_context
    if variant == "reqctx":
        from flask_reqctx import ReqCtx, get_request_context, patches

        if "gevent" not in patches.patched():
            raise RuntimeError("the reqctx fan-out needs flask_reqctx's gevent patch (FLASK_REQCTX_PATCH=1)")
        ReqCtx(app)
        seen = get_request_context
    spawn = gevent.greenlet.Greenlet.spawn  # gevent's own class, even once flask_reqctx patched it

    # One view per variant, each spawning on its first line: gevent's spawning_stack capture
    # reads the view frame's line number by a walk of its line table up to the current
    # instruction, so a spawn further down the function costs every child more.
    if variant == "bare":

        def fanout() -> str:
            children = [spawn(seen) for _ in range(FANOUT)]
            gevent.joinall(children)
            return str(sum(1 for child in children if child.value))

    elif variant == "copy-context":

        def fanout() -> str:
            children = [spawn(copy_context().run, seen) for _ in range(FANOUT)]
            gevent.joinall(children)
            return str(sum(1 for child in children if child.value))

    else:

        def fanout() -> str:
            children = [gevent.spawn(seen) for _ in range(FANOUT)]
            gevent.joinall(children)
            return str(sum(1 for child in children if child.value))

    app.get("/")(fanout)


def spawning_stack_frames() -> dict[str, tuple[int, list[str]]]:
    """For gevent's own class and ReqCtx's patched one, spawning from one call site in a
    request view: (frames gevent captured, the frames above the call site)."""
    import gevent
    import gevent.greenlet

    import flask_reqctx

    flask_reqctx.patches.install()
    app = Flask("bench_spawning_stack")
    flask_reqctx.ReqCtx(app)
    found: dict[str, tuple[int, list[str]]] = {}

    @app.get("/")
    def view() -> str:
        for name, spawn in (("gevent's own class", gevent.greenlet.Greenlet.spawn), ("ReqCtx", gevent.spawn)):
            child = spawn(int)  # the call site, the same for both
            chain, frame = [], child.spawning_stack
            while frame is not None:
                chain.append(frame.f_code)
                frame = frame.f_back
            child.join()
            above = chain[: [code.co_name for code in chain].index("view")]
            found[name] = (len(chain), [f"{os.path.basename(c.co_filename)}:{c.co_qualname}" for c in above])
        return "ok"

    if app.test_client().get("/").status_code != 200:
        raise RuntimeError("the spawning_stack probe failed")
    return found


# -- driving an app at the WSGI level ----------------------------------------------------


def environ(path: str = "/") -> dict[str, Any]:
    """A request's WSGI environ, built once (copy it per call: Werkzeug writes into it)."""
    return EnvironBuilder(path=path, headers=[("User-Agent", "bench"), ("Accept", "*/*")]).get_environ()


class Captured:
    """A ``start_response`` that keeps the status and headers of the last response."""

    status = ""
    headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.status, self.headers = status, headers


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def call(app: Any, env: dict[str, Any], respond: Callable[..., Any] = start_response) -> bytes:
    """One request, as a server makes it: call, consume the body, close it."""
    body: Iterable[bytes] = app(env.copy(), respond)
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def run_requests(app: Any, env: dict[str, Any], n: int) -> None:
    """``n`` requests in a tight loop (what the instruction counts and timings measure)."""
    for _ in range(n):
        body = app(env.copy(), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()


WARMUP = 200


def workload(variant: str, shape: str, n: str) -> None:
    """The program callgrind measures: build the app, warm up, then ``n`` requests between
    the two marker calls."""
    app = make_app(variant, shape)
    env = environ()
    run_requests(app, env, WARMUP)
    os.getppid()  # callgrind --zero-before=os_getppid: the count starts here ...
    run_requests(app, env, int(n))
    os.getpgrp()  # ... and --dump-before=os_getpgrp writes it out here


if __name__ == "__main__":
    import sys

    workload(*sys.argv[1:4])
