"""Our Celery integration beside ``opentelemetry-instrumentation-celery``: one ``traceparent``
per message, agreeing with OpenTelemetry's PRODUCER span, whichever was set up first, for
messages sent from the view, a child greenlet and a thread.

Each order runs in a fresh interpreter (both connect to Celery's process-wide signals);
messages go to Celery's in-memory transport through Celery's own publish path.
"""

from __future__ import annotations

import pytest
from fresh_interpreter import run_in_fresh_interpreter

pytest.importorskip("celery")
pytest.importorskip("opentelemetry.instrumentation.celery", reason="the test extra is not installed")

SCRIPT = """
import threading
import gevent
from celery import Celery, signals
from flask import Flask
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from flask_reqctx import ReqCtx, get_request_context
from flask_reqctx.celery import init_celery

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
celery_app = Celery("messages", broker="memory://localhost/", backend="cache+memory://")
# Every thread's current app (Celery's is thread-local): OpenTelemetry's receiver finds the
# task through it, and without it ends its PRODUCER span before the message is sent.
celery_app.set_default()

@celery_app.task
def noop():
    return None

if {otel_first}:
    CeleryInstrumentor().instrument(tracer_provider=provider)
    init_celery(celery_app)
else:
    init_celery(celery_app)
    CeleryInstrumentor().instrument(tracer_provider=provider)
published = []
signals.after_task_publish.connect(lambda headers=None, **_: published.append(dict(headers)), weak=False)

app = Flask("sender")
ReqCtx(app)
FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
seen = {{}}

@app.get("/")
def view():
    seen["trace_id"] = get_request_context().trace_id
    noop.delay()
    gevent.spawn(noop.delay).join()
    thread = threading.Thread(target=noop.delay)
    thread.start()
    thread.join()
    return "ok"

assert app.test_client().get("/").status_code == 200
producers = {{
    (format(s.context.trace_id, "032x"), format(s.context.span_id, "016x"))
    for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER
}}
assert len(published) == 3 == len(producers), (published, producers)
sent = set()
for headers in published:
    names = [name for name in headers if name.lower() == "traceparent"]
    assert names == ["traceparent"], headers
    version, trace_id, parent, flags = headers["traceparent"].split("-")
    assert trace_id == seen["trace_id"] and int(flags, 16) & 1, headers
    sent.add((trace_id, parent))
assert sent == producers, (sent, producers)
"""


@pytest.mark.parametrize("otel_first", [True, False], ids=["otel set up first", "ours set up first"])
def test_one_traceparent_per_message_agreeing_with_opentelemetry(otel_first):
    run_in_fresh_interpreter(SCRIPT.format(otel_first=otel_first))
