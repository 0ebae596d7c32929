"""Tracing and the live view are bounded: memory per kept trace, work per live-view hit."""

from __future__ import annotations

import gc
import json
import os

import gevent
from flask import Flask

from flask_reqctx import ReqCtx, tracing

FANOUT = 3000
KEEP = 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_kept_traces_hold_o_max_units_whatever_the_fan_out():
    """Each request has 3,000 greenlets alive at once and records 20 of them: the ring of 20
    kept traces must not keep anything sized by the 3,000 (a set's table for them is 128 KB:
    2.4 MB for the ring, as measured before the fix; ~0.05 MB after)."""
    app = Flask("bounded")
    app.config.update(TESTING=True, REQCTX_TRACE=True, REQCTX_TRACE_MAX_UNITS=20, REQCTX_TRACE_KEEP=KEEP)
    ReqCtx(app)

    @app.get("/")
    def fan_out() -> str:
        gevent.joinall([gevent.spawn(int) for _ in range(FANOUT)])  # all alive at once
        return "ok"

    client = app.test_client()

    def run(requests: int) -> int:
        for _ in range(requests):
            assert client.get("/", headers={"X-Request-ID": "fan-out-bound"}).status_code == 200
        gc.collect()
        return rss_bytes()

    before = run(5)  # the allocator's peak for one request is reached here
    after = run(KEEP + 5)  # the ring is full of big fan-outs
    kept = [t for t in tracing.finished() if t["request_id"] == "fan-out-bound"]
    # at least KEEP: the ring is as large as the largest KEEP any app of the process asked for
    assert len(kept) >= KEEP and all(t["dropped"] == FANOUT + 1 - 20 for t in kept)
    growth = after - before
    print(f"RSS growth over {KEEP} kept traces of {FANOUT}-greenlet requests: {growth / 1e6:.2f} MB")
    assert growth < 1_000_000, growth


def viewed_app() -> Flask:
    app = Flask("paged")
    app.config.update(TESTING=True, REQCTX_LIVE_VIEW=True, REQCTX_LIVE_VIEW_SHOW=5)
    ReqCtx(app)

    @app.get("/work")
    def work() -> str:
        gevent.joinall([gevent.spawn(gevent.sleep, 0) for _ in range(3)])
        return "ok"

    return app


def test_the_json_and_chrome_trace_show_what_is_asked_and_say_how_many_there_are():
    app = viewed_app()
    client = app.test_client()
    for i in range(12):
        client.get("/work", headers={"X-Request-ID": f"paged-{i}"})

    response = client.get("/_reqctx/json")
    assert response.is_streamed  # produced a trace at a time
    data = json.loads(response.get_data(as_text=True))
    assert [t["request_id"] for t in data["finished"]] == [f"paged-{i}" for i in range(11, 6, -1)]  # SHOW=5
    assert data["finished_count"] >= 12 and data["live_count"] == 0 and data["live"] == []

    data = client.get("/_reqctx/json?last=2&live=0").get_json()
    assert [t["request_id"] for t in data["finished"]] == ["paged-11", "paged-10"]
    assert client.get("/_reqctx/json?last=-3").get_json()["finished"] == []

    chrome = client.get("/_reqctx/chrome-trace.json?last=3")
    assert chrome.is_streamed
    events = json.loads(chrome.get_data(as_text=True))["traceEvents"]
    names = [e["args"]["name"] for e in events if e.get("name") == "process_name"]
    assert names == [f"GET /work paged-{i}" for i in (11, 10, 9)]
    assert json.loads(client.get("/_reqctx/chrome-trace.json?last=0").get_data(as_text=True)) == {
        "traceEvents": [],
        "displayTimeUnit": "ms",
    }


def test_the_page_draws_what_is_asked_and_says_how_many_there_are():
    app = viewed_app()
    client = app.test_client()
    for i in range(8):
        client.get("/work", headers={"X-Request-ID": f"drawn-{i}"})
    page = client.get("/_reqctx/?last=2").get_data(as_text=True)
    assert page.count('<div class="request"') == 2 and 'data-request-id="drawn-7"' in page
    assert "Last finished requests (2 of " in page and 'data-request-id="drawn-5"' not in page


def test_live_contexts_are_shown_oldest_first_up_to_the_limit():
    app = viewed_app()
    release = gevent.event.Event()

    @app.get("/hold")
    def hold() -> str:
        gevent.spawn(release.wait)
        return "ok"

    client = app.test_client()
    try:
        for i in range(4):
            client.get("/hold", headers={"X-Request-ID": f"held-{i}"})
        data = client.get("/_reqctx/json?live=2").get_json()
        assert data["live_count"] == 4
        assert [t["request_id"] for t in data["live"]] == ["held-0", "held-1"]
        page = client.get("/_reqctx/?live=3").get_data(as_text=True)
        assert "Live contexts (the oldest 3 of 4" in page and page.count('<div class="context') == 3
    finally:
        release.set()
        gevent.sleep(0)
        gevent.wait(timeout=5)
