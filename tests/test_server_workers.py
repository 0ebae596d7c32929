"""Real gunicorn ``-k sync`` and ``-k gthread`` workers (no gevent in the server): children are
OS threads, and each sees only its own request's context; nothing is left live afterwards."""

from __future__ import annotations

import http.client
import json

import pytest
from servers import check_fanout, check_late_results, get_late, run_load

pytestmark = [
    pytest.mark.gunicorn(workers=2, allowed_errors=()),
    pytest.mark.parametrize(
        "server",
        [{"worker_class": "sync"}, {"worker_class": "gthread", "threads": 8}],
        ids=["sync", "gthread"],
        indirect=True,
    ),
]


def test_concurrent_fanout_with_threads_each_sees_its_own_id(server):
    # sync serves one request at a time per worker: shorter child sleeps keep the run brief.
    max_ms = 20 if server.worker_class == "gthread" else 5
    report = run_load(
        server,
        path=f"/fanout?children=3&max_ms={max_ms}",
        requests=200,
        concurrency=20,
        keepalive=True,  # sync answers Connection: close; the client then reconnects
        without_id_every=5,
        id_prefix=f"{server.worker_class}-fanout",
    )
    assert report["max_in_flight"] == 20
    per_pid, without = check_fanout(report, children=3, requests=200, gevent=False)
    assert without == 40
    server.wait_idle(per_pid)


def test_raise_and_stream_leave_nothing_live(server):
    status, headers, _body = server.request("/raise", {"X-Request-ID": "threads-raise"})
    assert status == 500
    assert headers["X-Request-ID"] == "threads-raise"

    status, headers, body = server.request("/stream?n=4&delay=0.005", {"X-Request-ID": "threads-stream"})
    assert status == 200
    assert headers["X-Request-ID"] == "threads-stream"
    chunks = [json.loads(line) for line in body.splitlines()]
    assert [c["seen"] for c in chunks] == ["threads-stream"] * 4
    server.wait_idle()


def test_late_threads_see_their_own_request(server):
    server.get_json("/late-results")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    seen_ids = []
    try:
        for i in range(20):  # one keep-alive connection under gthread; reconnects under sync
            seen_ids.append(get_late(conn, f"{server.worker_class}-late-{i}" if i % 2 == 0 else None))
    finally:
        conn.close()
    assert len(set(seen_ids)) == 20

    # Two workers: each /late-results call drains whichever worker answers it.
    check_late_results(server, seen_ids)
    server.wait_idle()
