"""A live-view hit never stalls the other requests of a ``gunicorn -k gevent`` worker for long:
measured by a greenlet in the worker that sleeps 5 ms at a time and records how late it wakes
(``liveview_stall_app``).  The figure the issue names (~50 ms) is reached and printed by
``benchmarks/bench_liveview.py``; this test bounds it loosely, so a loaded machine passes,
while producing the whole answer in one go (as before) takes far longer."""

from __future__ import annotations

import json

import pytest
from servers import GunicornServer, run_load

REQUESTS = 30
CHILDREN = 1000
MAX_STALL_MS = 250


@pytest.fixture(scope="module")
def server():
    with GunicornServer("gevent", app="liveview_stall_app:app") as srv:
        yield srv


def test_a_large_json_and_chrome_trace_do_not_stall_the_worker(server):
    report = run_load(server, path=f"/fanout?children={CHILDREN}&max_ms=2", requests=REQUESTS, concurrency=5)
    assert report["statuses"] == {"200": REQUESTS}, report
    server.wait_idle()
    last = REQUESTS + 10  # the /stats and /stall requests are recorded too
    for path in (f"/_reqctx/json?last={last}", f"/_reqctx/chrome-trace.json?last={last}"):
        server.get_json("/stall")  # reset the meter
        status, _headers, body = server.request(path, timeout=60)
        assert status == 200
        document = json.loads(body)
        stall = server.get_json("/stall")
        worst = stall["worst_ms"]
        late = stall["worst_late_ms"]
        print(f"{path}: {len(body) / 1e6:.1f} MB, worst stall {worst:.0f} ms CPU ({late:.0f} ms wall)")
        assert worst < MAX_STALL_MS, (path, worst)
        if path.startswith("/_reqctx/json"):
            fanouts = [t for t in document["finished"] if t["path"] == "/fanout"]
            assert len(fanouts) == REQUESTS
            assert all(len(t["units"]) + t["dropped"] == CHILDREN + 1 for t in fanouts)
