"""The seed's server in Flask: every route can read its request's context without `request`.

Run it:  gunicorn -k gevent -b 127.0.0.1:8000 example_app:app
Then:    curl -s 127.0.0.1:8000/ ; curl -s 127.0.0.1:8000/fanout
"""

from __future__ import annotations

import threading

import gevent
from flask import Flask, jsonify

from flask_reqctx import ReqCtx, get_request_context, stats

app = Flask(__name__)
reqctx = ReqCtx(app)


def who_am_i(label: str) -> dict[str, str | None]:
    """A helper far from the view: no `request` passed in, yet it knows the request."""
    ctx = get_request_context()
    return {"unit": label, "request_id": ctx.request_id if ctx else None}


@app.get("/")
def index():
    return get_request_context().to_dict()


@app.get("/fanout")
def fanout():
    greenlets = [gevent.spawn(who_am_i, f"greenlet-{i}") for i in range(3)]
    seen_in_thread: list[dict] = []
    thread = threading.Thread(target=lambda: seen_in_thread.append(who_am_i("thread")))
    thread.start()
    thread.join()
    gevent.joinall(greenlets)
    return jsonify(
        request_id=get_request_context().request_id,
        seen=[g.value for g in greenlets] + seen_in_thread,
    )


@app.get("/stats")
def live_stats():
    return jsonify(stats())


@app.get("/health")
def health():
    return "ok"
