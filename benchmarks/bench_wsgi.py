"""Goal 2: per-request cost at the WSGI level, no network.

Three hello-world Flask apps in one process: bare, with ``ReqCtx``, with
flask-log-request-id's ``RequestID``.  Each is called directly with a prebuilt environ
(``werkzeug.test.EnvironBuilder``, copied per call because Werkzeug writes into it) and a
no-op ``start_response``; the body is consumed and closed as a server would.  Batches of
requests run interleaved (A B C A B C ...); per variant we keep the median and the best
batch, and report ratios against the bare app of the same run.  Times are this thread's
CPU time (see ``_common.clock``).

A second pair measures a fan-out view (10 child greenlets spawned and joined per request)
at the same level: bare Flask spawning with gevent's own ``Greenlet`` class against ReqCtx
spawning with ``gevent.spawn`` as patched by ``import flask_reqctx``.
"""

from __future__ import annotations

import gc

import gevent
import gevent.greenlet
from _common import QUICK, clock, compared, emit, median, row
from flask import Flask
from flask_log_request_id import RequestID
from werkzeug.test import EnvironBuilder

from flask_reqctx import ReqCtx, get_request_context, stats

BATCH = 500 if QUICK else 1000
ROUNDS = 9 if QUICK else 25
FANOUT_BATCH = 100 if QUICK else 200
FANOUT = 10


def make_app(variant: str) -> Flask:
    app = Flask(f"bench_{variant}")

    @app.get("/")
    def hello() -> str:
        return "Hello, World!"

    # an app without flask_reqctx has gevent's own class; ``gevent.spawn`` is the patched one
    spawn = gevent.spawn if variant == "reqctx" else gevent.greenlet.Greenlet.spawn

    @app.get("/fanout")
    def fanout() -> str:
        gevent.joinall([spawn(get_request_context) for _ in range(FANOUT)])
        return "Hello, World!"

    if variant == "reqctx":
        ReqCtx(app)
    elif variant == "flask-log-request-id":
        RequestID(app)
    return app


def start_response(status: str, headers: list, exc_info: object = None) -> None:
    return None


def run_batch(app: Flask, environ: dict, n: int) -> float:
    """Seconds per request over ``n`` requests."""
    call = app.__call__
    copy = environ.copy
    sr = start_response
    start = clock()
    for _ in range(n):
        body = call(copy(), sr)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (clock() - start) / n


def main() -> None:
    variants = ["bare", "reqctx", "flask-log-request-id"]
    apps = {v: make_app(v) for v in variants}
    environ = EnvironBuilder(path="/", headers={"User-Agent": "bench", "Accept": "*/*"}).get_environ()
    for v in variants:  # warm-up and a sanity check
        body = apps[v](environ.copy(), start_response)
        assert b"".join(body) == b"Hello, World!"
        run_batch(apps[v], environ, BATCH // 5)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(ROUNDS):
        order = variants if i % 2 == 0 else variants[::-1]  # no variant always runs first
        for v in order:
            gc.collect()
            samples[v].append(run_batch(apps[v], environ, BATCH))
    fanout_environ = dict(environ, PATH_INFO="/fanout")
    fanout_variants = ["bare", "reqctx"]
    fanout_samples: dict[str, list[float]] = {v: [] for v in fanout_variants}
    for v in fanout_variants:
        run_batch(apps[v], fanout_environ, FANOUT_BATCH // 5)
    for i in range(ROUNDS):
        for v in fanout_variants if i % 2 == 0 else fanout_variants[::-1]:
            gc.collect()
            fanout_samples[v].append(run_batch(apps[v], fanout_environ, FANOUT_BATCH))
    assert stats()["live"] == 0, stats()

    rows = []
    med = {v: median(s) * 1e6 for v, s in samples.items()}
    best = {v: min(s) * 1e6 for v, s in samples.items()}
    section = "2. WSGI per request (no network)"
    for v in variants:
        name = f"{v} (median)"
        r = row(section, name, med[v], "us/req")
        if v != "bare":
            ratio = med[v] / med["bare"]
            r.update(baseline="bare (median)", ratio=ratio)
            if v == "reqctx":
                r.update(
                    goal="<= 1.05 and < peer", met=ratio <= 1.05 and med[v] < med["flask-log-request-id"]
                )
        rows.append(r)
    for v in variants:
        r = row(section, f"{v} (best batch)", best[v], "us/req")
        if v != "bare":
            r.update(baseline="bare (best batch)", ratio=best[v] / best["bare"])
        rows.append(r)
    section = f"2b. WSGI per request, fan-out {FANOUT} greenlets"
    fmed = {v: median(s) * 1e6 for v, s in fanout_samples.items()}
    rows.append(row(section, "bare, gevent's Greenlet (median)", fmed["bare"], "us/req"))
    rows.append(
        compared(
            section,
            "reqctx, patched gevent.spawn (median)",
            fmed["reqctx"],
            "us/req",
            "bare (median)",
            fmed["bare"],
        )
    )
    added = {v: med[v] - med["bare"] for v in variants if v != "bare"}
    notes = [
        f"{ROUNDS} interleaved rounds x {BATCH} requests per variant; added per request (median): "
        + ", ".join(f"{v} {us:+.2f} us" for v, us in added.items()),
        f"fan-out: {ROUNDS} interleaved rounds x {FANOUT_BATCH} requests; ReqCtx adds "
        f"{fmed['reqctx'] - fmed['bare']:+.1f} us per request, "
        f"{(fmed['reqctx'] - fmed['bare'] - added['reqctx']) / FANOUT:+.2f} us per child greenlet "
        "beyond the plain request's overhead",
    ]
    emit(rows, notes)


if __name__ == "__main__":
    main()
