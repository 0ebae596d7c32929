"""The app the server benchmarks run under ``gunicorn -k gevent -w 1 benchmarks.app:app``.

``BENCH_REQCTX=1`` wraps it with ``ReqCtx``; ``BENCH_REQCTX=0`` never imports flask_reqctx
(so gevent.spawn stays gevent's own).  Routes:

* ``/``: hello world.
* ``/fanout``: spawns 10 child greenlets with ``gevent.spawn`` and joins them
  (``gevent.joinall``); each child reads the request context when there is one.
* ``/stats``: ``flask_reqctx.stats()`` (empty without ReqCtx) and this process's RSS.
"""

from __future__ import annotations

import os

import gevent
from flask import Flask

WITH_REQCTX = os.environ.get("BENCH_REQCTX", "0") == "1"
FANOUT = 10

app = Flask(__name__)

if WITH_REQCTX:
    from flask_reqctx import ReqCtx, get_request_context, stats

    ReqCtx(app)
else:

    def get_request_context() -> None:
        return None

    def stats() -> dict[str, int]:
        return {}


def child() -> object:
    return get_request_context()


@app.get("/")
def hello() -> str:
    return "Hello, World!"


@app.get("/fanout")
def fanout() -> str:
    children = [gevent.spawn(child) for _ in range(FANOUT)]
    gevent.joinall(children)
    if WITH_REQCTX:
        assert children[0].value is get_request_context()
    return "Hello, World!"


@app.get("/stats")
def process_stats() -> dict[str, int]:
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {**stats(), "rss": rss}  # "live" counts this /stats request itself
