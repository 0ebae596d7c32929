"""The whole context follows the work on real gunicorn -k gevent, with the real libraries.

Two services on loopback (``traced_services``): A creates a child of each kind inside a span
of its view, the child calls B with ``requests`` (both OpenTelemetry's ``RequestsInstrumentor``
and our ``requests`` integration installed).  The child's CLIENT span must be in the request's
trace with the creation span as parent, B's SERVER span must join it, exactly one
``traceparent`` must go on the wire, agreeing with OpenTelemetry's span; structlog's bound
variables and Sentry's isolation-scope tag must reach the child's log line and event.
"""

from __future__ import annotations

import time

import pytest
from servers import GunicornServer, run_load

pytest.importorskip("opentelemetry.instrumentation.requests", reason="the test extra is not installed")
pytest.importorskip("sentry_sdk", reason="the test extra is not installed")

KINDS = ["spawn", "pool-map", "imap-unordered", "threadpool", "thread", "executor"]


@pytest.fixture(scope="module")
def services():
    with GunicornServer(app="traced_services:make_downstream()") as downstream:
        env = {"DOWNSTREAM_URL": downstream.base}
        with GunicornServer(app="traced_services:make_traced()", env=env, worker_connections=1000) as traced:
            yield traced, downstream


def _by_id(spans: list[dict]) -> dict[str, dict]:
    return {span["span_id"]: span for span in spans}


@pytest.mark.parametrize("kind", [*KINDS, "asyncio"])
def test_each_child_kind_continues_the_requests_trace(services, kind):
    traced, downstream = services
    path = "/fan-async" if kind == "asyncio" else f"/fan/{kind}"
    body = traced.get_json(path, {"X-User": f"user-{kind}"})
    trace_id, creation = body["trace_id"], body["creation_span"]
    assert body["request_trace_id"] == trace_id  # ctx.trace_id is OpenTelemetry's trace
    child = body["child"]
    assert child["ctx_trace_id"] == trace_id and child["user"] == f"user-{kind}"

    a_spans = traced.get_json("/spans")
    clients = [s for s in a_spans if s["kind"] == "CLIENT" and s["trace_id"] == trace_id]
    assert len(clients) == 1, a_spans
    client = clients[0]
    assert client["parent_id"] == creation  # the span current when the child was created
    assert _by_id(a_spans)[creation]["trace_id"] == trace_id

    # Exactly one traceparent on the wire (gunicorn joins repeated headers with a comma),
    # and it is OpenTelemetry's CLIENT span.
    downstream_saw = child["downstream"]
    version, sent_trace, sent_parent, flags = downstream_saw["traceparent"].split("-")
    assert (version, sent_trace, sent_parent) == ("00", trace_id, client["span_id"])
    assert int(flags, 16) & 1  # sampled (OpenTelemetry also sets W3C level 2's random-id bit)
    assert downstream_saw["trace_id"] == trace_id
    servers = [
        s for s in downstream.get_json("/spans") if s["kind"] == "SERVER" and s["trace_id"] == trace_id
    ]
    assert [s["parent_id"] for s in servers] == [client["span_id"]]

    observed = traced.get_json("/observed")
    logs = [entry for entry in observed["logs"] if entry.get("kind") == kind]
    assert [entry.get("user") for entry in logs] == [f"user-{kind}"]
    events = [event for event in observed["events"] if event["message"] == f"child {kind}"]
    assert [event["tags"].get("user") for event in events] == [f"user-{kind}"]


@pytest.fixture(scope="module")
def late_server():
    with GunicornServer(app="traced_services:make_late()", worker_connections=1000) as server:
        yield server


def test_a_users_variable_under_500_requests_in_flight_with_late_children(late_server):
    traced = late_server
    requests = 2000
    report = run_load(
        traced,
        path="/late",
        requests=requests,
        concurrency=500,
        keepalive=True,
        id_prefix="late",
        detail=True,
    )
    assert report["error_count"] == 0, (report["errors"][:5], traced.log())
    assert report["max_in_flight"] == 500
    sent = {result["body"]["request_id"] for result in report["results"]}
    assert len(sent) == requests
    seen: list[dict] = []
    deadline = time.monotonic() + 20
    while len(seen) < requests and time.monotonic() < deadline:
        seen += traced.get_json("/late-results")
    assert len(seen) == requests
    # Each late child saw its own request's value as it was at the child's creation: never
    # another request's, nor what its creator or another child set afterwards.
    assert all(entry["user"] == entry["ctx"] for entry in seen), [e for e in seen if e["user"] != e["ctx"]][
        :5
    ]
    assert {entry["ctx"] for entry in seen} == sent
    traced.wait_idle()
