"""Init from the trigger: every unit a request creates sees that request's very context object."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import gevent
import gevent.pool
import pytest
from gevent import Greenlet
from waiting import wait_until

from flask_reqctx import bind, execution_id, get_request_context, stats, trigger_id


def _ctx():
    return get_request_context()


def run_in_request(app, client, fn):
    """Run ``fn()`` as a view and return (what it returned, the request's context)."""
    if "run" not in app.view_functions:

        @app.get("/run")
        def run():
            out = app.config["RUN"]
            out["ctx"] = get_request_context()
            out["result"] = out["fn"]()
            return "ok"

    out = app.config["RUN"] = {"fn": fn}
    assert client.get("/run").status_code == 200
    return out["result"], out["ctx"]


class _UserGreenlet(gevent.Greenlet):
    """A user's subclass of the (patched) ``gevent.Greenlet``, overriding ``_run``."""

    def _run(self):
        return _ctx()


@pytest.mark.parametrize(
    "spawn",
    [
        pytest.param(lambda: _UserGreenlet.spawn().get(), id="user subclass"),
        pytest.param(lambda: gevent.spawn(_ctx).get(), id="gevent.spawn"),
        pytest.param(lambda: Greenlet.spawn(_ctx).get(), id="Greenlet.spawn"),
        pytest.param(lambda: gevent.spawn_later(0.001, _ctx).get(), id="spawn_later"),
        pytest.param(lambda: gevent.pool.Pool(2).spawn(_ctx).get(), id="Pool.spawn"),
        pytest.param(lambda: gevent.pool.Group().spawn(_ctx).get(), id="Group.spawn"),
        pytest.param(lambda: gevent.pool.Pool(2).apply(_ctx), id="Pool.apply"),
    ],
)
def test_greenlets_see_the_request_context(app, client, spawn):
    seen, ctx = run_in_request(app, client, spawn)
    assert seen is ctx and ctx is not None


def test_greenlet_constructed_then_started(app, client):
    def make():
        g = gevent.Greenlet(_ctx)
        g.start()
        return g.get()

    seen, ctx = run_in_request(app, client, make)
    assert seen is ctx


def test_thread_sees_the_request_context(app, client):
    def make():
        box = []
        t = threading.Thread(target=lambda: box.append(_ctx()))
        t.start()
        t.join()
        return box[0]

    seen, ctx = run_in_request(app, client, make)
    assert seen is ctx


def test_thread_subclass_overriding_run(app, client):
    class Worker(threading.Thread):
        def run(self):
            self.seen = _ctx()

    def make():
        w = Worker()
        w.start()
        w.join()
        return w.seen

    seen, ctx = run_in_request(app, client, make)
    assert seen is ctx


def test_executor_job_sees_its_submitter_and_worker_keeps_nothing(app, client):
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        seen, ctx = run_in_request(app, client, lambda: pool.submit(_ctx).result())
        assert seen is ctx
        # The same (now warm) worker runs a job submitted outside any request: nothing.
        assert pool.submit(_ctx).result() is None
        # And a second request's job sees the second request, not the first.
        seen2, ctx2 = run_in_request(app, client, lambda: pool.submit(_ctx).result())
        assert seen2 is ctx2 and ctx2 is not ctx


def test_asyncio_tasks_see_the_request_context(app, client):
    async def main():
        return await asyncio.gather(asyncio.create_task(child()), child())

    async def child():
        await asyncio.sleep(0)
        return _ctx()

    (a, b), ctx = run_in_request(app, client, lambda: asyncio.run(main()))
    assert a is ctx and b is ctx


def test_async_view_sees_the_request_context(app, client):
    out = {}

    @app.get("/async")
    async def view():
        await asyncio.sleep(0)
        out["view"] = _ctx()
        out["task"] = await asyncio.create_task(_async_ctx())
        return {"id": _ctx().request_id}

    body = client.get("/async", headers={"X-Request-ID": "async-1"}).get_json()
    assert body["id"] == "async-1"
    assert out["view"].request_id == "async-1" and out["task"] is out["view"]


async def _async_ctx():
    return _ctx()


def test_grandchildren_see_it_too(app, client):
    def child():
        return gevent.spawn(grandchild).get()

    def grandchild():
        box = []
        t = threading.Thread(target=lambda: box.append(_ctx()))
        t.start()
        t.join()
        return box[0], _ctx()

    (in_thread, in_greenlet), ctx = run_in_request(app, client, lambda: gevent.spawn(child).get())
    assert in_thread is ctx and in_greenlet is ctx


def test_child_outliving_its_request_keeps_the_context_until_it_ends(app, client):
    children = []

    def late():
        gevent.sleep(0.05)  # suspended while its request ends
        return _ctx()

    _, ctx = run_in_request(app, client, lambda: children.append(gevent.spawn(late)))
    assert stats()["live"] == 1  # the request is gone, its child is not
    assert children[0].get() is ctx
    wait_until(lambda: stats()["live"] == 0)  # the hub runs the rawlink that destroys it
    assert stats()["live"] == 0


def test_child_context_is_fixed_at_creation_not_first_run(app, client):
    """gunicorn serves a keep-alive connection's requests in one greenlet: a child spawned by
    request 1 that first runs during request 2 must still see request 1."""
    late = []

    @app.get("/first")
    def first():
        late.append(gevent.spawn(_ctx))  # not yet run when the view returns
        return "1"

    @app.get("/second")
    def second():
        gevent.sleep(0.01)  # the child of /first runs now, inside request 2's greenlet turn
        return get_request_context().request_id

    client.get("/first", headers={"X-Request-ID": "req-1"})
    assert client.get("/second", headers={"X-Request-ID": "req-2"}).text == "req-2"
    assert late[0].ready() and late[0].value.request_id == "req-1"


def test_successive_requests_in_one_greenlet_start_clean(app, client):
    @app.get("/id")
    def ident():
        return {"id": get_request_context().request_id, "eid": execution_id()}

    def connection():
        return [client.get("/id").get_json() for _ in range(5)]

    seen = gevent.spawn(connection).get()
    assert len({s["id"] for s in seen}) == 5
    assert len({s["eid"] for s in seen}) == 5  # a fresh execution id per request


def test_killed_before_start_and_killed_while_running_are_destroyed(app, client):
    def make():
        never = gevent.spawn(_ctx)
        never.kill()
        sleeping = gevent.spawn(gevent.sleep, 10)
        gevent.sleep(0)
        sleeping.kill()
        return never.dead and sleeping.dead

    assert run_in_request(app, client, make)[0]
    wait_until(lambda: stats()["live"] == 0)  # the killed ones' rawlinks run in the hub
    assert stats()["live"] == 0


def test_no_context_outside_a_request_in_any_unit():
    assert gevent.spawn(_ctx).get() is None
    box = []
    t = threading.Thread(target=lambda: box.append(_ctx()))
    t.start()
    t.join()
    assert box == [None]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(_ctx).result() is None


def test_bind_carries_the_context_to_callbacks_run_elsewhere(app, client):
    callbacks = []
    run_in_request(app, client, lambda: callbacks.append(bind(lambda: (_ctx(), execution_id()))))
    assert _ctx() is None
    ctx, eid = callbacks[0]()
    assert ctx is not None and eid > 0
    assert _ctx() is None


def test_execution_and_trigger_ids(app, client):
    def make():
        own = execution_id()
        child = gevent.spawn(lambda: (execution_id(), trigger_id())).get()
        return own, child

    (own, (child_eid, child_trigger)), _ = run_in_request(app, client, make)
    assert child_trigger == own and child_eid != own
    assert gevent.spawn(execution_id).get() != gevent.spawn(execution_id).get()  # never reused
    root = gevent.spawn(trigger_id).get()
    assert root == 0


def test_patched_greenlet_class_still_answers_isinstance_for_gevents_own():
    """``gevent.Greenlet`` now names a subclass; greenlets made with gevent's own class
    (by gevent internals, or code that bound the class earlier) must still pass checks."""
    import gevent.greenlet

    own = gevent.greenlet.Greenlet(lambda: None)
    assert gevent.Greenlet is not gevent.greenlet.Greenlet
    assert isinstance(own, gevent.Greenlet) and issubclass(gevent.greenlet.Greenlet, gevent.Greenlet)
    assert isinstance(gevent.spawn(lambda: None), gevent.greenlet.Greenlet)
    assert not isinstance(object(), gevent.Greenlet)

    class Mine(gevent.Greenlet):  # user subclasses of the patched name still propagate
        pass

    assert issubclass(Mine, gevent.greenlet.Greenlet)


def test_ids_of_greenlets_that_share_a_pending_unit(app, client):
    """Siblings made from one template share its pending unit until they ask: each then
    gets an id of its own (kept for its life), triggered by their creator; a grandchild's
    trigger is its parent greenlet's own id."""

    def child() -> tuple[int, int, int, tuple[int, int]]:
        own = execution_id()
        grandchild = gevent.spawn(lambda: (execution_id(), trigger_id())).get()
        return own, execution_id(), trigger_id(), grandchild

    def make():
        return execution_id(), [g.get() for g in [gevent.spawn(child) for _ in range(5)]]

    (own, children), _ = run_in_request(app, client, make)
    ids = [first for first, _, _, _ in children]
    assert len(set(ids)) == 5 and own not in ids
    for first, again, trigger, (grandchild, grandchild_trigger) in children:
        assert again == first and trigger == own
        assert grandchild_trigger == first and grandchild not in ids
