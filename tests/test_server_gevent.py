"""Real gunicorn ``-k gevent`` workers: no bleed under load, nothing left live, stable memory.

The server runs ``server_app:app`` in a subprocess (``servers.py``); the concurrent client
is ``load_client.py`` in another subprocess, so these tests behave the same whether or not
the pytest process itself is monkey-patched.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time

import pytest
from servers import GunicornServer, check_fanout, check_late_results, get_late, run_load
from waiting import wait_until

from flask_reqctx import is_valid_request_id

pytest.importorskip("gevent")
# The expected errors: exceptions escaping the app (/timeout, /teardown-raises,
# /stream-raises), each answered with a 500 carrying the id.
pytestmark = pytest.mark.gunicorn(
    worker_class="gevent", workers=1, worker_connections=1000, allowed_errors=("answered 500",)
)


def _connection(server: GunicornServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(server.host, server.port, timeout=10)


def test_500_in_flight_each_request_and_child_sees_its_own_id(server):
    report = run_load(
        server,
        path="/fanout?children=3",
        requests=2000,
        concurrency=500,
        keepalive=True,  # successive requests reuse one server greenlet per connection
        without_id_every=10,
        id_prefix="gevent-one",
    )
    assert report["max_in_flight"] == 500
    per_pid, without = check_fanout(report, children=3, requests=2000, gevent=True)
    assert without == 200
    assert len(per_pid) == 1
    # The requests really overlapped in the worker (each holds up to 5 units at once).
    assert max(r["body"]["live"] for r in report["results"]) > 250
    server.wait_idle(per_pid)


def test_two_workers_each_keep_their_invariants():
    with GunicornServer("gevent", workers=2, worker_connections=1000) as srv:
        per_pid: dict[int, int] = {}
        # 500 connections, accepted by whichever worker wins each one: on a busy machine one
        # worker can win a whole round, so load again (at most 4 rounds) until both served.
        for round_number in range(4):
            report = run_load(
                srv,
                path="/fanout?children=3",
                requests=2000,
                concurrency=500,
                keepalive=True,
                without_id_every=10,
                id_prefix=f"gevent-two-{round_number}",
            )
            served, without = check_fanout(report, children=3, requests=2000, gevent=True)
            assert without == 200
            for pid, count in served.items():
                per_pid[pid] = per_pid.get(pid, 0) + count
            if len(per_pid) == 2:
                break
        assert len(per_pid) == 2, per_pid
        final = srv.wait_idle(per_pid)
        assert set(final) == set(per_pid)
        for stats_report in final.values():
            stats = stats_report["stats"]
            assert stats["created"] - stats["destroyed"] == 1  # only the /stats request itself
        assert srv.extension_errors() == []


def test_preloaded_app_propagates_too():
    """``--preload`` imports the app (and flask_reqctx) in the master, before gevent patches."""
    with GunicornServer("gevent", workers=1, worker_connections=500, extra_args=["--preload"]) as srv:
        report = run_load(srv, path="/fanout?children=3", requests=300, concurrency=100, id_prefix="preload")
        per_pid, _without = check_fanout(report, children=3, requests=300, gevent=True)
        srv.wait_idle(per_pid)
        assert srv.extension_errors() == []


def test_rss_is_stable_between_2000_and_20000_requests(server):
    def load(requests: int) -> None:
        report = run_load(
            server,
            path="/child",  # a request unit and a child greenlet unit; 500 if the child saw another id
            requests=requests,
            concurrency=50,
            keepalive=True,
            without_id_every=5,
            detail=False,
        )
        assert report["error_count"] == 0, report["errors"]
        assert report["statuses"] == {"200": requests}

    def rss() -> int:
        return server.get_json("/rss")["rss"]

    load(2000)  # warm-up: allocator pools, Flask/Werkzeug caches, greenlet stacks
    after_2000 = rss()
    created = server.get_json("/stats")["stats"]["created"]
    load(18000)
    after_20000 = rss()
    server.wait_idle()
    # Every request really opened (and closed) a request unit and a child unit.
    assert server.get_json("/stats")["stats"]["created"] - created >= 2 * 18000
    growth = after_20000 - after_2000
    assert growth < 2 * 1024 * 1024, f"RSS grew by {growth / 1024:.0f} KiB over 18,000 requests"


def test_view_that_raises_leaves_nothing_live(server):
    for sent in ("raise-1", None):
        status, headers, _body = server.request("/raise", {"X-Request-ID": sent} if sent else None)
        assert status == 500
        echoed = headers["X-Request-ID"]
        assert echoed == sent if sent else is_valid_request_id(echoed)
    server.wait_idle()


def test_client_abandoning_a_slow_request_leaves_nothing_live(server):
    server.wait_idle()
    sockets = []
    t0 = time.monotonic()
    for reset in (False, True):
        sock = socket.create_connection((server.host, server.port), timeout=5)
        if reset:  # close with RST rather than FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /slow?s=1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: abandoned-%d\r\n\r\n" % int(reset))
        sockets.append(sock)
    # Both requests are inside the view before their clients go away.
    wait_until(
        lambda: server.get_json("/stats")["live_besides_this_request"] >= 2,
        5,
        message="the /slow requests never started",
    )
    # Not a wait for a condition: the clients stay at least 0.1 s into the view's 1 s sleep.
    time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
    for sock in sockets:
        sock.close()
    server.wait_idle(timeout=10)


def test_streamed_response_every_chunk_sees_its_request_id(server):
    for sent in ("stream-1", None):
        conn = _connection(server)
        try:
            conn.request("GET", "/stream?n=5&delay=0.01", headers={"X-Request-ID": sent} if sent else {})
            response = conn.getresponse()
            assert response.status == 200
            echoed = response.headers["X-Request-ID"]
            chunks = [json.loads(line) for line in response.read().splitlines()]
        finally:
            conn.close()
        if sent:
            assert echoed == sent
        assert [c["i"] for c in chunks] == list(range(5))
        assert {c["seen"] for c in chunks} == {echoed}
    server.wait_idle()


def test_client_abandoning_a_stream_midway_leaves_nothing_live(server):
    sock = socket.create_connection((server.host, server.port), timeout=5)
    try:
        sock.sendall(b"GET /stream?n=50&delay=0.02 HTTP/1.1\r\nHost: x\r\nX-Request-ID: stream-cut\r\n\r\n")
        received = b""
        while b'"i": 1' not in received:
            data = sock.recv(65536)
            assert data, received
            received += data
        assert b'"seen": "stream-cut"' in received
    finally:
        sock.close()
    server.wait_idle(timeout=10)


def test_gevent_timeout_inside_a_view_leaves_nothing_live(server):
    # Escaping the view: gevent.Timeout is a BaseException, Flask does not handle it.
    status, headers, _body = server.request("/timeout", {"X-Request-ID": "timeout-raised"})
    assert status == 500
    assert headers.get_all("X-Request-ID") == ["timeout-raised"]  # answered by the extension
    # Caught inside the view: the view still sees its own context afterwards.
    status, headers, body = server.request("/timeout?handled=1", {"X-Request-ID": "timeout-handled"})
    assert status == 504
    assert headers["X-Request-ID"] == "timeout-handled"
    assert json.loads(body) == {"request_id": "timeout-handled", "timed_out": True}
    server.wait_idle()


@pytest.mark.parametrize("path", ["/teardown-raises", "/stream-raises"])
def test_an_exception_escaping_the_app_is_a_500_with_exactly_one_id(server, path):
    # gunicorn appends the headers of a second start_response: the extension calls it once.
    status, headers, body = server.request(path, {"X-Request-ID": "escaped-1"})
    assert status == 500
    assert headers.get_all("X-Request-ID") == ["escaped-1"]
    assert headers.get_all("Content-Length") == [str(len(body))]
    server.wait_idle()


def test_keepalive_late_children_see_their_own_request(server):
    server.get_json("/late-results")  # start from an empty list
    conn = _connection(server)
    seen_ids: list[str] = []
    first_socket = None
    try:
        for i in range(50):
            seen_ids.append(get_late(conn, f"late-{i}" if i % 2 == 0 else None))
            first_socket = first_socket or conn.sock
            assert conn.sock is first_socket, "the 50 requests did not share one connection"
    finally:
        conn.close()
    assert len(set(seen_ids)) == 50

    results = check_late_results(server, seen_ids)
    # Each child first ran after its request's response was closed (the connection's
    # greenlet had already moved on to the next request).
    assert all(e["after_close"] for e in results), results
    server.wait_idle()
