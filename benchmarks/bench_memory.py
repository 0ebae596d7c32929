"""Goal 6: memory per live context, and the store size and RSS after many requests.

* Bytes per live child context: N gevent greenlets spawned inside a request context and
  left suspended on an Event (each holds its unit and a fresh ``contextvars.Context``),
  minus the same N greenlets of gevent's own class; tracemalloc diff / N.
* Bytes per in-flight request: N greenlets each inside a WSGI call whose view waits on
  an Event, ReqCtx app minus bare app; tracemalloc diff / N.
* Store and RSS: a ReqCtx app whose view spawns two child greenlets, called at the WSGI
  level; ``stats()`` and RSS after 10,000 and after 100,000 requests (no tracemalloc).
"""

from __future__ import annotations

import gc
import tracemalloc
from contextvars import ContextVar

import gevent
import gevent.event
import gevent.greenlet
from _common import QUICK, compared, emit, row, rss_bytes
from flask import Flask
from werkzeug.test import EnvironBuilder

from flask_reqctx import ReqCtx, close_request_context, create_request_context, get_request_context, stats

LIVE = 500 if QUICK else 2000
FEW, MANY = (2_000, 20_000) if QUICK else (10_000, 100_000)

GeventGreenlet = gevent.greenlet.Greenlet  # gevent's own class, never patched
environ = EnvironBuilder(path="/", headers={"User-Agent": "bench", "Accept": "*/*"}).get_environ()


def start_response(status: str, headers: list, exc_info: object = None) -> None:
    return None


def traced_bytes_per(n: int, setup) -> float:  # type: ignore[no-untyped-def]
    """tracemalloc growth per item while ``setup(n)`` keeps n things alive (it returns a
    release callable, called after the measurement)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        release = setup(n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    release()
    return (after - before) / n


def releaser(event: gevent.event.Event, children: list[gevent.Greenlet]):  # type: ignore[no-untyped-def]
    """What ends a setup's suspended children: set their event, wait until they are done."""

    def release() -> None:
        event.set()
        gevent.joinall(children)

    return release


def suspended_children(spawn):  # type: ignore[no-untyped-def]
    def setup(n: int):  # type: ignore[no-untyped-def]
        event = gevent.event.Event()
        children = [spawn(event.wait) for _ in range(n)]
        gevent.sleep(0)  # every child starts and blocks
        return releaser(event, children)

    return setup


#: Variables other libraries keep per request (an OpenTelemetry span, structlog's, Sentry's).
OTHER_VARIABLES = [ContextVar(f"bench_memory.other{i}") for i in range(5)]


def children_of_a_view(with_reqctx: bool):  # type: ignore[no-untyped-def]
    """n children spawned by a request's view that set the other libraries' variables, left
    suspended after the response: with ReqCtx each carries the view's whole context less
    Flask's (a copy of its template, holding its unit), else gevent's class carries none."""

    def setup(n: int):  # type: ignore[no-untyped-def]
        event = gevent.event.Event()
        children: list[gevent.Greenlet] = []
        app = Flask("bench_memory_children")
        spawn = gevent.spawn if with_reqctx else GeventGreenlet.spawn

        @app.get("/")
        def view() -> str:
            for variable in OTHER_VARIABLES:
                variable.set(object())
            children.extend(spawn(event.wait) for _ in range(n))
            return "spawned"

        if with_reqctx:
            ReqCtx(app)
        b"".join(app(environ.copy(), start_response))
        gevent.sleep(0)  # every child starts and blocks
        return releaser(event, children)

    return setup


def make_app(with_reqctx: bool, event: gevent.event.Event | None = None) -> Flask:
    app = Flask("bench_memory")

    @app.get("/")
    def hello() -> str:
        if event is not None:
            event.wait()
        return "Hello, World!"

    @app.get("/fanout")
    def fanout() -> str:
        gevent.joinall([gevent.spawn(get_request_context) for _ in range(2)])
        return "Hello, World!"

    if with_reqctx:
        ReqCtx(app)
    return app


def in_flight_requests(with_reqctx: bool):  # type: ignore[no-untyped-def]
    def setup(n: int):  # type: ignore[no-untyped-def]
        event = gevent.event.Event()
        app = make_app(with_reqctx, event)

        def call() -> None:
            body = app(environ.copy(), start_response)
            b"".join(body)
            body.close()

        workers = [GeventGreenlet.spawn(call) for _ in range(n)]
        gevent.sleep(0)

        def release() -> None:
            event.set()
            gevent.joinall(workers)

        return release

    return setup


def run_requests(app: Flask, n: int) -> None:
    env = dict(environ, PATH_INFO="/fanout")
    for _ in range(n):
        body = app(env.copy(), start_response)
        for _chunk in body:
            pass
        body.close()


def main() -> None:
    rows = []
    section = "6. memory"
    # -- bytes per live context --------------------------------------------------------
    context = create_request_context({"bench": True})
    try:
        plain = traced_bytes_per(LIVE, suspended_children(GeventGreenlet.spawn))
        patched = traced_bytes_per(LIVE, suspended_children(gevent.spawn))
        assert stats()["live"] == 1, stats()
    finally:
        close_request_context(context)
    rows.append(row(section, "suspended gevent greenlet, gevent's class", plain, "B each"))
    rows.append(
        compared(
            section, "... spawned in a context (unit + Context)", patched, "B each", "gevent's class", plain
        )
    )
    rows.append(row(section, "=> bytes per live child context", patched - plain, "B"))
    plain = traced_bytes_per(LIVE, children_of_a_view(False))
    patched = traced_bytes_per(LIVE, children_of_a_view(True))
    rows.append(row(section, "child of a view outliving it, gevent's class", plain, "B each"))
    rows.append(
        compared(
            section,
            "... with ReqCtx (the view's whole context less Flask's)",
            patched,
            "B each",
            "gevent's class",
            plain,
        )
    )
    rows.append(row(section, "=> bytes per live child of a request's view", patched - plain, "B"))
    bare = traced_bytes_per(LIVE, in_flight_requests(False))
    with_reqctx = traced_bytes_per(LIVE, in_flight_requests(True))
    rows.append(row(section, "in-flight WSGI request, bare Flask", bare, "B each"))
    rows.append(compared(section, "in-flight WSGI request, ReqCtx", with_reqctx, "B each", "bare", bare))
    rows.append(row(section, "=> bytes per live request context", with_reqctx - bare, "B"))
    assert stats()["live"] == 0, stats()

    # -- store size and RSS after many requests ----------------------------------------
    app = make_app(True)
    run_requests(app, 1000)  # warm-up: caches, free lists
    gc.collect()
    rss0 = rss_bytes()
    run_requests(app, FEW - 1000)
    gc.collect()
    stats_few, rss_few = stats(), rss_bytes()
    run_requests(app, MANY - FEW)
    gc.collect()
    stats_many, rss_many = stats(), rss_bytes()
    for n, s, rss in ((FEW, stats_few, rss_few), (MANY, stats_many, rss_many)):
        rows.append(
            row(
                section,
                f"after {n:,} requests (3 units each): live units",
                s["live"],
                "units",
                goal="== 0",
                met=s["live"] == 0,
            )
        )
        rows.append(row(section, f"after {n:,} requests: RSS", rss / 2**20, "MiB"))
    growth = (rss_many - rss_few) / 2**10
    rows.append(
        row(
            section,
            f"RSS growth {FEW:,} -> {MANY:,} requests",
            growth,
            "KiB",
            goal="~0 (no per-request leak)",
            met=(rss_many - rss_few) / (MANY - FEW) < 8,
        )
    )
    notes = [
        f"live-context sizes: {LIVE} live units, tracemalloc; RSS after warm-up {rss0 / 2**20:.1f} MiB; "
        f"stats after {MANY:,}: {stats_many}"
    ]
    emit(rows, notes)


if __name__ == "__main__":
    main()
