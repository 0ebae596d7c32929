"""Every gevent pool and thread pool API runs its jobs in the submitter's context.

gevent's pool module spawns with its own reference to the greenlet class (``map``,
``imap``, ``apply_async`` on a full pool ...), and gevent's native thread pool runs jobs
in real threads that are reused: each API is checked on its own, with a context and
without one (a job submitted outside any context sees none, so nothing stays behind in a
reused worker).
"""

from __future__ import annotations

import gevent
import gevent.event
import gevent.pool
import gevent.threadpool
import pytest

from flask_reqctx import create_request_context, exit_context, get_request_context, stats


def _seen(_item: object = None) -> str | None:
    gevent.sleep(0)  # a switch: the job's context survives it
    ctx = get_request_context()
    return ctx.request_id if ctx is not None else None


def _pool_runs(pool: gevent.pool.Group) -> dict[str, object]:
    """What each API's jobs saw, called from the current unit."""
    items = range(4)
    runs: dict[str, object] = {
        "spawn": pool.spawn(_seen).get(),
        "apply": pool.apply(_seen),
        "apply_async": pool.apply_async(_seen).get(),
        "map": pool.map(_seen, items),
        "imap": list(pool.imap(_seen, items)),
        "imap_unordered": list(pool.imap_unordered(_seen, items)),
        "map_async": pool.map_async(_seen, items).get(),
    }
    callback_seen: list[str | None] = []
    called = gevent.event.Event()

    def callback(_result: object) -> None:
        callback_seen.append(_seen())
        called.set()

    pool.apply_async(_seen, callback=callback)
    assert called.wait(5)
    pool.join()
    runs["apply_async callback"] = callback_seen
    return runs


def _expect(request_id: str | None) -> dict[str, object]:
    return {
        "spawn": request_id,
        "apply": request_id,
        "apply_async": request_id,
        "map": [request_id] * 4,
        "imap": [request_id] * 4,
        "imap_unordered": [request_id] * 4,
        "map_async": [request_id] * 4,
        "apply_async callback": [request_id],
    }


@pytest.mark.parametrize(
    "make_pool", [gevent.pool.Group, lambda: gevent.pool.Pool(2), lambda: gevent.pool.Pool(1)]
)
def test_every_gevent_pool_api_carries_the_context(make_pool):
    pool = make_pool()
    with create_request_context(request_id="pool-user"):
        assert _pool_runs(pool) == _expect("pool-user")
    assert _pool_runs(pool) == _expect(None)


def test_apply_async_on_a_full_pool_carries_the_context():
    pool = gevent.pool.Pool(1)
    blocker = pool.spawn(gevent.sleep, 0.05)
    with create_request_context(request_id="full-pool"):
        assert pool.full()
        job = pool.apply_async(_seen)  # gevent spawns it outside the pool, with its own class
        assert job.get() == "full-pool"
    blocker.join()


def test_concurrent_requests_on_one_pool_each_see_their_own():
    pool = gevent.pool.Pool(5)

    def request(n: int) -> list[str | None]:
        with create_request_context(request_id=f"req-{n}"):
            return pool.map(_seen, range(6)) + list(pool.imap_unordered(_seen, range(6)))

    jobs = [gevent.spawn(request, n) for n in range(20)]
    gevent.joinall(jobs, raise_error=True)
    for n, job in enumerate(jobs):
        assert job.value == [f"req-{n}"] * 12


@pytest.mark.parametrize("api", ["spawn", "apply", "apply_async", "map", "imap_unordered"])
def test_gevent_native_threadpool_runs_jobs_in_the_submitters_context(api):
    pool = gevent.get_hub().threadpool

    def run() -> object:
        if api == "spawn":
            return pool.spawn(_thread_seen).get()
        if api == "apply":
            return pool.apply(_thread_seen)
        if api == "apply_async":
            return pool.apply_async(_thread_seen).get()
        if api == "map":
            return pool.map(_thread_seen, range(3))
        return sorted(pool.imap_unordered(_thread_seen, range(3)), key=str)

    with create_request_context(request_id=f"threadpool-{api}"):
        seen = run()
    expected_many = [f"threadpool-{api}"] * 3
    assert seen in (f"threadpool-{api}", expected_many)
    # The same (reused) threads hold nothing afterwards: a job from outside sees no context.
    assert run() in (None, [None] * 3)


def _thread_seen(_item: object = None) -> str | None:
    ctx = get_request_context()
    return ctx.request_id if ctx is not None else None


def test_gevent_threadpool_executor_carries_the_context():
    with gevent.threadpool.ThreadPoolExecutor(2) as executor:
        with create_request_context(request_id="gevent-executor"):
            futures = [executor.submit(_thread_seen) for _ in range(4)]
            assert [f.result() for f in futures] == ["gevent-executor"] * 4
        assert executor.submit(_thread_seen).result() is None


def test_exit_context_starts_work_that_belongs_to_no_request():
    """Node's AsyncLocalStorage.exit: a long-lived worker started lazily from a request."""
    inbox: list[str | None] = []

    def worker() -> None:
        inbox.append(_seen())

    with create_request_context(request_id="first-request"):
        detached = exit_context(gevent.spawn, worker)
        attached = gevent.spawn(worker)
        assert get_request_context().request_id == "first-request"  # unchanged around the call
    gevent.joinall([detached, attached])
    assert sorted(inbox, key=str) == [None, "first-request"]
    assert exit_context(lambda a, b=0: a + b, 1, b=2) == 3


def test_pool_jobs_leave_nothing_live():
    before = stats()["created"]
    with create_request_context(request_id="count"):
        _pool_runs(gevent.pool.Pool(3))
    after = stats()
    assert after["created"] > before + 20  # each job was a unit of its own
    assert after["live"] == 0
