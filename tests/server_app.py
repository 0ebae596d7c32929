"""The Flask app that the real-server tests run under gunicorn (``server_app:app``).

Not a test module: gunicorn imports it in its worker processes (``tests/servers.py``).
Under ``-k gevent`` the worker has monkey-patched the process before this import, so
``threading.Thread`` and ``time.sleep`` are gevent's; under ``-k sync``/``-k gthread``
they are real threads and real sleeps, and children are threads instead of greenlets.
The sleeps here are the behaviour served (work that keeps requests and children in flight,
a busy pool slot), never a wait for a condition.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time

import gevent
import gevent.pool
from flask import Flask, Response, jsonify, request
from gevent import monkey
from probe_views import add_probe_views

import flask_reqctx  # importing it wraps gevent.spawn & co.; the views look them up at call time
from flask_reqctx import ReqCtx, get_request_context, stats


def _gevent_worker() -> bool:
    """Asked per call: with ``--preload`` this module is imported before gevent patches."""
    return monkey.is_module_patched("threading")


assert flask_reqctx.patches.installed(), "server tests need FLASK_REQCTX_PATCH unset or 1"

app = Flask(__name__)
ReqCtx(app)
add_probe_views(app)

# The extension's records, named (its messages carry no prefix): ``flask_reqctx: LEVEL: message``
# on stderr, which gunicorn's log collects (``GunicornServer.extension_errors``).
_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
logging.getLogger("flask_reqctx").addHandler(_handler)
log = logging.getLogger("server_app")

#: (id the view saw, id its late child saw, the request had been closed when the child ran)
LATE: list[dict] = []
#: request ids whose response has been closed (for /late)
_CLOSED: set[str] = set()


def _seen_id() -> str | None:
    ctx = get_request_context()
    return ctx.request_id if ctx is not None else None


def _spawn(fn, *args):
    """A child unit of the current request: a greenlet under gevent, else a thread."""
    if _gevent_worker():
        return gevent.spawn(fn, *args)
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    return thread


def _join(child) -> None:
    if _gevent_worker() and isinstance(child, gevent.Greenlet):
        child.join()
        if not child.successful():
            raise child.exception
    else:
        child.join()


@app.get("/context")
def context_view():
    """The request's context, also logged (as an app that logs its request data would)."""
    ctx = get_request_context()
    assert ctx is not None
    log.warning("context %s", json.dumps(ctx.to_dict()))
    return jsonify(ctx.to_dict())


@app.get("/fanout")
def fanout():
    children = int(request.args.get("children", "3"))
    max_ms = float(request.args.get("max_ms", "20"))
    seen: list[str | None] = []

    def child() -> None:
        time.sleep(random.uniform(0, max_ms) / 1000.0)
        seen.append(_seen_id())

    units = [_spawn(child) for _ in range(children)]
    thread = threading.Thread(target=child)  # a real thread, or a greenlet under gevent
    thread.start()
    units.append(thread)
    for unit in units:
        _join(unit)
    # ``live`` (units holding a context in this worker now) shows how much overlapped.
    return jsonify(
        request_id=_seen_id(), seen=seen, pid=os.getpid(), gevent=_gevent_worker(), live=stats()["live"]
    )


@app.get("/child")
def one_child():
    """The cheapest request with a child unit (for the many-requests memory test)."""
    seen: list[str | None] = []
    child = _spawn(lambda: seen.append(_seen_id()))
    _join(child)
    if seen != [_seen_id()]:
        raise AssertionError(f"child saw {seen}, view {_seen_id()}")
    return "ok"


@app.get("/raise")
def raise_view():
    raise RuntimeError("boom (expected by the server tests)")


@app.get("/stream")
def stream():
    chunks = int(request.args.get("n", "5"))
    delay = float(request.args.get("delay", "0.01"))

    def generate():
        for i in range(chunks):
            time.sleep(delay)
            yield f'{{"i": {i}, "seen": "{_seen_id()}"}}\n'

    return Response(generate(), mimetype="application/x-ndjson")


@app.get("/timeout")
def timeout_view():
    """A ``gevent.Timeout`` fires inside the view: escaping it (-> 500), or caught (-> 504)."""
    handled = request.args.get("handled") == "1"
    timeout = gevent.Timeout(0.01)
    timeout.start()
    try:
        gevent.sleep(1)
    except gevent.Timeout as exc:
        if exc is not timeout or not handled:
            raise
        return jsonify(request_id=_seen_id(), timed_out=True), 504
    finally:
        timeout.close()
    return jsonify(request_id=_seen_id(), timed_out=False)


@app.get("/slow")
def slow():
    time.sleep(float(request.args.get("s", "1")))
    return jsonify(request_id=_seen_id())


@app.get("/late")
def late():
    """A child that first runs after this view returned (and its response was closed)."""
    view_id = _seen_id()

    def child() -> None:
        after_close = view_id in _CLOSED
        _CLOSED.discard(view_id)
        LATE.append({"view": view_id, "child": _seen_id(), "after_close": after_close})

    if _gevent_worker():
        gevent.spawn_later(0.01, child)
    else:
        timer = threading.Timer(0.01, child)
        timer.start()
    response = jsonify(request_id=view_id)
    response.call_on_close(lambda: _CLOSED.add(view_id))
    return response


@app.get("/late-results")
def late_results():
    out = list(LATE)
    LATE.clear()
    return jsonify(out)


@app.get("/rss")
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                kib = int(line.split()[1])
                return jsonify(rss=kib * 1024, pid=os.getpid())
    raise RuntimeError("no VmRSS in /proc/self/status")


@app.get("/teardown-raises")
def teardown_raises():
    return "the view is fine; its teardown raises"


@app.teardown_request
def _raise_in_teardown(exc: BaseException | None) -> None:
    if request.path == "/teardown-raises":
        raise RuntimeError("teardown failed (expected by the server tests)")


@app.get("/stream-raises")
def stream_raises():
    def body():
        raise RuntimeError("no first chunk (expected by the server tests)")
        yield b"never"

    return Response(body())


# -- units that never run, contexts never closed, pools (the hardening shapes) --------------

def _shape_never_started() -> None:
    gevent.Greenlet(_seen_id)  # created in the request's context, never started, dropped


def _shape_pool_full() -> None:
    pool = gevent.pool.Pool(1)
    busy = pool.spawn(gevent.sleep, 0)
    try:
        pool.start(gevent.Greenlet(_seen_id), blocking=False)  # the load-shedding pattern
    except gevent.pool.PoolFull:
        pass
    busy.join()


def _shape_pool_timeout() -> None:
    pool = gevent.pool.Pool(1)
    busy = pool.spawn(gevent.sleep, 0.002)
    try:
        with gevent.Timeout(0.0005):
            pool.spawn(_seen_id)  # waits for the slot; the Timeout abandons it
    except gevent.Timeout:
        pass
    busy.join()


def _shape_unclosed_context() -> None:
    gevent.spawn(flask_reqctx.create_request_context, None, "job-left-open").join()


UNIT_SHAPES = {
    "never-started": _shape_never_started,
    "pool-full": _shape_pool_full,
    "pool-timeout": _shape_pool_timeout,
    "unclosed-context": _shape_unclosed_context,
}


@app.get("/unit-shape/<shape>")
def unit_shape(shape: str):
    UNIT_SHAPES[shape]()
    return "ok"


@app.get("/pools")
def pools():
    """What jobs of every gevent pool API and of gevent's thread pool saw."""
    items = range(3)
    pool = gevent.pool.Pool(2)
    blocker = pool.spawn(gevent.sleep, 0.001)
    full_pool = gevent.pool.Pool(1)
    full_pool.spawn(gevent.sleep, 0.001)
    threads = gevent.get_hub().threadpool
    seen = {
        "spawn": pool.spawn(_seen_id).get(),
        "apply_async (full pool)": full_pool.apply_async(_seen_id).get(),
        "map": pool.map(lambda _i: _seen_id(), items),
        "imap": list(pool.imap(lambda _i: _seen_id(), items)),
        "imap_unordered": list(pool.imap_unordered(lambda _i: _seen_id(), items)),
        "map_async": pool.map_async(lambda _i: _seen_id(), items).get(),
        "group map": gevent.pool.Group().map(lambda _i: _seen_id(), items),
        "threadpool spawn": threads.spawn(_seen_id).get(),
        "threadpool apply": threads.apply(_seen_id),
    }
    blocker.join()
    full_pool.join()
    return jsonify(request_id=_seen_id(), seen=seen)
