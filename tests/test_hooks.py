"""create_hook: init/before/after/destroy, exactly once per unit, errors contained."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time

import gevent
import pytest
from waiting import wait_until

from flask_reqctx import create_hook, execution_id, get_request_context, stats, trigger_id


class Recorder:
    def __init__(self):
        self.events = []
        self.hook = create_hook(init=self.init, before=self.before, after=self.after, destroy=self.destroy)

    def init(self, eid, kind, trigger, resource):
        self.events.append(("init", eid, kind, trigger))

    def before(self, eid):
        self.events.append(("before", eid))

    def after(self, eid):
        self.events.append(("after", eid))

    def destroy(self, eid):
        self.events.append(("destroy", eid))

    def of(self, name):
        return [e for e in self.events if e[0] == name]


@pytest.fixture
def recorder():
    rec = Recorder()
    rec.hook.enable()
    yield rec
    rec.hook.disable()


def test_init_and_destroy_pair_up_with_kinds_and_triggers(app, client, recorder):
    ids = {}

    @app.get("/fan")
    def fan():
        ids["request"] = execution_id()
        greenlet = gevent.spawn(lambda: ids.setdefault("greenlet", execution_id()))
        thread = threading.Thread(target=lambda: ids.setdefault("thread", execution_id()))
        thread.start()
        thread.join()
        greenlet.join()
        return "ok"

    client.get("/fan")
    wait_until(lambda: stats()["live"] == 0)  # the greenlet's rawlink (its destroy) ran
    inits = {eid: (kind, trigger) for _, eid, kind, trigger in recorder.of("init")}
    assert inits[ids["request"]][0] == "request"
    assert inits[ids["greenlet"]] == ("greenlet", ids["request"])
    assert inits[ids["thread"]] == ("thread", ids["request"])
    destroyed = [eid for _, eid in recorder.of("destroy")]
    assert sorted(destroyed) == sorted(inits) and len(destroyed) == len(set(destroyed)) == 3


def test_init_fires_at_creation_not_first_run(app, client, recorder):
    children = []

    @app.get("/late")
    def late():
        children.append(gevent.spawn(lambda: None))  # runs only after the request has ended
        return "ok"

    client.get("/late")
    order = [(e[0], e[2] if e[0] == "init" else None) for e in recorder.events if e[0] in ("init", "destroy")]
    assert order == [("init", "request"), ("init", "greenlet"), ("destroy", None)]
    children[0].join()
    assert len(recorder.of("destroy")) == 2


def test_before_and_after_fire_around_switches_of_units_with_a_context(app, client, recorder):
    child_eid = {}

    @app.get("/switch")
    def switch():
        def child():
            child_eid["eid"] = execution_id()
            gevent.sleep(0)  # two switches out and back: what the switch hooks see
            gevent.sleep(0)

        gevent.spawn(child).join()
        return "ok"

    client.get("/switch")
    eid = child_eid["eid"]
    befores = [e for e in recorder.of("before") if e[1] == eid]
    afters = [e for e in recorder.of("after") if e[1] == eid]
    assert len(befores) >= 3 and len(afters) >= 3  # first run + two returns from sleep(0)
    # Switches between units without a context are not reported.
    recorder.events.clear()
    gevent.spawn(gevent.sleep, 0).join()
    assert recorder.of("before") == recorder.of("after") == []


def test_disable_stops_events(app, client):
    rec = Recorder()
    rec.hook.enable().disable()

    @app.get("/")
    def index():
        return "ok"

    client.get("/")
    assert rec.events == [] and not rec.hook.enabled


def test_raising_callbacks_are_logged_and_harmless(app, client, caplog):
    def boom(*args):
        raise RuntimeError("hook bug")

    hook = create_hook(init=boom, before=boom, after=boom, destroy=boom).enable()
    try:

        @app.get("/")
        def index():
            return gevent.spawn(lambda: get_request_context().request_id).get()

        with caplog.at_level(logging.ERROR, logger="flask_reqctx"):
            response = client.get("/", headers={"X-Request-ID": "still-fine"})
    finally:
        hook.disable()
    assert response.text == "still-fine"
    assert any("hook callback" in r.getMessage() for r in caplog.records)
    wait_until(lambda: stats()["live"] == 0)  # the child's rawlink ran
    assert stats()["live"] == 0


def test_non_callable_is_rejected():
    with pytest.raises(TypeError, match="init must be callable"):
        create_hook(init=42)


def test_previous_greenlet_tracer_is_chained_and_restored(app, client):
    import greenlet

    seen = []
    previous = greenlet.settrace(lambda event, args: seen.append(event))
    try:
        hook = create_hook(before=lambda eid: None).enable()
        gevent.spawn(lambda: None).join()
        hook.disable()
        assert seen  # the earlier tracer still got its events
        assert greenlet.gettrace() is not None and greenlet.gettrace().__name__ == "<lambda>"
    finally:
        greenlet.settrace(previous)


def test_a_request_is_triggered_by_the_unit_that_serves_it(app, client):
    @app.get("/trigger")
    def trigger():
        return {"eid": execution_id(), "trigger": trigger_id()}

    def serve_two():
        seen = [client.get("/trigger").get_json() for _ in range(2)]
        return execution_id(), seen  # asked only afterwards: the same id the requests saw

    server_eid, seen = gevent.spawn(serve_two).get()
    assert [s["trigger"] for s in seen] == [server_eid, server_eid]
    assert seen[0]["eid"] != seen[1]["eid"] and server_eid not in (seen[0]["eid"], seen[1]["eid"])


class ResourceRecorder:
    """Records init resources and, in ``order``, inits against the jobs' own first lines."""

    def __init__(self, slow_init: float = 0.0):
        self.resources: dict[int, object] = {}
        self.order: list[str] = []
        self.slow_init = slow_init
        self.hook = create_hook(init=self.init, destroy=lambda eid: None)

    def init(self, eid, kind, trigger, resource):
        if kind in ("thread", "task"):
            time.sleep(self.slow_init)  # a worker not held back would run the job meanwhile
            self.resources[eid] = resource
            self.order.append(f"init {kind}")

    def job(self, name: str) -> int:
        self.order.append(f"run {name}")
        return execution_id()


@pytest.fixture
def resources():
    rec = ResourceRecorder(slow_init=0.05)
    rec.hook.enable()
    yield rec
    rec.hook.disable()


def pool_of(kind: str, stack: contextlib.ExitStack):
    """``(submit, wait)`` for a pool of one worker of ``kind``."""
    if kind == "executor":
        executor = stack.enter_context(concurrent.futures.ThreadPoolExecutor(1))
        return executor.submit, lambda future: future.result()
    return gevent.get_hub().threadpool.spawn, lambda result: result.get()


@pytest.mark.parametrize("kind", ["executor", "gevent thread pool"])
def test_a_pool_jobs_init_gets_what_submit_returns_before_the_job_runs(app, client, resources, kind):
    seen = {}

    @app.get("/")
    def index():
        with contextlib.ExitStack() as stack:
            submit, wait = pool_of(kind, stack)
            wait(submit(int))  # its worker is started and idle: it takes the next job at once
            resources.order.clear()
            handle = submit(resources.job, "job")  # a Future; gevent's: an AsyncResult
            seen["eid"], seen["handle"] = wait(handle), handle
        return "ok"

    client.get("/")
    assert resources.resources[seen["eid"]] is seen["handle"]
    assert resources.order == ["init thread", "run job"]


def test_a_tasks_init_gets_the_task_before_its_coroutine_runs(app, client, resources):
    seen = {}

    async def job() -> int:
        return resources.job("task")

    async def main() -> None:
        resources.order.clear()
        task = asyncio.get_running_loop().create_task(job())
        seen["eid"], seen["task"] = await task, task

    @app.get("/")
    def index():
        asyncio.run(main())
        return "ok"

    client.get("/")
    assert resources.resources[seen["eid"]] is seen["task"]
    assert resources.order[:2] == ["init task", "run task"]  # (asyncio.run's shutdown makes tasks after)


def test_a_raising_init_hook_does_not_hold_a_job_back(app, client):
    def boom(eid, kind, trigger, resource):
        raise RuntimeError("hook bug")

    hook = create_hook(init=boom).enable()
    try:

        @app.get("/")
        def index():
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                value = pool.submit(lambda: get_request_context().request_id).result(timeout=5)
            return value + "/" + gevent.get_hub().threadpool.spawn(lambda: "pool").get(timeout=5)

        response = client.get("/", headers={"X-Request-ID": "not-held"})
    finally:
        hook.disable()
    assert response.text == "not-held/pool"
