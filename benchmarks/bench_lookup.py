"""Goal 1: ``get_request_context()`` ns/op against a bare ``ContextVar.get()``, ``flask.g``,
``flask.request.headers`` and OpenTelemetry's ``get_current_span()`` (inside an SDK span),
inside a real request and inside a greenlet spawned by it.

The measurements run in a view called through the ReqCtx-wrapped WSGI app (Werkzeug's
test client: a real WSGI call, the middleware binds the context, Flask pushes its own),
then in a ``gevent.spawn``-ed child of that view (the child inherits the context through
flask_reqctx's spawn patch; Flask's ``request``/``g`` reach it by
``copy_current_request_context``, as a user would do).  Monkey-patched like a gunicorn
gevent worker.  Net ns/op = best of interleaved rounds of timeit minus the empty loop.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import contextvars  # noqa: E402

import gevent  # noqa: E402
import gevent.greenlet  # noqa: E402
from _common import QUICK, emit, net_ns, row  # noqa: E402
from flask import Flask, copy_current_request_context, g, request  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.trace import get_current_span  # noqa: E402

import flask_reqctx  # noqa: E402
from flask_reqctx import ReqCtx, get_request_context  # noqa: E402

REPEAT = 3 if QUICK else 5
ROUNDS = 2 if QUICK else 3

bare = contextvars.ContextVar("bench.bare")

STMTS = {
    "get_request_context()": "get_request_context()",
    "ContextVar.get() (bare)": "bare.get()",
    "get_request_context().request_id": "get_request_context().request_id",
    "flask.g.x": "g.x",
    "flask.request.headers": "request.headers",
    'request.headers.get("X-Request-ID")': 'request.headers.get("X-Request-ID")',
    "otel get_current_span()": "get_current_span()",
    "otel get_current_span().get_span_context().trace_id": "get_current_span().get_span_context().trace_id",
}

app = Flask(__name__)
ReqCtx(app)
tracer = TracerProvider().get_tracer("bench_lookup")
results: dict[str, dict[str, float]] = {}


def measure(where: str) -> None:
    assert get_request_context() is not None, f"no request context {where}"
    bare.set("v")
    g.x = "v"
    ns = {
        "get_request_context": get_request_context,
        "bare": bare,
        "g": g,
        "request": request,
        "get_current_span": get_current_span,
    }
    with tracer.start_as_current_span("bench"):
        assert get_current_span().get_span_context().is_valid
        results[where] = net_ns(STMTS, ns, REPEAT, ROUNDS)


@app.get("/")
def view() -> str:
    measure("in request")

    @copy_current_request_context
    def child() -> None:
        measure("in spawned greenlet")

    assert flask_reqctx.patches.installed() and gevent.Greenlet is not gevent.greenlet.Greenlet
    gevent.spawn(child).get()
    return "ok"


def main() -> None:
    response = app.test_client().get("/", headers={"X-Request-ID": "bench-lookup-1"})
    assert response.status_code == 200, response.data
    rows = []
    for where, values in results.items():
        section = f"1. lookup, {where}"
        grc, cv, gx = values["get_request_context()"], values["ContextVar.get() (bare)"], values["flask.g.x"]
        for name, value in values.items():
            if name == "<empty>":
                continue
            r = row(section, name, value, "ns/op net")
            if name == "get_request_context()":
                r.update(baseline="ContextVar.get()", ratio=grc / cv, goal="<= 2x", met=grc / cv <= 2)
            elif name == "flask.g.x":
                r.update(
                    baseline="get_request_context()",
                    ratio=gx / grc,
                    goal=">= 10x slower",
                    met=gx / grc >= 10,
                )
            elif name != "ContextVar.get() (bare)":
                r.update(baseline="get_request_context()", ratio=value / grc)
            rows.append(r)
    notes = [
        f"empty timeit loop: {results['in request']['<empty>']:.1f} ns/op (subtracted); "
        f"best of {ROUNDS} interleaved rounds x {REPEAT} repeats"
    ]
    emit(rows, notes)


if __name__ == "__main__":
    main()
