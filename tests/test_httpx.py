"""The httpx integration: sync and async clients carry the request's id and trace to a real
downstream service (``calling_services:make_b()`` under gunicorn -k gevent)."""

from __future__ import annotations

import asyncio
import threading

import gevent
import httpx
import pytest
from fresh_interpreter import run_in_fresh_interpreter
from servers import GunicornServer

from flask_reqctx import get_request_context, stats
from flask_reqctx.integrations import httpx as reqctx_httpx

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
MINE = "00-11111111111111111111111111111111-2222222222222222-00"


@pytest.fixture(scope="module")
def service_b():
    with GunicornServer(app="calling_services:make_b()") as b:
        yield b


@pytest.fixture
def early_clients():
    """Clients made before ``install()``: the patch is on the classes, so they are covered."""
    sync_client = httpx.Client(timeout=10)
    # no kept connection: each test's asyncio.run() has its own loop, a pooled one would not
    async_client = httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
    reqctx_httpx.install()
    yield sync_client, async_client
    reqctx_httpx.uninstall()
    sync_client.close()
    asyncio.run(async_client.aclose())


def _whoami(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def _check_joined(seen: dict, ctx_ids: dict) -> None:
    """B adopted our request id, and joined our trace as a child of our request's span."""
    b_ids = seen["ids"]
    assert seen["received"]["X-Request-ID"] == ctx_ids["request_id"] == b_ids["request_id"]
    assert b_ids["trace_id"] == ctx_ids["trace_id"]
    assert b_ids["parent_id"] == ctx_ids["span_id"]
    assert b_ids["tracestate"] == ctx_ids["tracestate"]


def _ctx_ids() -> dict:
    ctx = get_request_context()
    return {
        "request_id": ctx.request_id,
        "trace_id": ctx.trace_id,
        "span_id": ctx.trace.span_id,
        "tracestate": ctx.trace.tracestate,
    }


def test_sync_clients_from_the_view_and_its_children(app, client, service_b, early_clients):
    early, _ = early_clients
    url = service_b.base + "/whoami"

    @app.get("/")
    def index():
        seen = {
            "early": _whoami(early.get(url)),
            "module": _whoami(httpx.get(url, timeout=10)),
            "stream": None,
        }
        with early.stream("GET", url) as response:
            response.read()
            seen["stream"] = _whoami(response)

        def in_child(key: str) -> None:
            with httpx.Client(timeout=10) as made_here:  # a client created inside the child
                seen[key] = _whoami(made_here.get(url))

        gevent.spawn(in_child, "greenlet").get()
        thread = threading.Thread(target=in_child, args=("thread",))
        thread.start()
        thread.join()
        return {"seen": seen, "ctx": _ctx_ids()}

    sent = {"X-Request-ID": "hx:1.A-z", "traceparent": TRACEPARENT, "tracestate": "congo=t61"}
    body = client.get("/", headers=sent).get_json()
    assert body["ctx"]["request_id"] == "hx:1.A-z" and body["ctx"]["trace_id"] == TRACE
    assert set(body["seen"]) == {"early", "module", "stream", "greenlet", "thread"}
    for seen in body["seen"].values():
        _check_joined(seen, body["ctx"])


def test_async_client_from_an_asyncio_task(app, client, service_b, early_clients):
    _, early_async = early_clients
    url = service_b.base + "/whoami"

    @app.get("/")
    def index():
        async def calls() -> dict:
            async with httpx.AsyncClient(timeout=10) as made_here:
                task = asyncio.create_task(made_here.get(url))
                early_task = asyncio.create_task(early_async.get(url))
                return {"task": _whoami(await task), "early": _whoami(await early_task)}

        return {"seen": asyncio.run(calls()), "ctx": _ctx_ids()}

    body = client.get("/", headers={"traceparent": TRACEPARENT}).get_json()
    assert body["ctx"]["trace_id"] == TRACE
    for seen in body["seen"].values():
        _check_joined(seen, body["ctx"])


def test_never_overrides_what_the_caller_set(app, client, service_b, early_clients):
    url = service_b.base + "/whoami"

    @app.get("/")
    def index():
        with httpx.Client(timeout=10, headers={"x-request-id": "client-level"}) as configured:
            client_level = _whoami(configured.get(url))
        per_call = _whoami(httpx.get(url, headers={"X-REQUEST-ID": "per-call", "TraceParent": MINE}))
        return {"client_level": client_level, "per_call": per_call, "ctx": _ctx_ids()}

    body = client.get("/", headers={"traceparent": TRACEPARENT, "tracestate": "congo=t61"}).get_json()
    assert body["client_level"]["received"]["X-Request-ID"] == "client-level"
    assert body["client_level"]["ids"]["trace_id"] == TRACE  # the trace is still ours
    per_call = body["per_call"]
    assert per_call["received"] == {"X-Request-ID": "per-call", "traceparent": MINE, "tracestate": None}
    assert per_call["ids"]["trace_id"] == "11111111111111111111111111111111"


def test_outside_a_request_nothing_is_sent(service_b, early_clients):
    early, early_async = early_clients
    url = service_b.base + "/whoami"
    nothing = {"X-Request-ID": None, "traceparent": None, "tracestate": None}
    assert _whoami(early.get(url))["received"] == nothing
    assert _whoami(asyncio.run(early_async.get(url)))["received"] == nothing
    reqctx_httpx.install()  # idempotent
    assert reqctx_httpx.installed() and stats()["live"] == 0


def test_should_propagate(app, client, service_b, caplog):
    url = service_b.base + "/whoami"

    @app.get("/")
    def index():
        return _whoami(httpx.get(url, timeout=10))["received"]

    try:
        reqctx_httpx.install(should_propagate=lambda request: request.url.host != "127.0.0.1")
        kept_away = client.get("/").get_json()
        reqctx_httpx.install(should_propagate=lambda request: 1 / 0)
        broken = client.get("/").get_json()
        reqctx_httpx.install(should_propagate=lambda request: request.url.port == service_b.port)
        allowed = client.get("/").get_json()
    finally:
        reqctx_httpx.uninstall()
    assert kept_away["X-Request-ID"] is None and kept_away["traceparent"] is None
    assert broken["X-Request-ID"] is None and broken["traceparent"] is None
    assert any("should_propagate raised" in r.getMessage() for r in caplog.records)
    assert allowed["X-Request-ID"] is not None and allowed["traceparent"] is not None


def test_uninstall_restores_httpx():
    original_sync, original_async = httpx.Client.send, httpx.AsyncClient.send
    reqctx_httpx.install()
    assert httpx.Client.send is not original_sync and httpx.AsyncClient.send is not original_async
    reqctx_httpx.uninstall()
    assert httpx.Client.send is original_sync and httpx.AsyncClient.send is original_async
    assert not reqctx_httpx.installed()


def test_reset_all_uninstalls():
    """The installation is process state registered with ``flask_reqctx.state`` (checked in a
    fresh interpreter: ``reset_all()`` resets every module's state)."""
    run_in_fresh_interpreter(
        """
import httpx
from flask_reqctx import state
from flask_reqctx.integrations import httpx as reqctx_httpx

original = httpx.Client.send
reqctx_httpx.install()
state.reset_all()
assert not reqctx_httpx.installed() and httpx.Client.send is original
"""
    )
