"""Outgoing propagation: ``outgoing_headers()``, the requests integration, and two real services."""

from __future__ import annotations

import json
import re
import threading
import urllib.request

import gevent
import pytest
import requests
from flask import Flask
from requests.adapters import BaseAdapter
from servers import GunicornServer

from flask_reqctx import ReqCtx, create_request_context, get_request_context, outgoing_headers
from flask_reqctx.integrations import requests as reqctx_requests

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
OUT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


# -- outgoing_headers() ---------------------------------------------------------------------


def test_outgoing_headers_outside_a_request_are_empty():
    assert outgoing_headers() == {}


def test_outgoing_headers_in_a_request_and_its_children(app, client):
    seen = {}

    @app.get("/")
    def index():
        seen["view"] = outgoing_headers()
        seen["method"] = app.extensions["reqctx"].outgoing_headers()
        seen["greenlet"] = gevent.spawn(outgoing_headers).get()
        thread = threading.Thread(target=lambda: seen.setdefault("thread", outgoing_headers()))
        thread.start()
        thread.join()
        seen["span"] = get_request_context().trace.span_id
        return "ok"

    client.get("/", headers={"X-Request-ID": "rid-9", "traceparent": TRACEPARENT, "tracestate": "congo=t61"})
    traceparent = f"00-{TRACE}-{seen['span']}-01"
    expected = {"X-Request-ID": "rid-9", "traceparent": traceparent, "tracestate": "congo=t61"}
    assert seen["view"] == seen["method"] == seen["greenlet"] == seen["thread"] == expected
    assert seen["span"] != PARENT


def test_outgoing_headers_without_incoming_trace_start_one(app, client):
    @app.get("/")
    def index():
        return {"out": outgoing_headers(), "trace_id": get_request_context().trace_id}

    body = client.get("/").get_json()
    assert set(body["out"]) == {"X-Request-ID", "traceparent"}  # no tracestate of our own
    trace_id, _span_id, flags = OUT.fullmatch(body["out"]["traceparent"]).groups()
    assert trace_id == body["trace_id"] and flags == "00"


def test_outgoing_header_name_follows_the_config():
    app = Flask("names")
    app.config["REQCTX_HEADER"] = ["X-Amzn-Trace-Id", "X-Correlation-ID"]
    ReqCtx(app)
    app.get("/")(lambda: outgoing_headers())
    body = app.test_client().get("/", headers={"X-Correlation-ID": "corr-1"}).get_json()
    assert body["X-Correlation-ID"] == "corr-1" and "X-Amzn-Trace-Id" not in body

    for value, expected in (("X-Forward-Id", {"X-Forward-Id"}), (False, set())):
        app = Flask("named")
        ReqCtx(app, outgoing_header=value)
        app.get("/")(lambda: outgoing_headers())
        body = app.test_client().get("/").get_json()
        assert set(body) == expected | {"traceparent"}


def test_outgoing_headers_outside_flask():
    with create_request_context(request_id="job-1") as ctx:
        headers = outgoing_headers()
    assert headers == {"X-Request-ID": "job-1", "traceparent": f"00-{ctx.trace_id}-{ctx.trace.span_id}-00"}
    assert outgoing_headers(ctx) == headers  # an explicit context works after the fact too


# -- the requests integration (no network: a capturing transport) ---------------------------


class Capture(BaseAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, str]] = []

    def send(self, request, **kwargs):
        self.sent.append(dict(request.headers))
        response = requests.Response()
        response.status_code, response._content, response.url = 200, b"{}", request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def integration():
    reqctx_requests.install()
    yield
    reqctx_requests.uninstall()


def _session() -> tuple[requests.Session, Capture]:
    session, capture = requests.Session(), Capture()
    session.mount("http://svc/", capture)
    return session, capture


def test_requests_sessions_send_the_headers_during_a_request(app, client, integration):
    session, capture = _session()

    @app.get("/")
    def index():
        session.get("http://svc/a")
        gevent.spawn(session.get, "http://svc/b").join()
        return outgoing_headers()

    expected = client.get("/", headers={"X-Request-ID": "rq-1", "traceparent": TRACEPARENT}).get_json()
    assert expected["X-Request-ID"] == "rq-1"
    assert len(capture.sent) == 2
    for sent in capture.sent:
        assert {name: sent.get(name) for name in expected} == expected


def test_requests_outside_a_request_is_untouched(integration):
    session, capture = _session()
    session.get("http://svc/")
    assert not {"X-Request-ID", "traceparent", "tracestate"} & set(capture.sent[0])
    reqctx_requests.install()  # idempotent
    assert reqctx_requests.installed()


def test_requests_never_overrides_what_the_caller_set(app, client, integration):
    session, capture = _session()
    session.headers["X-Request-ID"] = "session-level"
    mine = "00-11111111111111111111111111111111-2222222222222222-00"

    @app.get("/")
    def index():
        session.get("http://svc/1")
        session.get("http://svc/2", headers={"x-request-id": "per-call", "TraceParent": mine})
        return "ok"

    client.get("/", headers={"X-Request-ID": "rq-2", "traceparent": TRACEPARENT, "tracestate": "congo=1"})
    first, second = capture.sent
    assert first["X-Request-ID"] == "session-level"
    assert first["traceparent"].startswith(f"00-{TRACE}-") and first["tracestate"] == "congo=1"
    assert second["x-request-id"] == "per-call" and second["TraceParent"] == mine
    assert "X-Request-ID" not in second and "traceparent" not in second  # no duplicate in another case
    assert "tracestate" not in second  # ours would not belong to the caller's trace


def test_requests_should_propagate(app, client, caplog):
    session, capture = _session()
    session.mount("http://external/", capture)

    @app.get("/")
    def index():
        session.get("http://svc/x")
        session.get("http://external/x")
        return "ok"

    reqctx_requests.install(should_propagate=lambda prepared: prepared.url.startswith("http://svc/"))
    try:
        client.get("/")
        reqctx_requests.install(should_propagate=lambda prepared: 1 / 0)
        client.get("/")
    finally:
        reqctx_requests.uninstall()
    internal, external, broken_a, broken_b = capture.sent
    assert "X-Request-ID" in internal and "X-Request-ID" not in external
    # a broken predicate: send nothing
    assert "X-Request-ID" not in broken_a and "X-Request-ID" not in broken_b
    assert any("should_propagate raised" in r.getMessage() for r in caplog.records)


def test_uninstall_restores_requests(app, client):
    original = requests.Session.send
    reqctx_requests.install()
    assert requests.Session.send is not original
    reqctx_requests.uninstall()
    assert requests.Session.send is original and not reqctx_requests.installed()


# -- two real gunicorn services: A calls B inside a request ---------------------------------


@pytest.fixture(scope="module")
def services():
    # The apps' APPLOG lines (their own stderr handler) land in gunicorn's log, read by .log(None).
    with GunicornServer(app="calling_services:make_b()", log_level="info") as b:
        env = {"SERVICE_B_URL": b.base}
        with GunicornServer(app="calling_services:make_a()", env=env, log_level="info") as a:
            yield a, b


def _get(url: str, headers: dict[str, str]) -> tuple[dict, dict]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read()), dict(response.headers)


def _log_lines(server, rid: str) -> list[str]:
    lines = server.log(None).splitlines()
    return [line for line in lines if line.startswith("APPLOG") and f" rid={rid} " in line]


def test_service_b_carries_service_a_ids(services):
    a, b = services
    sent = {"X-Request-ID": "a-rid-1", "traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}
    body, headers = _get(a.base + "/call", sent)
    assert headers["X-Request-ID"] == "a-rid-1"
    mine = body["a"]
    assert (mine["request_id"], mine["trace_id"], mine["parent_id"]) == ("a-rid-1", TRACE, PARENT)
    span = mine["span_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", span) and span != PARENT
    assert body["outgoing"] == {
        "X-Request-ID": "a-rid-1",
        "traceparent": f"00-{TRACE}-{span}-01",
        "tracestate": "congo=t61rcWkgMzE",
    }
    for call in ("direct", "child"):  # from the view, and from a greenlet it spawned
        b_ids = body[call]["ids"]
        assert b_ids["request_id"] == "a-rid-1"
        assert b_ids["trace_id"] == TRACE
        assert b_ids["parent_id"] == span  # A's request is B's parent
        assert b_ids["flags"] == "01"
        assert b_ids["tracestate"] == "congo=t61rcWkgMzE"
        assert b_ids["span_id"] != span
    assert body["direct_echo"] == "a-rid-1"
    explicit = body["explicit"]["ids"]  # the caller's own headers win, and get no tracestate
    assert explicit["request_id"] == "caller-set"
    assert explicit["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and explicit["tracestate"] is None

    assert _log_lines(a, "a-rid-1") == [f"APPLOG A rid=a-rid-1 tid={TRACE} a calling b"]
    b_lines = _log_lines(b, "a-rid-1")
    assert len(b_lines) == 6, b.log(2000)
    for message in ("b view", "b greenlet", "b thread"):
        assert b_lines.count(f"APPLOG B rid=a-rid-1 tid={TRACE} {message}") == 2
    assert len(_log_lines(b, "caller-set")) == 3


def test_without_traceparent_a_starts_the_trace_b_joins(services):
    a, b = services
    body, headers = _get(a.base + "/call", {})
    rid, trace_id = body["a"]["request_id"], body["a"]["trace_id"]
    assert headers["X-Request-ID"] == rid and re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert body["a"]["parent_id"] is None and body["a"]["flags"] == "00"
    b_ids = body["direct"]["ids"]
    assert (b_ids["request_id"], b_ids["trace_id"]) == (rid, trace_id)
    assert b_ids["parent_id"] == body["a"]["span_id"]
    assert _log_lines(a, rid) == [f"APPLOG A rid={rid} tid={trace_id} a calling b"]
    assert len(_log_lines(b, rid)) == 6
    assert all(f"tid={trace_id} " in line for line in _log_lines(b, rid))


def test_invalid_incoming_id_at_a_is_replaced_before_it_reaches_b(services):
    a, b = services
    raw = "evil id with spaces"
    body, headers = _get(a.base + "/call", {"X-Request-ID": raw})
    rid = body["a"]["request_id"]
    assert rid != raw and headers["X-Request-ID"] == rid == body["direct"]["ids"]["request_id"]
    assert raw not in a.log(None) and raw not in b.log(None)
    assert f"APPLOG A rid={rid} tid=" in a.log(None)  # the extension's warning carries the fresh id
