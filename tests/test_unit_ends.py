"""Every unit that is started is ended: greenlets that never run, contexts never closed.

A greenlet created in a context but never started (dropped, refused by a full pool,
abandoned by a Timeout while waiting for a slot) ends its unit when it is freed; a
context made by ``create_request_context`` and never closed ends with its unit.
"""

from __future__ import annotations

import asyncio
import gc
import threading

import gevent
import gevent.pool
import pytest

from flask_reqctx import create_hook, create_request_context, get_request_context, stats


@pytest.fixture
def destroyed():
    ends: list[int] = []
    hook = create_hook(destroy=ends.append).enable()
    yield ends
    hook.disable()


def _noop() -> None:
    pass


def test_a_greenlet_never_started_ends_its_unit_when_dropped(destroyed):
    with create_request_context(request_id="never-started"):
        g = gevent.Greenlet(_noop)
        assert stats()["live"] == 2  # the context's own unit and the greenlet's
    assert stats()["live"] == 1
    del g
    gc.collect()
    assert stats()["live"] == 0 and len(destroyed) == 2


def test_a_greenlet_killed_before_it_started_ends_its_unit():
    with create_request_context(request_id="killed-early"):
        g = gevent.spawn(_noop)
        g.kill()
    assert g.dead
    del g
    assert stats()["live"] == 0


def test_pool_full_refusal_ends_the_refused_greenlets_unit():
    pool = gevent.pool.Pool(1)
    busy = pool.spawn(gevent.sleep, 0.01)
    with create_request_context(request_id="shed"):
        refused = gevent.Greenlet(_noop)
        with pytest.raises(gevent.pool.PoolFull):
            pool.start(refused, blocking=False)
    del refused
    busy.join()
    assert stats()["live"] == 0


def test_timeout_while_waiting_for_a_pool_slot_ends_the_waiting_unit():
    pool = gevent.pool.Pool(1)
    busy = pool.spawn(gevent.sleep, 0.05)
    with create_request_context(request_id="waited"):
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.001):
                pool.spawn(_noop)
    busy.join()
    gc.collect()
    assert stats()["live"] == 0


def test_an_unclosed_context_ends_with_its_greenlet():
    def job() -> str:
        return create_request_context(request_id="left-open").request_id

    g = gevent.spawn(job)
    g.join()
    assert g.value == "left-open"
    assert stats()["live"] == 0  # the greenlet object is still referenced here


def test_an_unclosed_context_ends_with_its_thread():
    thread = threading.Thread(target=lambda: create_request_context(request_id="thread-left-open"))
    thread.start()
    thread.join()
    gc.collect()
    assert stats()["live"] == 0


def test_an_unclosed_context_ends_with_its_asyncio_task():
    async def task() -> None:
        create_request_context(request_id="task-left-open")

    async def main() -> None:
        await asyncio.create_task(task())

    asyncio.run(main())
    gc.collect()
    assert stats()["live"] == 0


def test_nested_unclosed_contexts_in_a_greenlet_all_end():
    def job() -> None:
        outer = create_request_context(request_id="outer")
        gevent.spawn(lambda: None).join()
        assert get_request_context() is outer

    with create_request_context(request_id="parent"):
        gevent.spawn(job).join()
    assert stats()["live"] == 0


@pytest.mark.parametrize("hooked", [False, True], ids=["pending units", "hooked"])
def test_greenlets_that_never_run_are_counted_ended_once(hooked):
    """Without a hook a greenlet's unit is pending (no record of its own): the greenlet
    itself counts its end, once, however it fails to run."""
    hook = create_hook(destroy=lambda eid: None).enable() if hooked else None
    try:
        before = stats()
        with create_request_context(request_id="never-run"):
            dropped = gevent.Greenlet(_noop)
            killed = gevent.spawn(_noop)
            killed.kill()
            killed.kill()  # a second kill ends nothing more
            unstarted = [gevent.spawn(_noop) for _ in range(3)]
            gevent.killall(unstarted)  # gevent throws into them: no kill() of ours runs
            suspended = gevent.spawn(gevent.sleep, 30)
            gevent.sleep(0)  # it runs up to its sleep
            assert stats()["live"] == 1 + 1 + 3 + 1  # the context, dropped, the killed-all, suspended
        del dropped, unstarted
        suspended.kill()
        del killed, suspended
        gc.collect()
        after = stats()
        assert after["live"] == 0
        assert after["created"] - before["created"] == after["destroyed"] - before["destroyed"] == 7
    finally:
        if hook is not None:
            hook.disable()
