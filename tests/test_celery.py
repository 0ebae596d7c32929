"""``flask_reqctx.celery`` in one process: the headers a published message carries, the
context an executed task runs in (eager ``apply()``, Celery's own tracer and signals),
validation of incoming headers, and that ``import flask_reqctx`` never imports Celery.

Messages go to Celery's in-memory transport; the real broker and workers are in
``test_celery_workers.py``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery, signals
from celery.app.trace import build_tracer
from flask import Flask, jsonify
from fresh_interpreter import run_in_fresh_interpreter

import flask_reqctx
from flask_reqctx import create_hook, create_request_context, get_request_context, stats
from flask_reqctx.celery import init_celery
from flask_reqctx.logging import RequestIdFilter

app = Celery("unit", broker="memory://localhost/", backend="cache+memory://")
init_celery(app)
other_app = Celery("not_initialised", broker="memory://localhost/", backend="cache+memory://")

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _seen() -> dict[str, Any] | None:
    ctx = get_request_context()
    if ctx is None:
        return None
    return {
        "ctx": ctx,
        "request_id": ctx.request_id,
        "data": dict(ctx.data),
        "trace_id": ctx.trace_id,
        "trace_parent": ctx.trace.parent_id,
        "live": stats()["live"],
    }


@app.task
def seen() -> dict[str, Any] | None:
    return _seen()


@app.task
def leaves_its_own_context_bound() -> str:
    return create_request_context({}, "made-inside-the-task").request_id


@other_app.task
def seen_elsewhere() -> dict[str, Any] | None:
    return _seen()


@pytest.fixture
def published() -> Any:
    """The headers and body of each message published during the test (Celery's own
    ``after_task_publish`` signal, after ours has run)."""
    messages: list[dict[str, Any]] = []

    def record(headers: dict[str, Any] | None = None, body: Any = None, **_ignored: Any) -> None:
        messages.append({"headers": dict(headers or {}), "body": body})

    signals.after_task_publish.connect(record, weak=False)
    yield messages
    signals.after_task_publish.disconnect(record)


@pytest.fixture
def task_units() -> Any:
    """init (kind "task") and destroy of the units our contexts are made in."""
    events: list[tuple[str, Any]] = []
    hook = create_hook(
        init=lambda eid, kind, trigger, resource: events.append(("init", kind, eid)),
        destroy=lambda eid: events.append(("destroy", eid)),
    ).enable()
    yield events
    hook.disable()


def test_import_flask_reqctx_never_imports_celery():
    code = (
        "import sys, flask_reqctx, flask_reqctx.logging, flask_reqctx.outgoing, "
        "flask_reqctx.integrations.requests\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'billiard'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    out = run_in_fresh_interpreter(code, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_init_celery_wants_a_celery_app():
    with pytest.raises(TypeError, match=r"celery\.Celery"):
        init_celery(Flask(__name__))  # type: ignore[arg-type]


def test_published_in_a_context_the_headers_carry_ids_and_the_args_are_untouched(published):
    with create_request_context({"user": "secret"}, "sender-1") as ctx:
        seen.apply_async((), {}, queue="unit")
        app.send_task("anything.at.all", ("arg",), {"k": "v"}, queue="unit")
    assert len(published) == 2
    for message in published:
        headers = message["headers"]
        assert headers["X-Request-ID"] == "sender-1"
        assert headers["traceparent"] == f"00-{ctx.trace_id}-{ctx.trace.span_id}-00"
        assert "tracestate" not in headers
        assert "secret" not in repr(message)  # data stays in its process
    assert published[1]["body"][:2] == (("arg",), {"k": "v"})


def test_published_the_callers_tracestate_travels(published):
    with create_request_context(None, "sender-2") as ctx:
        ctx.trace = flask_reqctx.TraceContext.from_headers(TRACEPARENT, "vendor=abc")
        seen.delay()
    (message,) = published
    assert message["headers"]["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert message["headers"]["tracestate"] == "vendor=abc"


def test_published_outside_a_context_the_message_is_left_alone(published):
    seen.apply_async(headers={"tracestate": "kept=1"})
    (message,) = published
    assert "X-Request-ID" not in message["headers"] and "traceparent" not in message["headers"]
    assert message["headers"]["tracestate"] == "kept=1"


def test_republished_in_a_context_a_copied_tracestate_is_dropped(published):
    """A retry copies the message's headers: ours replace them, a stale tracestate goes."""
    with create_request_context(None, "sender-3"):
        seen.apply_async(headers={"X-Request-ID": "old", "traceparent": TRACEPARENT, "tracestate": "old=1"})
    (message,) = published
    assert message["headers"]["X-Request-ID"] == "sender-3"
    assert "tracestate" not in message["headers"]
    assert TRACEPARENT.split("-")[1] not in message["headers"]["traceparent"]


def test_executed_without_headers_a_task_gets_a_fresh_context_of_its_own(task_units):
    first = seen.apply().get()
    second = seen.apply().get()
    assert get_request_context() is None
    for result in (first, second):
        assert flask_reqctx.is_valid_request_id(result["request_id"])
        assert result["data"]["parent_request_id"] is None
        assert result["data"]["task"] == seen.name
        assert result["trace_parent"] is None
        assert result["live"] == 1
    assert first["request_id"] != second["request_id"]
    assert first["trace_id"] != second["trace_id"]
    kinds = [event for event in task_units if event[0] == "init"]
    assert [kind for _, kind, _ in kinds] == ["task", "task"]
    assert [event[0] for event in task_units] == ["init", "destroy", "init", "destroy"]


def test_executed_with_valid_headers_the_task_continues_the_senders_trace():
    result = seen.apply(headers={"X-Request-ID": "from-sender", "traceparent": TRACEPARENT}).get()
    assert result["request_id"] == "from-sender"
    assert result["data"]["parent_request_id"] == "from-sender"
    assert result["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert result["trace_parent"] == "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Request-ID": "bad id\r\nX-Injected: yes", "traceparent": "00-xyz"},
        {"X-Request-ID": "x" * 129, "traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        {"X-Request-ID": 12345, "traceparent": ["not", "a", "string"]},
        {"X-Request-ID": "", "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
    ],
)
def test_executed_with_invalid_headers_they_are_treated_as_absent(headers, caplog):
    with caplog.at_level(logging.DEBUG, logger="flask_reqctx"):
        result = seen.apply(headers=headers).get()
    assert flask_reqctx.is_valid_request_id(result["request_id"])
    assert result["request_id"] != headers["X-Request-ID"]
    assert result["data"]["parent_request_id"] is None
    assert result["trace_parent"] is None
    assert "X-Injected" not in caplog.text and "xyz" not in caplog.text
    assert "X-Request-ID task header" in caplog.text


def test_executed_eagerly_in_a_request_the_task_runs_in_the_request_context():
    flask_app = Flask("celery_eager")
    flask_reqctx.ReqCtx(flask_app)

    @flask_app.get("/")
    def view():
        ctx = get_request_context()
        result = seen.apply().get()
        return jsonify(
            same=result["ctx"] is ctx, request_id=result["request_id"], after=get_request_context() is ctx
        )

    body = flask_app.test_client().get("/", headers={"X-Request-ID": "req-eager"}).get_json()
    assert body == {"same": True, "request_id": "req-eager", "after": True}


def test_executed_eagerly_in_a_task_the_inner_task_runs_in_the_outer_context():
    @app.task
    def outer() -> tuple[Any, Any, bool]:
        ctx = get_request_context()
        inner = seen.apply().get()
        return ctx.request_id, inner["request_id"], get_request_context() is ctx

    outer_id, inner_id, still_bound = outer.apply(headers={"X-Request-ID": "outer-1"}).get()
    assert outer_id == inner_id == "outer-1" and still_bound


def test_a_context_the_task_leaves_bound_is_closed_when_the_task_ends():
    assert leaves_its_own_context_bound.apply().get() == "made-inside-the-task"
    assert get_request_context() is None
    assert stats()["live"] == 0


def test_a_raising_task_ends_its_context(task_units):
    @app.task
    def raises() -> None:
        assert get_request_context() is not None
        raise ValueError("on purpose")

    result = raises.apply()
    assert result.state == "FAILURE" and isinstance(result.result, ValueError)
    assert [event[0] for event in task_units] == ["init", "destroy"]


def test_tasks_of_an_app_not_initialised_get_no_context():
    assert seen_elsewhere.apply(headers={"X-Request-ID": "ignored"}).get() is None


def test_worker_log_records_are_stamped():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("celery_unit_test")
    logger.addHandler(handler)

    @app.task
    def logs() -> None:
        logger.warning("inside the task")

    try:
        logs.apply(headers={"X-Request-ID": "log-1", "traceparent": TRACEPARENT})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    assert [(r.request_id, r.trace_id) for r in records] == [  # type: ignore[attr-defined]
        ("log-1", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("-", "-"),
    ]


def test_the_gevent_result_drainer_does_not_inherit_the_context_that_starts_it():
    """Celery starts it lazily, from whichever greenlet first watches a result, and it runs
    as long as the process: it must not keep that request's context."""
    pytest.importorskip("gevent")
    from celery.backends.asynchronous import geventDrainer

    class Drainer(geventDrainer):
        def run(self) -> None:
            self.seen = get_request_context()
            self._started.set()

    drainer = Drainer(result_consumer=None)
    with create_request_context(None, "starts-the-drainer") as ctx:
        drainer.start()
        assert get_request_context() is ctx
    drainer._g.join()
    assert drainer.seen is None


@app.task(ignore_result=True)
def pauses(pool: str, seconds: float) -> tuple[str, bool]:
    ctx = get_request_context()
    assert ctx is not None
    if pool == "gevent":
        import gevent

        gevent.sleep(seconds)
    else:
        time.sleep(seconds)
    return ctx.request_id, get_request_context() is ctx


def _message(request_id: str) -> dict[str, Any]:
    """A task message's headers as a worker hands them to the tracer."""
    return {
        "lang": "py",
        "task": pauses.name,
        "id": str(uuid.uuid4()),
        "delivery_info": {"routing_key": "celery", "priority": None, "redelivered": False},
        "X-Request-ID": request_id,
        "traceparent": TRACEPARENT,
    }


@pytest.mark.parametrize("pool_name", ["gevent", "threads"])
def test_pooled_units_that_inherited_a_context_run_each_task_in_its_own(pool_name, task_units):
    """Celery's own gevent and threads pools, fed from inside a context: each pooled unit
    inherits it, each task run (Celery's worker tracer) shadows it with the task's own
    context under concurrency, and the inherited one is back when the run ends.  A gevent
    pool's time limit (a ``gevent.Timeout`` raised in the task) still ends the task's context."""
    if pool_name == "gevent":
        pytest.importorskip("gevent")
        from celery.concurrency.gevent import TaskPool
    else:
        from celery.concurrency.thread import TaskPool
    tracer = build_tracer(pauses.name, pauses, eager=False, app=app)
    seen: list[tuple[int, Any, Any, Any]] = []

    def job(i: int) -> None:
        message = _message(f"pooled-{i}")
        before = get_request_context()
        result = tracer(message["id"], (pool_name, 0.005), {}, message)
        seen.append((i, before, result.retval, get_request_context()))

    def times_out() -> None:
        message = _message("timed-out")
        tracer(message["id"], (pool_name, 5.0), {}, message)

    timeouts: list[Any] = []
    pool = TaskPool(limit=8)
    pool.start()
    with create_request_context(None, "feeds-the-pool") as outer:
        try:
            handles = [pool.apply_async(job, (i,)) for i in range(40)]
            if pool_name == "gevent":
                handles.append(
                    pool.apply_async(times_out, timeout=0.05, timeout_callback=lambda *a: timeouts.append(a))
                )
            for handle in handles:  # a gevent Greenlet, or the threads pool's ApplyResult
                if pool_name == "gevent":
                    handle.join(10)
                else:
                    handle.wait(10)
        finally:
            pool.stop()
        assert sorted(entry[0] for entry in seen) == list(range(40))
        for i, before, retval, after in seen:
            assert before is outer and after is outer
            assert retval == (f"pooled-{i}", True)
    task_inits = [event[2] for event in task_units if event[:2] == ("init", "task")]
    destroyed = {event[1] for event in task_units if event[0] == "destroy"}
    assert len(task_inits) == (41 if pool_name == "gevent" else 40)
    assert set(task_inits) <= destroyed
    assert len(timeouts) == (1 if pool_name == "gevent" else 0)
