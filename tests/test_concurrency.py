"""No bleed, no leak: many requests in flight in one process, each child sees only its own."""

from __future__ import annotations

import gc
import random
import sys
import threading

import gevent
import pytest
from waiting import wait_until

from flask_reqctx import get_request_context, stats


@pytest.fixture
def fanout_app(app):
    @app.get("/fanout")
    def fanout():
        own = get_request_context().request_id

        def child(depth):
            gevent.sleep(random.uniform(0, 0.01))  # children of many requests interleave
            seen = [get_request_context().request_id]
            if depth:
                seen += gevent.spawn(child, depth - 1).get()
            return seen

        children = [gevent.spawn(child, i % 2) for i in range(3)]
        box = []
        thread = threading.Thread(target=lambda: box.append(get_request_context().request_id))
        thread.start()
        thread.join()
        seen = [rid for g in gevent.joinall(children, raise_error=True) for rid in g.value] + box
        return {"request_id": own, "seen": seen}

    @app.get("/hello")
    def hello():
        return get_request_context().request_id

    return app


def test_1000_concurrent_requests_each_see_only_their_own(fanout_app):
    client = fanout_app.test_client()

    def one(i):
        rid = f"req-{i}"
        response = client.get("/fanout", headers={"X-Request-ID": rid})
        body = response.get_json()
        return rid, response.headers["X-Request-ID"], body

    jobs = [gevent.spawn(one, i) for i in range(1000)]
    gevent.joinall(jobs, raise_error=True, timeout=120)
    assert all(job.successful() for job in jobs)
    for job in jobs:
        rid, echoed, body = job.value
        assert echoed == rid and body["request_id"] == rid
        assert body["seen"] and set(body["seen"]) == {rid}, body
    wait_until(lambda: stats()["live"] == 0)  # rawlinks of the last children
    assert stats()["live"] == 0


def test_10000_sequential_requests_leave_store_and_memory_flat(fanout_app):
    client = fanout_app.test_client()
    for _ in range(1000):  # warm caches and allocator pools
        client.get("/hello")
    gc.collect()
    blocks, created = sys.getallocatedblocks(), stats()["created"]
    for _ in range(10_000):
        client.get("/hello")
    gc.collect()
    growth = sys.getallocatedblocks() - blocks
    assert stats()["created"] - created == 10_000
    assert stats()["live"] == 0
    # A leak of one object per request would show as >= 10,000 blocks.
    assert growth < 1_000, f"{growth} memory blocks retained by 10,000 requests"
