"""The Flask app the live-view browser test runs under ``gunicorn -k gevent`` (``liveview_app:app``).

Not a test module.  Tracing and the live view are on; ``LIVE_VIEW_LEAK_AFTER`` (seconds, from
the environment) sets how old a context must be to be flagged as a probable leak.  The
children's sleeps are the work that keeps a fan-out in flight, not waits for a condition.
"""

from __future__ import annotations

import os
import random

import gevent
import gevent.event
from flask import Flask, jsonify, request
from probe_views import add_probe_views

from flask_reqctx import ReqCtx, get_request_context

app = Flask(__name__)
app.config.update(
    REQCTX_LIVE_VIEW=True,
    REQCTX_TRACE_KEEP=2000,
    REQCTX_LIVE_VIEW_LEAK_AFTER=float(os.environ.get("LIVE_VIEW_LEAK_AFTER", "60")),
)
ReqCtx(app)

_release = gevent.event.Event()


def _request_id() -> str:
    ctx = get_request_context()
    assert ctx is not None
    return ctx.request_id


add_probe_views(app)  # the probes tests/servers.py uses (readiness, wait_idle)


@app.get("/fanout")
def fanout():
    children = int(request.args.get("children", "3"))
    max_ms = float(request.args.get("max_ms", "10"))

    def fetch_part() -> None:
        gevent.sleep(random.uniform(1, max_ms) / 1000)

    gevent.joinall([gevent.spawn(fetch_part) for _ in range(children)])
    return jsonify(request_id=_request_id())


@app.get("/suspend")
def suspend():
    """Leaves a greenlet waiting (until ``/release``) after the response is sent."""

    def wait_for_release() -> None:
        _release.wait()

    gevent.spawn(wait_for_release)  # SUSPENDED-GREENLET-SITE
    return jsonify(request_id=_request_id())


@app.get("/release")
def release():
    global _release
    event, _release = _release, gevent.event.Event()
    event.set()
    return "released"
