"""create_request_context: contexts for work outside Flask (CLI jobs, queue workers)."""

from __future__ import annotations

import os
import threading
import uuid

import gevent
import pytest

from flask_reqctx import (
    RequestContext,
    close_request_context,
    create_request_context,
    execution_id,
    get_request_context,
    stats,
)


def test_binds_to_the_current_unit_and_propagates():
    ctx = create_request_context({"job": "nightly"})
    try:
        assert isinstance(ctx, RequestContext) and get_request_context() is ctx
        assert uuid.UUID(ctx.request_id).version == 4  # seed parity: requestId = v4()
        expected = {"request_id": ctx.request_id, "trace_id": ctx.trace_id, "data": {"job": "nightly"}}
        assert ctx.to_dict() == expected
        assert gevent.spawn(get_request_context).get() is ctx
        box = []
        t = threading.Thread(target=lambda: box.append(get_request_context()))
        t.start()
        t.join()
        assert box == [ctx]
        assert stats()["live"] == 1
    finally:
        assert close_request_context(ctx)
    assert get_request_context() is None


def test_explicit_id_and_context_manager():
    with create_request_context(request_id="job-42") as ctx:
        assert get_request_context() is ctx and ctx.request_id == "job-42" and ctx.data == {}
    assert get_request_context() is None


def test_calling_it_again_replaces_and_closes_the_previous_one():
    """A worker loop that creates one per job never accumulates live contexts."""
    for i in range(100):
        ctx = create_request_context({"job": i})
    assert stats()["live"] == 1 and get_request_context() is ctx
    assert close_request_context()
    assert get_request_context() is None and stats()["live"] == 0


def test_inside_a_request_it_shadows_and_the_request_comes_back(app, client):
    @app.get("/")
    def index():
        outer = get_request_context()
        with create_request_context({"sub": True}) as inner:
            inside = get_request_context()
        return {"same": inside is inner, "restored": get_request_context() is outer}

    assert client.get("/").get_json() == {"same": True, "restored": True}


def test_close_in_a_child_that_merely_inherited_it_does_nothing():
    with create_request_context() as ctx:
        assert gevent.spawn(close_request_context, ctx).get() is False
        assert get_request_context() is ctx


def test_each_greenlet_has_its_own_execution_id():
    ids = [gevent.spawn(execution_id).get() for _ in range(50)]
    assert len(set(ids)) == 50 and execution_id() not in ids


def test_gevent_env_really_runs_monkey_patched():
    """The tox gevent env must exercise the patched world (threads are greenlets there)."""
    if os.environ.get("REQCTX_EXPECT_MONKEY") != "1":
        pytest.skip("checked in the tox gevent env, which sets REQCTX_EXPECT_MONKEY=1")
    from gevent import monkey

    assert monkey.is_module_patched("threading") and monkey.is_module_patched("socket")
