"""The live view's access rules, its JSON and what it never shows (Flask test client)."""

from __future__ import annotations

import json

import gevent
import gevent.event
import pytest
from flask import Flask
from waiting import wait_until

from flask_reqctx import ReqCtx, stats

SECRET = "Bearer s3cr3t-do-not-show"
TOKEN = "a-long-enough-live-view-token"


def live_view_app(**config: object) -> Flask:
    app = Flask("live")
    app.config.update(TESTING=True, REQCTX_LIVE_VIEW=True, **config)
    ReqCtx(app)

    @app.get("/work")
    def work():
        gevent.joinall([gevent.spawn(gevent.sleep, 0.001) for _ in range(3)])  # children at work
        return "ok"

    return app


def test_off_by_default():
    app = Flask("plain")
    ReqCtx(app)
    assert app.test_client().get("/_reqctx/").status_code == 404


def test_loopback_only_without_a_token():
    client = live_view_app().test_client()
    assert client.get("/_reqctx/").status_code == 200
    assert client.get("/_reqctx/", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    for path in ("/_reqctx/", "/_reqctx/json", "/_reqctx/chrome-trace.json"):
        assert client.get(path, environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 403
        # a proxy on the same host makes every client look local: not good enough
        assert client.get(path, headers={"X-Forwarded-For": "192.0.2.7"}).status_code == 403
        assert client.get(path, headers={"Forwarded": "for=192.0.2.7"}).status_code == 403


def test_a_token_is_required_from_everyone_when_configured():
    client = live_view_app(REQCTX_LIVE_VIEW_TOKEN=TOKEN).test_client()
    remote = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get("/_reqctx/").status_code == 403
    assert client.get("/_reqctx/?token=wrong-token-of-some-length").status_code == 403
    assert client.get(f"/_reqctx/?token={TOKEN}", environ_base=remote).status_code == 200
    assert (
        client.get("/_reqctx/json", headers={"X-Reqctx-Token": TOKEN}, environ_base=remote).status_code == 200
    )
    page = client.get(f"/_reqctx/?token={TOKEN}").get_data(as_text=True)
    assert f'href="json?token={TOKEN}"' in page


def test_a_short_token_is_refused():
    with pytest.raises(ValueError, match="REQCTX_LIVE_VIEW_TOKEN"):
        live_view_app(REQCTX_LIVE_VIEW_TOKEN="short")


def test_json_and_page_show_requests_but_never_a_redacted_value():
    app = live_view_app(REQCTX_REDACT_HEADERS=["Authorization", "X-Secret"])
    client = app.test_client()
    client.get("/work", headers={"X-Request-ID": "lv-json-1", "Authorization": SECRET, "X-Secret": "hunter2"})
    response = client.get("/_reqctx/json")
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    data = response.get_json()
    [trace] = [t for t in data["finished"] if t["request_id"] == "lv-json-1"]
    assert trace["data"]["headers"]["Authorization"] == "[redacted]"
    assert trace["data"]["headers"]["X-Secret"] == "[redacted]"
    assert [u["kind"] for u in trace["units"]] == ["request", "greenlet", "greenlet", "greenlet"]
    # the live view's own requests are not recorded
    assert not any(t["path"] and t["path"].startswith("/_reqctx") for t in data["finished"] + data["live"])
    for path in ("/_reqctx/", "/_reqctx/json", "/_reqctx/chrome-trace.json"):
        body = client.get(path).get_data(as_text=True)
        assert "s3cr3t" not in body and "hunter2" not in body
    page = client.get("/_reqctx/").get_data(as_text=True)
    assert 'data-request-id="lv-json-1"' in page
    assert "<script" not in page and "src=" not in page and 'href="http' not in page  # self-contained


def test_markup_in_recorded_values_is_escaped():
    client = live_view_app().test_client()
    client.get("/work", headers={"User-Agent": "<script>alert(1)</script>", "X-Request-ID": "lv-escape-1"})
    page = client.get("/_reqctx/").get_data(as_text=True)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_old_contexts_are_flagged_as_probable_leaks():
    app = live_view_app(REQCTX_LIVE_VIEW_LEAK_AFTER=0.05)
    release = gevent.event.Event()

    @app.get("/leave")
    def leave():
        gevent.spawn(release.wait)
        return "ok"

    client = app.test_client()
    client.get("/leave", headers={"X-Request-ID": "lv-leak-1"})
    client.get("/leave", headers={"X-Request-ID": "lv-leak-2"})
    try:
        gevent.sleep(0.1)  # time passing is what is tested: both are now older than the threshold
        client.get("/leave", headers={"X-Request-ID": "lv-young-1"})
        live = {t["request_id"]: t for t in client.get("/_reqctx/json").get_json()["live"]}
        assert live["lv-leak-1"]["probable_leak"] and live["lv-leak-2"]["probable_leak"]
        assert live["lv-leak-1"]["age_ms"] >= 100
        page = client.get("/_reqctx/").get_data(as_text=True)
        assert page.count('data-probable-leak="true"') >= 2
        json.dumps(live)
    finally:
        release.set()
        wait_until(lambda: stats()["live"] == 0)  # the released greenlets ended
    remaining = client.get("/_reqctx/json").get_json()["live"]
    assert not [t for t in remaining if t["request_id"].startswith("lv-")]


def test_a_live_context_that_ends_while_the_answer_pauses_is_shown_ended():
    """The JSON is streamed with pauses for the worker's other requests: a context listed as
    live may end during one, and is then shown as ended (not a broken answer)."""
    app = live_view_app()
    release = gevent.event.Event()

    @app.get("/hold")
    def hold():
        gevent.spawn(release.wait)  # keeps the context live after the response
        return "ok"

    app.test_client().get("/hold")
    assert stats()["live"] == 1
    view = app.view_functions["reqctx_live_view.json"].__self__

    def pause() -> None:  # what other requests do while the answer pauses: the child ends
        release.set()
        wait_until(lambda: stats()["live"] == 0)

    shown = list(view.live(10, pause))
    assert [(trace["live"], trace["probable_leak"]) for trace in shown] == [(False, False)]
