"""Execution traces (``REQCTX_TRACE``): what each context records, bounds, the Chrome export."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import gevent
import gevent.threadpool
import pytest
from flask import Flask, jsonify
from fresh_interpreter import run_in_fresh_interpreter
from waiting import wait_until

from flask_reqctx import ReqCtx, create_request_context, get_request_context, stats, tracing

HERE = os.path.abspath(__file__)


def traced_app(**config: object) -> Flask:
    app = Flask("traced")
    app.config.update(TESTING=True, REQCTX_TRACE=True, **config)
    ReqCtx(app)
    return app


def line_of(marker: str) -> int:
    """The line of this file holding ``marker`` (in a comment), for creation-site checks."""
    with open(HERE) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "line_of(" not in line:
                return number
    raise AssertionError(marker)


def finished_trace(request_id: str) -> dict:
    found = [t for t in tracing.finished() if t["request_id"] == request_id]
    assert len(found) == 1, [t["request_id"] for t in tracing.finished()][:5]
    return found[0]


def by_label(trace: dict) -> dict[str, dict]:
    return {u["label"].split(".")[-1]: u for u in trace["units"][1:]}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_request_records_its_units_with_kinds_triggers_outcomes_and_sites():
    app = traced_app()

    @app.get("/")
    def view():
        def returns() -> int:
            gevent.sleep(0.001)
            return 1

        def raises() -> None:
            raise ValueError("expected by the test")

        def sleeps() -> None:
            gevent.sleep(5)

        done = gevent.spawn(returns)  # SITE-RETURNS
        failed = gevent.spawn(raises)
        killed = gevent.spawn(sleeps)
        never = gevent.Greenlet(returns)
        gevent.sleep(0.002)  # a yield: the spawned ones run, `sleeps` is suspended when killed
        killed.kill()
        never.kill()
        gevent.joinall([done, failed])
        thread = threading.Thread(target=raises, name="raising-thread")
        thread.start()  # SITE-THREAD: a thread's unit is created when it starts
        thread.join()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(returns).result()  # SITE-POOL
        return jsonify(get_request_context().execution_trace())

    response = app.test_client().get("/", headers={"X-Request-ID": "traced-1"})
    inside = response.get_json()
    assert inside["live"] is True and inside["request_id"] == "traced-1"
    trace = finished_trace("traced-1")
    assert trace["live"] is False and trace["method"] == "GET" and trace["path"] == "/"
    assert trace["status"] == 200 and trace["dropped"] == 0
    root, *children = trace["units"]
    assert root["kind"] == "request" and root["start_ms"] == 0 and root["outcome"] == "returned"
    assert root["eid"] == trace["eid"]
    assert all(child["trigger"] == root["eid"] for child in children)
    assert len({u["eid"] for u in trace["units"]}) == len(trace["units"])
    for unit in trace["units"]:
        assert 0 <= unit["start_ms"] <= unit["end_ms"] <= trace["duration_ms"] + 1, unit
    outcomes = [(u["kind"], u["outcome"], u["error"]) for u in children]
    assert outcomes == [
        ("greenlet", "returned", None),
        ("greenlet", "raised", "ValueError"),
        ("greenlet", "killed", None),
        ("greenlet", "never started", None),
        ("thread", "raised", "ValueError"),
        ("thread", "returned", None),  # an executor job: read from its Future
    ]
    assert children[0]["site"] == f"{HERE}:{line_of('SITE-RETURNS')}"
    assert children[0]["function"].endswith("view") and children[0]["label"].endswith("returns")
    assert (
        children[4]["site"] == f"{HERE}:{line_of('SITE-THREAD')}" and children[4]["label"] == "raising-thread"
    )
    assert children[5]["site"] == f"{HERE}:{line_of('SITE-POOL')}"
    assert children[5]["label"].endswith("returns")
    json.dumps(trace)  # JSON-serialisable as it is


def outcomes_by_label(trace: dict) -> dict[str, tuple[str, str | None]]:
    return {label: (u["outcome"], u["error"]) for label, u in by_label(trace).items()}


def returns() -> int:
    return 1


def raises() -> None:
    raise KeyError("expected by the test")


def test_executor_jobs_record_how_they_ended():
    app = traced_app()

    @app.get("/")
    def view():
        def blocks(until: threading.Event) -> None:
            until.wait(5)

        def cancelled() -> None:
            raise AssertionError("a cancelled job never runs")

        release = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(returns).result() == 1
            failed = pool.submit(raises)
            with pytest.raises(KeyError):
                failed.result()
            blocked = pool.submit(blocks, release)  # the one worker is busy: the next job waits
            never = pool.submit(cancelled)
            assert never.cancel()
            release.set()
            blocked.result()
        return "ok"

    app.test_client().get("/", headers={"X-Request-ID": "jobs-1"})
    trace = finished_trace("jobs-1")
    assert [u["kind"] for u in trace["units"][1:]] == ["thread"] * 4
    assert outcomes_by_label(trace) == {
        "returns": ("returned", None),
        "raises": ("raised", "KeyError"),
        "blocks": ("returned", None),
        "cancelled": ("never started", None),
    }
    json.dumps(trace)


def test_asyncio_tasks_record_how_they_ended():
    app = traced_app()

    @app.get("/")
    def view():
        async def returns() -> int:
            await asyncio.sleep(0)
            return 1

        async def raises() -> None:
            await asyncio.sleep(0)
            raise KeyError("expected by the test")

        async def sleeps() -> None:
            await asyncio.sleep(5)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            done = loop.create_task(returns())
            failed = asyncio.ensure_future(raises())
            killed = asyncio.create_task(sleeps())
            await asyncio.sleep(0)  # it has started: it sleeps
            killed.cancel()
            results = await asyncio.gather(done, failed, killed, return_exceptions=True)
            assert results[0] == 1 and isinstance(results[1], KeyError)
            assert isinstance(results[2], asyncio.CancelledError)

        asyncio.run(main())
        return "ok"

    app.test_client().get("/", headers={"X-Request-ID": "tasks-1"})
    trace = finished_trace("tasks-1")
    assert {u["kind"] for u in trace["units"][1:]} == {"task"}
    outcomes = outcomes_by_label(trace)
    assert outcomes["returns"] == ("returned", None) and outcomes["main"] == ("returned", None)
    assert outcomes["raises"] == ("raised", "KeyError")
    assert outcomes["sleeps"] == ("killed", None)


def test_an_unretrieved_task_exception_is_still_reported_by_asyncio():
    traced_app()  # tracing on: reading a task's outcome must not mark its exception retrieved
    reported: list[str] = []

    async def raises() -> None:
        raise KeyError("expected by the test")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, info: reported.append(info["message"]))
        asyncio.ensure_future(raises())  # noqa: RUF006 (dropped on purpose)
        await asyncio.sleep(0.01)  # a yield: the dropped task runs and fails meanwhile
        gc.collect()  # the finished task, never asked for its result, is freed: asyncio reports it

    with create_request_context(request_id="unretrieved-1"):
        asyncio.run(main())
    assert any("never retrieved" in message for message in reported), reported
    trace = next(t for t in tracing.finished() if t["request_id"] == "unretrieved-1")
    assert outcomes_by_label(trace)["raises"] == ("raised", "KeyError")


def test_gevent_thread_pool_jobs_record_how_they_ended():
    app = traced_app()

    @app.get("/")
    def view():
        pool = gevent.get_hub().threadpool
        assert pool.spawn(returns).get() == 1
        with pytest.raises(KeyError):
            pool.spawn(raises).get()
        with gevent.threadpool.ThreadPoolExecutor(1) as executor:
            assert executor.submit(returns).result() == 1
        return "ok"

    app.test_client().get("/", headers={"X-Request-ID": "gevent-pool-1"})
    trace = finished_trace("gevent-pool-1")
    units = trace["units"][1:]
    assert [(u["label"].split(".")[-1], u["outcome"], u["error"]) for u in units] == [
        ("returns", "returned", None),
        ("raises", "raised", "KeyError"),
        ("returns", "returned", None),
    ]


def test_a_view_that_raises_is_recorded_as_raised():
    app = traced_app(PROPAGATE_EXCEPTIONS=False)

    @app.get("/boom")
    def boom():
        raise KeyError("expected by the test")

    assert app.test_client().get("/boom", headers={"X-Request-ID": "raised-1"}).status_code == 500
    trace = finished_trace("raised-1")
    assert trace["status"] == 500
    assert (trace["units"][0]["outcome"], trace["units"][0]["error"]) == ("raised", "KeyError")


def test_a_child_that_outlives_its_request_keeps_the_trace_live_until_it_ends():
    app = traced_app()
    release = gevent.event.Event()
    holder: dict = {}

    @app.get("/")
    def view():
        holder["ctx"] = get_request_context()
        gevent.spawn(release.wait)
        return "ok"

    app.test_client().get("/", headers={"X-Request-ID": "outlives-1"})
    ctx = holder.pop("ctx")
    trace = ctx.execution_trace()
    assert trace["live"] is True
    assert [u["outcome"] for u in trace["units"]] == ["returned", "alive"]
    assert trace["units"][0]["end_ms"] is not None and trace["units"][1]["end_ms"] is None
    assert any(t["request_id"] == "outlives-1" for t in tracing.live())
    release.set()
    wait_until(lambda: ctx.execution_trace()["live"] is False)  # the released child ended
    assert ctx.execution_trace()["live"] is False
    assert not any(t["request_id"] == "outlives-1" for t in tracing.live())
    assert finished_trace("outlives-1")["units"][1]["outcome"] == "returned"


def test_units_over_the_limit_are_counted_not_stored():
    app = traced_app(REQCTX_TRACE_MAX_UNITS=4)

    @app.get("/")
    def view():
        gevent.joinall([gevent.spawn(gevent.sleep, 0) for _ in range(10)])
        return "ok"

    app.test_client().get("/", headers={"X-Request-ID": "limited-1"})
    trace = finished_trace("limited-1")
    assert len(trace["units"]) == 4 and trace["dropped"] == 7


def test_resources_are_held_weakly():
    app = traced_app()
    refs: list[weakref.ref] = []

    @app.get("/")
    def view():
        greenlets = [gevent.spawn(gevent.sleep, 0) for _ in range(3)]
        for greenlet in greenlets:
            greenlet.join()
        refs.extend(weakref.ref(g) for g in greenlets)
        return "ok"

    app.test_client().get("/", headers={"X-Request-ID": "weak-1"})
    gevent.sleep(0)  # (joinall would leave the hub holding its last greenlet for a while)
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert len(finished_trace("weak-1")["units"]) == 4


def test_asyncio_tasks_and_contexts_made_outside_flask_are_recorded():
    traced_app()  # tracing on in this process

    async def work() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(asyncio.ensure_future(work()) for _ in range(3)))

    with create_request_context(request_id="job-1") as ctx:
        thread = threading.Thread(target=asyncio.run, args=(main(),))
        thread.start()
        thread.join()
    trace = next(t for t in tracing.finished() if t["request_id"] == "job-1")
    assert trace["eid"] == trace["units"][0]["eid"] and ctx.execution_trace() == trace
    kinds = [u["kind"] for u in trace["units"]]
    assert kinds[0] == "request" and kinds[1] == "thread" and kinds.count("task") >= 4  # main + 3 work
    assert trace["units"][1]["outcome"] == "returned"


def test_execution_trace_is_the_recorded_trace_and_ctx_trace_the_w3c_one():
    app = traced_app()
    held: dict = {}
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    @app.get("/")
    def view():
        ctx = held["ctx"] = get_request_context()
        gevent.spawn(gevent.sleep, 0).join()
        method, function = ctx.execution_trace(), tracing.execution_trace()
        assert method["age_ms"] <= function["age_ms"]  # the only field that moves while live
        assert method | {"age_ms": None} == function | {"age_ms": None} and method["live"] is True
        json.dumps(method)
        return ctx.trace.trace_id

    response = app.test_client().get("/", headers={"X-Request-ID": "called-1", "traceparent": incoming})
    ctx = held.pop("ctx")
    assert response.text == ctx.trace.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert not callable(ctx.trace)  # only the W3C trace: the execution trace has its own name
    assert ctx.execution_trace() == tracing.execution_trace(ctx) == finished_trace("called-1")
    assert ctx.execution_trace()["live"] is False and len(ctx.execution_trace()["units"]) == 2
    json.dumps(ctx.execution_trace())


def test_execution_trace_is_none_when_not_recorded():
    app = Flask("untraced-call")
    ReqCtx(app)

    @app.get("/")
    def view():
        ctx = get_request_context()
        return jsonify(trace=ctx.execution_trace(), trace_id=ctx.trace.trace_id)

    body = app.test_client().get("/").get_json()
    assert body["trace"] is None and len(body["trace_id"]) == 32
    script = (
        "import flask, flask_reqctx\n"
        "app = flask.Flask('x'); flask_reqctx.ReqCtx(app)\n"
        "ctx = flask_reqctx.get_request_context\n"
        "app.add_url_rule('/', 'v', lambda: {'trace': ctx().execution_trace()})\n"
        "assert app.test_client().get('/').get_json() == {'trace': None}\n"
        "with flask_reqctx.create_request_context() as ctx:\n"
        "    assert ctx.execution_trace() is None and len(ctx.trace.trace_id) == 32\n"
    )
    run_in_fresh_interpreter(script)


def test_untraced_apps_record_nothing():
    app = Flask("untraced")
    ReqCtx(app)

    @app.get("/")
    def view():
        gevent.spawn(gevent.sleep, 0).join()
        return jsonify(trace=get_request_context().execution_trace())

    assert app.test_client().get("/", headers={"X-Request-ID": "untraced-1"}).get_json() == {"trace": None}
    assert not any(t["request_id"] == "untraced-1" for t in tracing.finished())


def test_tracing_off_enables_no_hook():
    script = (
        "import flask, flask_reqctx\n"
        "from flask_reqctx import hooks\n"
        "app = flask.Flask('x'); flask_reqctx.ReqCtx(app)\n"
        "assert not hooks.enabled.lifecycle\n"
        "app2 = flask.Flask('y'); app2.config['REQCTX_TRACE'] = True; flask_reqctx.ReqCtx(app2)\n"
        "assert hooks.enabled.lifecycle\n"
    )
    run_in_fresh_interpreter(script)


def test_the_ring_keeps_the_last_finished_traces():
    script = (
        "import flask, flask_reqctx\n"
        "from flask_reqctx import tracing\n"
        "app = flask.Flask('x'); app.config.update(REQCTX_TRACE=True, REQCTX_TRACE_KEEP=5)\n"
        "flask_reqctx.ReqCtx(app); app.add_url_rule('/', 'v', lambda: 'ok')\n"
        "client = app.test_client()\n"
        "for i in range(12):\n"
        "    client.get('/', headers={'X-Request-ID': f'r{i}'})\n"
        "assert [t['request_id'] for t in tracing.finished()] == [f'r{i}' for i in range(11, 6, -1)]\n"
        "assert [t['request_id'] for t in tracing.finished(2)] == ['r11', 'r10']\n"
    )
    run_in_fresh_interpreter(script)


@pytest.mark.parametrize("key, value", [("REQCTX_TRACE_MAX_UNITS", 0), ("REQCTX_TRACE_KEEP", "many")])
def test_bad_bounds_are_a_clear_error(key, value):
    app = Flask("bad")
    app.config.update({"REQCTX_TRACE": True, key: value})
    with pytest.raises(ValueError, match=key):
        ReqCtx(app)


def test_concurrent_requests_each_record_only_their_own_children():
    app = traced_app()
    children = 5

    @app.get("/fan")
    def fan():
        own = get_request_context().request_id

        def child() -> str | None:
            gevent.sleep(0.001)
            ctx = get_request_context()
            return ctx.request_id if ctx is not None else None

        greenlets = [gevent.spawn(child) for _ in range(children)]
        gevent.joinall(greenlets)
        assert [g.value for g in greenlets] == [own] * children
        return "ok"

    client = app.test_client()
    ids = [f"conc-{i}" for i in range(60)]
    requests = [gevent.spawn(client.get, "/fan", headers={"X-Request-ID": rid}) for rid in ids]
    gevent.joinall(requests, raise_error=True)
    assert all(r.value.status_code == 200 for r in requests)
    seen_eids: set[int] = set()
    for rid in ids:
        trace = finished_trace(rid)
        root, *units = trace["units"]
        assert len(units) == children
        assert {u["trigger"] for u in units} == {root["eid"]}
        eids = {u["eid"] for u in trace["units"]}
        assert not eids & seen_eids
        seen_eids |= eids
    assert not any(t["request_id"].startswith("conc-") for t in tracing.live())
    assert stats()["live"] == 0


def test_chrome_trace_pairs_every_begin_with_an_end(tmp_path):
    app = traced_app()

    @app.get("/")
    def view():
        gevent.joinall([gevent.spawn(gevent.sleep, 0.001 * i) for i in range(4)])
        return "ok"

    client = app.test_client()
    for i in range(3):
        client.get("/", headers={"X-Request-ID": f"chrome-{i}"})
    traces = [finished_trace(f"chrome-{i}") for i in range(3)]
    path = tmp_path / "trace.json"
    tracing.to_chrome_trace(traces, str(path))
    events = json.loads(path.read_text())["traceEvents"]
    opened: dict[tuple[int, int], dict] = {}
    pairs = 0
    for event in events:
        key = (event["pid"], event["tid"])
        if event["ph"] == "B":
            assert key not in opened, event
            opened[key] = event
        elif event["ph"] == "E":
            begin = opened.pop(key)
            assert event["ts"] >= begin["ts"]
            pairs += 1
    assert not opened and pairs == 3 * 5
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(names) == sorted(t["eid"] for t in traces)
    assert all(f"GET / chrome-{i}" in names[traces[i]["eid"]] for i in range(3))
    assert tracing.to_chrome_trace(traces) == json.loads(path.read_text()) | {
        "traceEvents": tracing.to_chrome_trace(traces)["traceEvents"]
    }
