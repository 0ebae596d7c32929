"""The request context follows work into Celery tasks: real Redis, real workers, real gunicorn.

A ``redis-server`` on a free loopback port is the broker; four ``celery worker`` processes
(``-P gevent -c 100``, ``-P prefork -c 2``, ``-P threads -c 4``, ``-P solo``) consume one
queue each; ``celery_web:app`` runs under ``gunicorn -k gevent``.  Tasks (``celery_app``)
push what they saw to a redis list.  The last test stops the workers (warm shutdown) and
reads the report each worker process wrote, so this module's tests run in file order and
the fault tests leave expectations for it in :data:`EXPECT_DESTROYED` (after the test
that kills a prefork child: a killed process writes no report).
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("celery")

import celery_app as tasks
from celery import Celery, chain, chord, group
from celery_processes import REDIS_SERVER, CeleryWorker, RedisServer
from servers import GunicornServer, run_load
from waiting import wait_until

from flask_reqctx import create_request_context, get_request_context, is_valid_request_id

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not on PATH (.ci/run installs it)"
)

CONCURRENCY = {"gevent": 100, "prefork": 2, "threads": 4, "solo": 1}
OTHER = {"gevent": "prefork", "prefork": "gevent", "threads": "solo", "solo": "threads"}
#: request ids of task runs that raised or hit a time limit, per pool: their contexts must
#: be among those the pool's processes destroyed (checked at warm shutdown)
EXPECT_DESTROYED: dict[str, set[str]] = defaultdict(set)
#: pids of prefork children killed on purpose: they write no report
KILLED: set[int] = set()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path_factory.mktemp("redis"))).start()
    try:
        tasks.configure(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workers(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, CeleryWorker]]:
    directory = str(tmp_path_factory.mktemp("workers"))
    started: dict[str, CeleryWorker] = {}
    try:
        for pool, concurrency in CONCURRENCY.items():
            started[pool] = CeleryWorker(pool, concurrency, redis_server.url, directory).start()
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        for worker in started.values():
            worker.request_shutdown()
        for worker in started.values():
            worker.shutdown()


@pytest.fixture(scope="module")
def unreachable_broker() -> Iterator[str]:
    """A loopback port whose listener never accepts and whose accept queue is full, so a
    connection attempt hangs (its SYN is dropped) instead of being refused at once."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        yield f"redis://127.0.0.1:{address[1]}/0"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, unreachable_broker: str) -> Iterator[GunicornServer]:
    env = {"REQCTX_TEST_REDIS": redis_server.url, "REQCTX_TEST_DEAD_BROKER": unreachable_broker}
    with GunicornServer("gevent", app="celery_web:app", worker_connections=1000, env=env) as server:
        yield server
        assert server.extension_errors() == []


@pytest.fixture
def observations(redis_server: RedisServer) -> Any:
    """``wait(n)``: the first ``n`` task records pushed during this test (bounded wait)."""
    store = tasks.store()
    store.delete(tasks.OBSERVATIONS)

    def wait(count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        wait_until(
            lambda: store.llen(tasks.OBSERVATIONS) >= count,
            timeout,
            0.05,
            lambda: f"{store.llen(tasks.OBSERVATIONS)} of {count} tasks recorded",
        )
        return [json.loads(raw) for raw in store.lrange(tasks.OBSERVATIONS, 0, -1)]

    return wait


def _check_seen(observation: dict[str, Any], request_id: str, trace_id: str | None = None) -> None:
    """The task ran in a context of ``request_id`` from start to end, stamped on its logs."""
    assert observation["request_id"] == request_id, observation
    assert observation["parent_request_id"] == request_id, observation
    assert observation["structlog_request_id"] == request_id, observation
    assert observation["same_after_pause"], observation
    if trace_id is not None:
        assert observation["trace_id"] == trace_id, observation


def _check_log_lines(worker: CeleryWorker, count: int) -> None:
    """Each task's log line (``RequestIdFilter`` on the worker's handlers) has its label's id."""
    lines = [line for line in worker.log_lines() if " observe label=" in line]
    assert len(lines) >= count, worker.output()
    for line in lines:
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        assert fields["rid"] == fields["label"], line


def test_200_concurrent_requests_each_task_sees_exactly_its_request(workers, web, observations):
    """Half the requests send an X-Request-ID, half a traceparent; each sends two tasks (one
    per pool, by delay/chain/apply_async/send_task/group) and each task sends one more to
    the other pool: 800 task runs, each with its request's id, parent, trace and span."""
    report = run_load(
        web,
        path="/enqueue",
        requests=200,
        concurrency=200,
        without_id_every=2,
        traceparent_without_id=True,
        id_prefix="celery-load",
        timeout=60,
    )
    assert report["error_count"] == 0, report["errors"]
    assert report["statuses"] == {"200": 200}, report["statuses"]
    sent: dict[str, dict[str, Any]] = {}
    for result in report["results"]:
        body = result["body"]
        assert result["echoed"] == body["request_id"] and body["same_after_send"], result
        if result["sent"] is not None:
            assert body["request_id"] == result["sent"], result
        else:
            assert is_valid_request_id(body["request_id"]), result
            assert body["trace_id"] == result["traceparent"].split("-")[1], result
        sent[body["request_id"]] = body
    assert len(sent) == 200
    assert {body["path"] for body in sent.values()} == {"delay+chain", "apply_async+send_task", "group"}

    seen = observations(800)
    assert len(seen) == 800
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for observation in seen:
        body = sent[observation["label"]]
        _check_seen(observation, body["request_id"], body["trace_id"])
        by_label[observation["label"]].append(observation)
    assert set(by_label) == set(sent)
    for label, runs in by_label.items():
        assert Counter(run["pool"] for run in runs) == {"gevent": 2, "prefork": 2}, runs
        first = [run for run in runs if run["hop"] == 0]
        second = [run for run in runs if run["hop"] == 1]
        assert len(first) == len(second) == 2, runs
        # the sender's span is the parent in the trace: the view's, then the first task's
        assert all(run["trace_parent"] == sent[label]["span_id"] for run in first), runs
        assert sorted(run["trace_parent"] for run in second) == sorted(run["span_id"] for run in first), runs
    assert len({run["pid"] for run in seen if run["pool"] == "prefork"}) == 2
    for pool in ("gevent", "prefork"):
        _check_log_lines(workers[pool], 400)
    web.wait_idle()


def test_many_senders_threads_and_solo_pools(workers, observations):
    """40 contexts (a CLI job's, say) each send a task to the threads or the solo pool,
    which sends one more to the other: each of the 80 runs has its sender's id and trace."""
    traces = {}
    for i in range(40):
        pool = "threads" if i % 2 else "solo"
        with create_request_context({"job": i}, f"job-{i}") as ctx:
            traces[ctx.request_id] = ctx.trace_id
            tasks.observe.apply_async((ctx.request_id, "job", 0, [OTHER[pool]]), queue=pool)
    seen = observations(80)
    assert len(seen) == 80
    for observation in seen:
        _check_seen(observation, observation["label"], traces[observation["label"]])
    assert Counter(run["pool"] for run in seen) == {"threads": 40, "solo": 40}
    for pool in ("threads", "solo"):
        _check_log_lines(workers[pool], 40)


def test_chain_group_chord_and_retry_keep_the_senders_id(workers, observations):
    with create_request_context({"job": "pipeline"}, "pipeline-job") as ctx:
        chain(
            tasks.observe.si("p", "chain", 0).set(queue="threads"),
            tasks.observe.si("p", "chain", 1).set(queue="solo"),
        ).apply_async()
        group(
            tasks.observe.si("p", "group", 0).set(queue="threads"),
            tasks.observe.si("p", "group", 0).set(queue="gevent"),
        ).apply_async()
        chord(
            [
                tasks.observe.si("p", "chord", 0).set(queue="prefork"),
                tasks.observe.si("p", "chord", 0).set(queue="solo"),
            ],
            tasks.gather.s("p").set(queue="threads"),
        ).apply_async()
        tasks.flaky.apply_async(("p",), queue="gevent")
        trace_id = ctx.trace_id
    seen = observations(9)
    assert len(seen) == 9
    for observation in seen:
        _check_seen(observation, "pipeline-job", trace_id)
    assert Counter(run["via"] for run in seen) == {"chain": 2, "group": 2, "chord": 3, "retry": 2}
    assert sorted(run["retries"] for run in seen if run["via"] == "retry") == [0, 1]
    body = next(run for run in seen if run["task"] == "celery_app.gather")
    assert body["results"] == ["pipeline-job", "pipeline-job"]


def test_tasks_without_our_headers_get_fresh_ids(workers, redis_server, observations):
    """Sent outside any context, by a plain Celery app (no init_celery, as a service without
    this extension), or with header values that fail validation: a fresh id each, shared
    only with the task it sends in turn."""
    assert get_request_context() is None
    plain = Celery("plain", broker=redis_server.url + "/0")
    bad_id = {"X-Request-ID": "bad id\r\nX-Injected: 1", "traceparent": "00-zz-not-a-traceparent"}
    valid_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    valid_trace_only = {"X-Request-ID": "x" * 129, "traceparent": valid_trace}
    valid_id_only = {"X-Request-ID": "kept-id-1", "traceparent": "01-" + "0" * 32 + "-00f067aa0ba902b7-01"}
    try:
        for pool in CONCURRENCY:
            tasks.observe.apply_async((f"outside-{pool}", "outside", 0, [OTHER[pool]]), queue=pool)
            plain.send_task(tasks.observe.name, (f"plain-{pool}", "plain", 0), queue=pool)
            plain.send_task(tasks.observe.name, (f"bad-{pool}", "bad", 0), queue=pool, headers=bad_id)
            plain.send_task(
                tasks.observe.name, (f"trace-{pool}", "trace", 0), queue=pool, headers=valid_trace_only
            )
            plain.send_task(
                tasks.observe.name, (f"idonly-{pool}", "idonly", 0), queue=pool, headers=valid_id_only
            )
    finally:
        plain.close()
    seen = observations(24)
    assert len(seen) == 24
    fresh = Counter(run["request_id"] for run in seen if run["via"] != "idonly")
    for run in seen:
        assert is_valid_request_id(run["request_id"]) and run["same_after_pause"], run
        assert run["structlog_request_id"] == run["request_id"], run
        if run["via"] == "idonly":
            assert run["request_id"] == run["parent_request_id"] == "kept-id-1", run
            assert run["trace_parent"] is None, run  # the invalid traceparent was dropped
        elif run["hop"] == 0:
            assert run["parent_request_id"] is None, run
            # a fresh id, shared only with the task this one sent (outside: one more hop)
            assert fresh[run["request_id"]] == (2 if run["via"] == "outside" else 1), run
        else:
            assert run["parent_request_id"] == run["request_id"], run
        if run["via"] == "trace":
            assert run["trace_id"] == valid_trace.split("-")[1] and run["trace_parent"] == "00f067aa0ba902b7"
        elif run["via"] in ("bad", "plain"):
            assert run["trace_parent"] is None, run
    assert len(fresh) == 4 * 4


def test_unreachable_broker_fails_the_send_not_the_context(web):
    """Celery's own settings (a 1 s connect timeout, one publish retry) bound the wait; the
    client's 30 s timeout bounds the test.  kombu's OperationalError reaches the view, whose
    context is untouched and destroyed as usual."""
    status, headers, body = web.request("/enqueue-unreachable", timeout=30)
    assert status == 200, body
    result = json.loads(body)
    assert result["error"] == "kombu.exceptions.OperationalError", result
    assert result["same_after_send"], result
    assert headers["X-Request-ID"] == result["request_id"]
    web.wait_idle()


def test_sigkill_of_a_prefork_child_leaves_no_context_in_survivors(workers, observations):
    prefork = workers["prefork"]
    with create_request_context(None, "killed-mid-task"):
        blocked = tasks.block.apply_async(("killed-mid-task", 30), queue="prefork")
    (started,) = observations(1)
    assert started["request_id"] == "killed-mid-task" and started["pid"] in prefork.children()
    os.kill(started["pid"], signal.SIGKILL)
    KILLED.add(started["pid"])
    blocked.get(timeout=30, propagate=False)
    assert type(blocked.result).__name__ == "WorkerLostError"
    for i in range(10):
        with create_request_context(None, f"after-kill-{i}"):
            tasks.observe.apply_async((f"after-kill-{i}", "after-kill", 0), queue="prefork")
    seen = observations(11)
    for observation in seen[1:]:
        _check_seen(observation, observation["label"])
        assert observation["pid"] != started["pid"]


def test_raising_and_time_limited_tasks_end_their_context(workers, observations):
    sent = []
    for pool in CONCURRENCY:
        with create_request_context(None, f"raises-{pool}"):
            sent.append((pool, f"raises-{pool}", tasks.fail.apply_async((f"raises-{pool}",), queue=pool)))
    with create_request_context(None, "hard-limit-gevent"):
        sent.append(
            (
                "gevent",
                "hard-limit-gevent",
                tasks.slow.apply_async(("hard-limit-gevent", 30), queue="gevent", time_limit=1),
            )
        )
    with create_request_context(None, "soft-limit-prefork"):
        sent.append(
            (
                "prefork",
                "soft-limit-prefork",
                tasks.slow.apply_async(("soft-limit-prefork", 30), queue="prefork", soft_time_limit=0.5),
            )
        )
    errors = {}
    for pool, request_id, result in sent:
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE"
        errors[request_id] = type(result.result).__name__
        EXPECT_DESTROYED[pool].add(request_id)
    assert errors == {
        **{f"raises-{pool}": "ValueError" for pool in CONCURRENCY},
        "hard-limit-gevent": "TimeLimitExceeded",
        "soft-limit-prefork": "SoftTimeLimitExceeded",
    }
    seen = observations(len(sent))
    assert len(seen) == len(sent)
    for observation in seen:
        _check_seen(observation, observation["label"])


def test_a_running_task_revoked_with_terminate_ends_its_context(workers, observations):
    """The gevent pool kills the task's greenlet (GreenletExit inside the task)."""
    with create_request_context(None, "revoked-gevent"):
        result = tasks.slow.apply_async(("revoked-gevent", 30), queue="gevent")
    (started,) = observations(1)
    _check_seen(started, "revoked-gevent")
    tasks.celery_app.control.revoke(result.id, terminate=True, destination=["gevent@reqctx-test"])
    result.get(timeout=30, propagate=False)
    assert result.state == "REVOKED"
    EXPECT_DESTROYED["gevent"].add("revoked-gevent")


def test_warm_shutdown_every_worker_process_reports_no_context(workers):
    """Last: stop every worker (SIGTERM, Celery's warm shutdown) and read what each process
    reported as it ended: nothing bound, nothing live, nothing found bound just before a
    task's context was made or just after it was closed, every fault's context destroyed."""
    children = set(workers["prefork"].children())
    assert len(children) == 2 and not children & KILLED
    for worker in workers.values():
        worker.request_shutdown()
    for pool, worker in workers.items():
        assert worker.shutdown() == 0, worker.output()
        reports = worker.reports()
        roles = Counter(report["role"] for report in reports)
        if pool == "prefork":
            assert roles["main"] == 1 and children <= {r["pid"] for r in reports if r["role"] == "child"}, (
                reports
            )
            assert not KILLED & {r["pid"] for r in reports}
        else:
            assert roles == {"main": 1}, reports
        destroyed: set[str] = set()
        for report in reports:
            assert report["patched"], report
            assert report["bound"] is False, report
            assert report["stats"]["live"] == 0, report
            assert report["open"] == [], report
            assert report["bound_before_task"] == 0 and report["bound_after_task"] == 0, report
            destroyed.update(report["destroyed"])
        assert sum(report["tasks"] for report in reports) > 0, reports
        assert EXPECT_DESTROYED[pool] <= destroyed, (pool, EXPECT_DESTROYED[pool] - destroyed)
