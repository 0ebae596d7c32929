"""The whole ``contextvars`` context follows the work, Flask's own request/app context does not.

Every child kind the extension tracks starts from a copy of its creator's whole context as it
was at creation (a user's own ``ContextVar`` here stands for OpenTelemetry's span, structlog's
and Sentry's variables), less Flask's request and app variables: ``flask.request`` raises
Flask's own error there and the child keeps no reference to the request or ``g``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar, copy_context
from typing import Any

import flask
import gevent
import gevent.event
import gevent.pool
import pytest

from flask_reqctx import bind, exit_context, get_request_context
from flask_reqctx.context import FLASK_VARIABLES

USER: ContextVar[str] = ContextVar("test_context_travels.user", default="unset")


def probe() -> dict[str, Any]:
    """What a unit sees of the context it runs in."""
    try:
        flask.request.path  # noqa: B018 - the read is the probe
        request_error = None
    except RuntimeError as exc:
        request_error = str(exc)
    return {
        "user": USER.get(),
        "ctx": get_request_context(),
        "has_request": flask.has_request_context(),
        "has_app": flask.has_app_context(),
        "request_error": request_error,
        "flask_vars": [var for var in copy_context() if var in FLASK_VARIABLES],
    }


def in_thread(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    return box[0]


def via_apply_async_callback(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []
    done = gevent.event.Event()  # the callback runs later, in a greenlet of the hub
    gevent.pool.Pool(2).apply_async(int, callback=lambda _result: (box.append(fn()), done.set()))
    assert done.wait(5)
    return box[0]


def via_link(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []
    done = gevent.event.Event()
    child = gevent.spawn(int)
    child.link(lambda _g: (box.append(fn()), done.set()))
    assert done.wait(5)
    return box[0]


def via_executor(fn: Callable[[], Any]) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


CHILD_KINDS: dict[str, Callable[[Callable[[], Any]], Any]] = {
    "gevent.spawn": lambda fn: gevent.spawn(fn).get(),
    "Greenlet.start": lambda fn: _started(gevent.Greenlet(fn)).get(),
    "spawn_later": lambda fn: gevent.spawn_later(0, fn).get(),
    "Pool.spawn": lambda fn: gevent.pool.Pool(2).spawn(fn).get(),
    "Pool.map": lambda fn: gevent.pool.Pool(2).map(lambda _: fn(), [0])[0],
    "imap_unordered": lambda fn: next(iter(gevent.pool.Pool(2).imap_unordered(lambda _: fn(), [0]))),
    "apply_async callback": via_apply_async_callback,
    "link": via_link,
    "gevent thread pool": lambda fn: gevent.get_hub().threadpool.spawn(fn).get(),
    "threading.Thread": in_thread,
    "ThreadPoolExecutor": via_executor,
}


def _started(greenlet: gevent.Greenlet) -> gevent.Greenlet:
    greenlet.start()
    return greenlet


def in_view(app: flask.Flask, client: Any, body: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``body()`` as a view of ``app``; returns (what it returned, the request's context)."""
    out: dict[str, Any] = {}

    def view() -> str:
        out["ctx"] = get_request_context()
        out["result"] = body()
        return "ok"

    endpoint = f"view{len(app.view_functions)}"
    app.add_url_rule(f"/{endpoint}", endpoint, view)
    assert client.get(f"/{endpoint}").status_code == 200
    return out["result"], out["ctx"]


def assert_carried_without_flask(seen: dict[str, Any], ctx: Any, user: str) -> None:
    assert seen["user"] == user
    assert seen["ctx"] is ctx and ctx is not None
    assert seen["has_request"] is False and seen["has_app"] is False
    assert seen["request_error"] is not None and "Working outside of request context" in seen["request_error"]
    assert seen["flask_vars"] == []


@pytest.mark.parametrize("kind", list(CHILD_KINDS))
def test_every_child_kind_starts_from_the_whole_context_less_flasks(app, client, kind):
    def body() -> Any:
        USER.set("the view's")
        return CHILD_KINDS[kind](probe)

    seen, ctx = in_view(app, client, body)
    assert_carried_without_flask(seen, ctx, "the view's")


def test_an_asyncio_task_keeps_asyncios_rule_it_copies_everything(app, client):
    async def main() -> dict[str, Any]:
        return await asyncio.create_task(_async_probe())

    def body() -> Any:
        USER.set("the view's")
        return asyncio.run(main())

    seen, ctx = in_view(app, client, body)
    assert seen["user"] == "the view's" and seen["ctx"] is ctx
    assert seen["has_request"] is True  # Flask's async views rely on it


async def _async_probe() -> dict[str, Any]:
    await asyncio.sleep(0)
    return probe()


def test_bind_carries_the_context_at_bind_time(app, client):
    def body() -> Any:
        USER.set("at bind")
        bound = bind(probe)
        USER.set("after bind")
        return bound

    bound, ctx = in_view(app, client, body)
    assert_carried_without_flask(bound(), ctx, "at bind")  # called after the request ended

    def sets() -> str:
        USER.set("inside the bound call")
        return USER.get()

    USER.set("caller's")
    assert bind(sets)() == "inside the bound call"
    assert USER.get() == "caller's"  # nothing leaks back to the caller


@pytest.mark.parametrize("kind", ["greenlet", "thread"])
def test_a_value_set_after_creation_is_not_seen(app, client, kind):
    def body() -> Any:
        USER.set("at creation")
        release = threading.Event() if kind == "thread" else gevent.event.Event()
        box: list[Any] = []
        if kind == "greenlet":
            child = gevent.Greenlet(probe)
            USER.set("set after the child was created")
            child.start()
            return child.get()
        thread = threading.Thread(target=lambda: (release.wait(5), box.append(probe())))
        thread.start()
        USER.set("set after the child was started")
        release.set()
        thread.join()
        return box[0]

    seen, ctx = in_view(app, client, body)
    assert_carried_without_flask(seen, ctx, "at creation")


def test_a_value_set_in_a_child_reaches_neither_its_creator_nor_its_siblings(app, client):
    def child(name: str) -> str:
        before = USER.get()
        USER.set(name)
        return before

    def body() -> Any:
        USER.set("the view's")
        first = gevent.spawn(child, "first")
        first.join()
        second = gevent.spawn(child, "second")
        thread_saw = in_thread(lambda: child("thread"))
        return first.value, second.get(), thread_saw, USER.get()

    (first, second, thread_saw, view_after), _ = in_view(app, client, body)
    assert first == second == thread_saw == view_after == "the view's"


def test_grandchildren_start_from_their_parents_context(app, client):
    def child() -> Any:
        USER.set("the child's")
        return gevent.spawn(lambda: in_thread(probe)).get()

    def body() -> Any:
        USER.set("the view's")
        return gevent.spawn(child).get()

    seen, ctx = in_view(app, client, body)
    assert_carried_without_flask(seen, ctx, "the child's")


def test_copy_current_request_context_still_works_in_a_child(app, client):
    def body() -> Any:
        @flask.copy_current_request_context
        def with_request() -> str:
            return flask.request.path

        return gevent.spawn(with_request).get(), in_thread(with_request)

    (in_greenlet, in_a_thread), _ = in_view(app, client, body)
    assert in_greenlet.startswith("/view") and in_a_thread == in_greenlet


def test_a_late_child_keeps_neither_the_request_nor_g_alive(app, client):
    refs: dict[str, weakref.ref[Any]] = {}
    release = gevent.event.Event()

    def late() -> Any:
        release.wait(5)
        return probe()

    def body() -> Any:
        USER.set("the view's")
        refs["request"] = weakref.ref(flask.request._get_current_object())  # type: ignore[attr-defined]
        refs["g"] = weakref.ref(flask.g._get_current_object())  # type: ignore[attr-defined]
        return gevent.spawn(late)

    child, ctx = in_view(app, client, body)
    gc.collect()
    assert refs["request"]() is None and refs["g"]() is None
    release.set()
    assert_carried_without_flask(child.get(), ctx, "the view's")


def test_exit_context_runs_with_none_of_the_requests_state(app, client):
    def outside() -> Any:
        return probe(), gevent.spawn(probe).get(), in_thread(probe)

    def body() -> Any:
        USER.set("the view's")
        return exit_context(outside)

    seen_all, _ = in_view(app, client, body)
    for seen in seen_all:
        assert seen["user"] == "unset" and seen["ctx"] is None
        assert seen["has_request"] is False and seen["flask_vars"] == []


def test_outside_a_request_the_runtimes_own_behaviour_stands():
    token = USER.set("outside any request")
    try:
        assert gevent.spawn(USER.get).get() == "unset"  # gevent: a new greenlet starts empty
        assert in_thread(USER.get) == "unset"  # threading: a new thread starts empty
    finally:
        USER.reset(token)


@pytest.mark.parametrize("kind", ["ThreadPoolExecutor", "gevent thread pool"])
def test_pooled_workers_hold_nothing_between_jobs(app, client, kind):
    def job() -> tuple[str, Any]:
        seen = USER.get(), get_request_context()
        USER.set("set by a job")
        return seen

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        submit = executor.submit if kind == "ThreadPoolExecutor" else gevent.get_hub().threadpool.spawn

        def body() -> Any:
            USER.set("the view's")
            return submit(job).result() if kind == "ThreadPoolExecutor" else submit(job).get()

        (user, seen_ctx), ctx = in_view(app, client, body)
        assert user == "the view's" and seen_ctx is ctx
        later = submit(job)
        user_later, ctx_later = later.result() if kind == "ThreadPoolExecutor" else later.get()
        assert user_later == "unset" and ctx_later is None


BOX: ContextVar[list[str]] = ContextVar("test_context_travels.box")


def test_each_sibling_gets_the_very_object_current_at_its_creation(app, client):
    """A fresh ``[]`` per child: equal values, distinct objects (a template kept between
    siblings must not hand the first child's object to the next)."""

    def body() -> Any:
        boxes, children = [], []
        for _ in range(3):
            box: list[str] = []
            BOX.set(box)
            boxes.append(box)
            children.append(gevent.Greenlet(BOX.get))
        seen = [in_thread(BOX.get)]  # a thread of the last context, between greenlets
        for child in children:
            child.start()
        return boxes, seen + [child.get() for child in children]

    (boxes, seen), _ = in_view(app, client, body)
    assert [id(box) for box in seen] == [id(boxes[-1])] + [id(box) for box in boxes]
