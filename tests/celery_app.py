"""The Celery app of the real-broker tests: tasks that record the context they ran in.

Not a test module.  Imported by the ``celery worker`` processes (``celery -A celery_app``,
see ``celery_processes.py``), by the web app that gunicorn serves (``celery_web.py``) and
by the tests, which send tasks and read what the tasks recorded.  The broker is
``$REQCTX_TEST_REDIS/0`` (a ``redis-server`` the tests start), results go to ``/1`` and
the tasks' records to the list :data:`OBSERVATIONS` in ``/2``.

Worker processes also write a JSON report per process at shutdown (prefork children at
``worker_process_shutdown``, the main process at ``worker_shutdown``) into
``$REQCTX_TEST_REPORTS``: whether a context is bound there, ``stats()``, the task
contexts that were opened and not destroyed, the ids of those destroyed, and how often a
context was found bound just before a task's context was made or just after it was closed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Any

import redis
import structlog
from celery import Celery, signals
from celery.utils.log import get_task_logger

import flask_reqctx
from flask_reqctx import RequestContext, create_hook, get_request_context, stats
from flask_reqctx.celery import init_celery
from flask_reqctx.logging import RequestIdFilter, add_request_id

OBSERVATIONS = "reqctx-test:observations"
#: the queue of each worker is named after its pool
POOLS = ("gevent", "prefork", "threads", "solo")

celery_app = Celery("celery_app")
celery_app.conf.update(
    task_default_queue="gevent",
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_log_format="%(levelname)s %(processName)s rid=%(request_id)s tid=%(trace_id)s %(message)s",
    worker_task_log_format="%(levelname)s %(processName)s rid=%(request_id)s tid=%(trace_id)s %(message)s",
)
task_log = get_task_logger("celery_app.tasks")
_store: redis.Redis | None = None


def configure(redis_url: str) -> None:
    """Point the app at a redis server (``redis://127.0.0.1:PORT``)."""
    global _store
    celery_app.conf.update(broker_url=redis_url + "/0", result_backend=redis_url + "/1")
    _store = redis.Redis.from_url(redis_url + "/2")


def store() -> redis.Redis:
    if _store is None:
        raise RuntimeError("celery_app.configure() was not called")
    return _store


if os.environ.get("REQCTX_TEST_REDIS"):
    configure(os.environ["REQCTX_TEST_REDIS"])


# -- what a task records ------------------------------------------------------------------


def _structlog_request_id() -> Any:
    """The request id the structlog processor stamps on an event logged here."""
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[add_request_id, structlog.processors.JSONRenderer()]
    )
    return json.loads(logger.info("observe")).get("request_id")


def _record(task: Any, label: str, via: str, hop: int, **extra: Any) -> RequestContext:
    """Push what this task run sees to :data:`OBSERVATIONS`; log one line through the filter."""
    ctx = get_request_context()
    assert ctx is not None, "a task runs inside a context"
    task_log.warning("observe label=%s via=%s hop=%d", label, via, hop)
    observation = {
        "label": label,
        "via": via,
        "hop": hop,
        "task": task.name,
        "task_id": task.request.id,
        "retries": task.request.retries,
        "pool": os.environ.get("REQCTX_TEST_POOL"),
        "pid": os.getpid(),
        "request_id": ctx.request_id,
        "parent_request_id": ctx.data.get("parent_request_id"),
        "trace_id": ctx.trace_id,
        "trace_parent": ctx.trace.parent_id,
        "span_id": ctx.trace.span_id,
        "structlog_request_id": _structlog_request_id(),
        **extra,
    }
    # Other tasks run meanwhile (greenlets, threads): the context must still be this one.
    time.sleep(random.uniform(0, 0.02))
    observation["same_after_pause"] = (
        get_request_context() is ctx and ctx.request_id == observation["request_id"]
    )
    store().rpush(OBSERVATIONS, json.dumps(observation))
    return ctx


@celery_app.task(bind=True)
def observe(self: Any, label: str, via: str, hop: int = 0, route: list[str] | None = None) -> str:
    """Record, then send the next hop (a task that sends a task) to ``route[0]``."""
    ctx = _record(self, label, via, hop)
    if route:
        observe.apply_async((label, via, hop + 1, route[1:]), queue=route[0])
    return ctx.request_id


@celery_app.task(bind=True)
def gather(self: Any, results: list[str], label: str) -> list[str]:
    """A chord's body."""
    _record(self, label, "chord", 1, results=results)
    return results


@celery_app.task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self: Any, label: str) -> int:
    """Retries once: both runs record."""
    _record(self, label, "retry", self.request.retries)
    if self.request.retries == 0:
        raise self.retry()
    return int(self.request.retries)


@celery_app.task(bind=True)
def fail(self: Any, label: str) -> None:
    _record(self, label, "raise", 0)
    raise ValueError("this task fails on purpose")


@celery_app.task(bind=True)
def slow(self: Any, label: str, seconds: float) -> None:
    """Runs until its time limit stops it (or ``seconds`` pass, which the tests never let happen)."""
    _record(self, label, "time-limit", 0)
    # Work the time limit interrupts (one short sleep at a time), not a wait for a condition.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _record(self, label, "time-limit-not-enforced", 1)


@celery_app.task(bind=True)
def block(self: Any, label: str, seconds: float) -> None:
    """Records, then waits (at most ``seconds``) for the test to kill this process."""
    _record(self, label, "blocked", 0)
    store().blpop([f"reqctx-test:release:{label}"], timeout=seconds)


# -- worker processes: probes and the shutdown report ---------------------------------------

_in_worker = False
_report: dict[str, Any] = {"bound_before_task": 0, "bound_after_task": 0, "tasks": 0}
_open: dict[int, str] = {}
_destroyed: list[str] = []


def _on_init(eid: int, kind: str, trigger: int, resource: object) -> None:
    if kind == "task" and isinstance(resource, RequestContext):
        _open[eid] = resource.request_id


def _on_destroy(eid: int) -> None:
    request_id = _open.pop(eid, None)
    if request_id is not None:
        _destroyed.append(request_id)


_task_hook = create_hook(init=_on_init, destroy=_on_destroy)


@signals.task_prerun.connect
def _probe_before(**_ignored: Any) -> None:
    """Connected before init_celery's receiver: sees the unit as the previous task left it."""
    if _in_worker:
        _report["tasks"] += 1
        if get_request_context() is not None:
            _report["bound_before_task"] += 1


init_celery(celery_app)


@signals.task_postrun.connect
def _probe_after(**_ignored: Any) -> None:
    """Connected after init_celery's receiver: the task's context must be gone already."""
    if _in_worker and get_request_context() is not None:
        _report["bound_after_task"] += 1


@signals.worker_init.connect
def _start_worker(**_ignored: Any) -> None:
    global _in_worker
    _in_worker = True
    _task_hook.enable()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _filter_log_records(logger: logging.Logger | None = None, **_ignored: Any) -> None:
    if logger is not None:
        for handler in logger.handlers:
            handler.addFilter(RequestIdFilter())


@signals.worker_ready.connect
def _ready(**_ignored: Any) -> None:
    _write("ready", {"pid": os.getpid()})


@signals.worker_process_shutdown.connect
def _child_report(**_ignored: Any) -> None:
    _write_report("child")


@signals.worker_shutdown.connect
def _main_report(**_ignored: Any) -> None:
    _write_report("main")


def _write_report(role: str) -> None:
    _write(
        f"report-{os.getpid()}",
        {
            "role": role,
            "pid": os.getpid(),
            "bound": get_request_context() is not None,
            "stats": stats(),
            "open": sorted(_open.values()),
            "destroyed": _destroyed,
            "patched": flask_reqctx.patches.installed(),
            **_report,
        },
    )


def _write(name: str, content: dict[str, Any]) -> None:
    directory = os.environ.get("REQCTX_TEST_REPORTS")
    pool = os.environ.get("REQCTX_TEST_POOL")
    if directory and pool:
        path = os.path.join(directory, f"{pool}-{name}.json")
        with open(path + ".tmp", "w") as out:
            json.dump(content, out)
        os.replace(path + ".tmp", path)
