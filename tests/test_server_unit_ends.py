"""On a real ``gunicorn -k gevent`` worker: units that never run and contexts never closed
leave nothing behind (``live`` back to 0, RSS flat), and every pool API carries the
request's context under concurrency."""

from __future__ import annotations

import pytest
from servers import GunicornServer, run_load

pytest.importorskip("gevent")

REQUESTS = 10_000
#: The shapes of ``server_app.UNIT_SHAPES`` (not imported here: it is the worker's app).
UNIT_SHAPES = ("never-started", "pool-full", "pool-timeout", "unclosed-context")
pytestmark = pytest.mark.gunicorn(
    worker_class="gevent", workers=1, worker_connections=1000, allowed_errors=()
)


def _load(server: GunicornServer, path: str, requests: int) -> None:
    report = run_load(server, path=path, requests=requests, concurrency=50, keepalive=True, detail=False)
    assert report["error_count"] == 0, report["errors"]
    assert report["statuses"] == {"200": requests}, report["statuses"]


@pytest.mark.parametrize("shape", sorted(UNIT_SHAPES))
def test_10000_requests_of_each_shape_leave_nothing_live_and_rss_flat(server, shape):
    path = f"/unit-shape/{shape}"
    _load(server, path, 1000)  # warm-up: allocator pools, caches, greenlet stacks
    server.wait_idle()
    start = server.get_json("/rss")["rss"]
    created = server.get_json("/stats")["stats"]["created"]
    _load(server, path, REQUESTS)
    server.wait_idle()  # live back to 0 (besides the /stats request itself)
    growth = server.get_json("/rss")["rss"] - start
    assert server.get_json("/stats")["stats"]["created"] - created >= 2 * REQUESTS
    assert growth < 2 * 1024 * 1024, f"RSS grew by {growth / 1024:.0f} KiB over {REQUESTS} requests"


def test_every_pool_api_sees_its_own_request_under_concurrency(server):
    report = run_load(server, path="/pools", requests=300, concurrency=50, keepalive=True, without_id_every=3)
    assert report["error_count"] == 0, report["errors"]
    assert report["statuses"] == {"200": 300}
    for result in report["results"]:
        body = result["body"]
        own = body["request_id"]
        assert result["echoed"] == own
        for api, seen in body["seen"].items():
            assert seen == own or seen == [own] * 3, (api, seen, own)
    server.wait_idle()
