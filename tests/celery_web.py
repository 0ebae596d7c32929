"""The Flask app that ``gunicorn -k gevent`` serves in the Celery tests (``celery_web:app``).

Not a test module.  ``GET /enqueue`` sends tasks to the gevent and prefork workers (each
task sends one more to the other pool), by a different path on successive requests;
``GET /enqueue-unreachable`` sends to a broker that never answers
(``$REQCTX_TEST_DEAD_BROKER``), with Celery's own settings bounding the wait.
"""

from __future__ import annotations

import itertools
import os

from celery import Celery, chain, group
from celery_app import celery_app, observe
from flask import Flask, jsonify
from kombu.exceptions import OperationalError
from probe_views import add_probe_views

from flask_reqctx import ReqCtx, get_request_context
from flask_reqctx.celery import init_celery

app = Flask(__name__)
ReqCtx(app)
add_probe_views(app)

#: Where the broker is unreachable, sending gives up after one retry of a 1 s connect.
unreachable = Celery("unreachable", broker=os.environ.get("REQCTX_TEST_DEAD_BROKER", "redis://127.0.0.1:9/0"))
unreachable.conf.update(
    broker_transport_options={"socket_connect_timeout": 1.0},
    task_publish_retry_policy={
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    },
)
init_celery(unreachable)

_paths = itertools.count()


def _send(label: str) -> str:
    """Two tasks, one per pool, each followed by one on the other pool; returns the path used."""
    path = next(_paths) % 3
    if path == 0:
        observe.delay(label, "delay", 0, ["prefork"])  # the default queue is the gevent pool's
        chain(
            observe.si(label, "chain", 0).set(queue="prefork"),
            observe.si(label, "chain", 1).set(queue="gevent"),
        ).apply_async()
        return "delay+chain"
    if path == 1:
        observe.apply_async((label, "apply_async", 0, ["prefork"]), queue="gevent")
        celery_app.send_task(observe.name, (label, "send_task", 0, ["gevent"]), queue="prefork")
        return "apply_async+send_task"
    group(
        observe.si(label, "group", 0, ["prefork"]).set(queue="gevent"),
        observe.si(label, "group", 0, ["gevent"]).set(queue="prefork"),
    ).apply_async()
    return "group"


@app.get("/enqueue")
def enqueue():
    ctx = get_request_context()
    assert ctx is not None
    path = _send(ctx.request_id)
    return jsonify(
        request_id=ctx.request_id,
        trace_id=ctx.trace_id,
        span_id=ctx.trace.span_id,
        path=path,
        same_after_send=get_request_context() is ctx,
    )


@app.get("/enqueue-unreachable")
def enqueue_unreachable():
    ctx = get_request_context()
    assert ctx is not None
    error = None
    try:
        unreachable.send_task(observe.name, (ctx.request_id, "unreachable", 0))
    except OperationalError as exc:
        error = f"{type(exc).__module__}.{type(exc).__name__}"
    return jsonify(request_id=ctx.request_id, error=error, same_after_send=get_request_context() is ctx)
