"""The Sentry integration: events captured in a context carry its ids as tags.

The real SDK, with a transport that keeps the envelopes it is given (no network).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import gevent
import pytest
import sentry_sdk
from fresh_interpreter import run_in_fresh_interpreter
from sentry_sdk.transport import Transport

from flask_reqctx import create_request_context, get_request_context
from flask_reqctx.integrations.sentry import ReqCtxIntegration

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


class RecordingTransport(Transport):
    """Keeps each event it is handed, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def capture_envelope(self, envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            self.events.append(event)


@pytest.fixture
def sentry_events():
    transport = RecordingTransport()
    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",
        transport=transport,
        integrations=[ReqCtxIntegration()],
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    yield transport.events
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def _by_message(events: list[dict]) -> dict[str, dict]:
    return {event.get("message") or event["exception"]["values"][0]["value"]: event for event in events}


def test_events_from_the_view_and_everything_it_started(app, client, sentry_events):
    @app.get("/")
    def index():
        sentry_sdk.capture_message("view")
        try:
            raise RuntimeError("raised in the view")
        except RuntimeError:
            sentry_sdk.capture_exception()
        gevent.spawn(sentry_sdk.capture_message, "greenlet").join()
        thread = threading.Thread(target=sentry_sdk.capture_message, args=("thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(sentry_sdk.capture_message, "executor job").result()

        async def in_a_task() -> None:
            await asyncio.create_task(asyncio.to_thread(sentry_sdk.capture_message, "to_thread"))
            await asyncio.create_task(asyncio.sleep(0, sentry_sdk.capture_message("task")))

        asyncio.run(in_a_task())
        return get_request_context().to_dict()

    rid = client.get("/", headers={"X-Request-ID": "sentry:1.A-z_", "traceparent": TRACEPARENT}).get_json()[
        "request_id"
    ]
    assert rid == "sentry:1.A-z_"
    events = _by_message(sentry_events)
    expected = {"view", "raised in the view", "greenlet", "thread", "executor job", "to_thread", "task"}
    assert set(events) == expected
    for event in events.values():
        assert event["tags"] == {"request_id": rid, "trace_id": TRACE}


def test_outside_a_context_no_tags_and_the_applications_tags_win(app, client, sentry_events):
    sentry_sdk.capture_message("outside")

    @app.get("/")
    def index():
        with sentry_sdk.new_scope() as scope:
            scope.set_tag("request_id", "mine")
            scope.set_tag("user_tag", "x")
            sentry_sdk.capture_message("own tag")
        return "ok"

    client.get("/")
    with create_request_context(request_id="job-7") as ctx:
        sentry_sdk.capture_message("job")
    events = _by_message(sentry_events)
    assert "tags" not in events["outside"] or not events["outside"]["tags"]
    own = events["own tag"]["tags"]
    assert own["request_id"] == "mine" and own["user_tag"] == "x" and len(own["trace_id"]) == 32
    assert events["job"]["tags"] == {"request_id": "job-7", "trace_id": ctx.trace_id}


def test_concurrent_requests_each_tag_their_own_events(app, client, sentry_events):
    @app.get("/<int:n>")
    def numbered(n: int):
        gevent.spawn(sentry_sdk.capture_message, f"{n} {get_request_context().request_id}").join()
        return "ok"

    def one(n: int) -> None:
        assert app.test_client().get(f"/{n}").status_code == 200

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(64)))
    assert len(sentry_events) == 64
    for event in sentry_events:
        _n, rid = event["message"].split()
        assert event["tags"]["request_id"] == rid


def test_not_added_once_the_client_is_gone(app, client):
    transport = RecordingTransport()
    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=transport, default_integrations=False)
    try:
        with create_request_context(request_id="no-integration"):
            sentry_sdk.capture_message("without ReqCtxIntegration")
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
    # the processor stays in the SDK's global list (setup_once is once per process) but
    # tags only for a client that was given the integration
    (event,) = transport.events
    assert "request_id" not in (event.get("tags") or {})


def test_with_the_sdks_default_integrations_in_a_fresh_interpreter():
    """As a user has it: Sentry's default and auto-enabled integrations (threading, Flask,
    logging, ...) beside ours, Sentry imported after flask_reqctx."""
    run_in_fresh_interpreter(
        """
import threading
import flask_reqctx
import sentry_sdk
from flask import Flask
from sentry_sdk.transport import Transport
from flask_reqctx import ReqCtx, get_request_context
from flask_reqctx.integrations.sentry import ReqCtxIntegration

class Keep(Transport):
    events = []
    def capture_envelope(self, envelope):
        if envelope.get_event() is not None:
            self.events.append(envelope.get_event())

sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=Keep(), integrations=[ReqCtxIntegration()])
app = Flask("sentry_defaults")
ReqCtx(app)

@app.get("/boom")
def boom():
    thread = threading.Thread(target=sentry_sdk.capture_message, args=("thread",))
    thread.start()
    thread.join()
    raise ValueError("escaped the view")

response = app.test_client().get("/boom", headers={"X-Request-ID": "fresh-1"})
assert response.status_code == 500 and response.headers["X-Request-ID"] == "fresh-1"
messages = {e.get("message") or e["exception"]["values"][0]["value"]: e for e in Keep.events}
assert set(messages) == {"thread", "escaped the view"}, messages
for event in messages.values():
    assert event["tags"]["request_id"] == "fresh-1", event["tags"]
    assert len(event["tags"]["trace_id"]) == 32
assert flask_reqctx.stats()["live"] == 0, flask_reqctx.stats()
"""
    )
