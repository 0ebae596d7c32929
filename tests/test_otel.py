"""OpenTelemetry alignment: a request's trace id and outgoing parent are the current span's.

Real OpenTelemetry SDK, real ``opentelemetry-instrumentation-flask`` (its server span starts
in a ``before_request``, after our middleware made the context), in-memory exporter.
"""

from __future__ import annotations

import pytest
from flask import Flask, jsonify
from fresh_interpreter import run_in_fresh_interpreter

from flask_reqctx import ReqCtx, get_request_context, outgoing_headers

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


def make_app(instrumented: bool) -> tuple[Flask, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Flask("otel_app")
    ReqCtx(app)
    if instrumented:
        FlaskInstrumentor().instrument_app(app, tracer_provider=provider)

    @app.get("/")
    def view():
        ctx = get_request_context()
        span = trace.get_current_span().get_span_context()
        return jsonify(
            trace_id=ctx.trace_id,
            outgoing=outgoing_headers(),
            span_trace=format(span.trace_id, "032x") if span.is_valid else None,
        )

    return app, exporter


@pytest.fixture
def instrumented():
    app, exporter = make_app(True)
    yield app, exporter
    FlaskInstrumentor().uninstrument_app(app)


def server_span(exporter: InMemorySpanExporter):
    spans = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert len(spans) == 1, spans
    return spans[0]


def test_the_request_joins_the_server_span_of_the_instrumentation(instrumented):
    app, exporter = instrumented
    body = app.test_client().get("/").get_json()
    span = server_span(exporter)
    trace_id, span_id = format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")
    assert body["trace_id"] == body["span_trace"] == trace_id
    flags = format(int(span.context.trace_flags), "02x")
    assert body["outgoing"]["traceparent"] == f"00-{trace_id}-{span_id}-{flags}"
    assert int(flags, 16) & 1  # the SDK's default sampler records it, and downstream is told so


def test_an_incoming_traceparent_keeps_its_trace_and_the_span_becomes_the_parent(instrumented):
    app, exporter = instrumented
    body = app.test_client().get("/", headers={"traceparent": INCOMING}).get_json()
    span = server_span(exporter)
    assert format(span.context.trace_id, "032x") == INCOMING_TRACE == body["trace_id"]
    span_id = format(span.context.span_id, "016x")
    flags = format(int(span.context.trace_flags), "02x")
    assert body["outgoing"]["traceparent"] == f"00-{INCOMING_TRACE}-{span_id}-{flags}"


def test_concurrent_requests_each_follow_their_own_span(instrumented):
    from concurrent.futures import ThreadPoolExecutor

    app, exporter = instrumented

    def one(_: int) -> dict:
        return app.test_client().get("/").get_json()

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(one, range(40)))
    spans = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert {b["trace_id"] for b in bodies} == spans
    assert len(spans) == 40
    for body in bodies:
        assert body["trace_id"] == body["span_trace"]


def test_without_a_span_nothing_changes():
    app, exporter = make_app(False)
    body = app.test_client().get("/").get_json()
    assert body["span_trace"] is None
    assert len(body["trace_id"]) == 32
    _version, trace_id, parent, flags = body["outgoing"]["traceparent"].split("-")
    assert trace_id == body["trace_id"] and flags == "00" and len(parent) == 16
    assert exporter.get_finished_spans() == ()


def test_importing_the_extension_never_imports_opentelemetry():
    script = (
        "import sys, flask, flask_reqctx\n"
        "app = flask.Flask('x'); app.config['REQCTX_LIVE_VIEW'] = True; flask_reqctx.ReqCtx(app)\n"
        "with app.test_request_context():\n"
        "    pass\n"
        "body = app.test_client().get('/nothing')\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    run_in_fresh_interpreter(script)
