"""asyncio tasks on every supported Python: eager tasks (3.12+) and ``create_task``'s own keywords.

An eager task runs its first step inside ``create_task``; its init must still come before
any of its code, in creation order, and its destroy exactly once, also when it finishes
without ever suspending.  The patched ``create_task`` must take what the running Python's
takes and hand it on unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from flask_reqctx import (
    RequestContext,
    create_hook,
    create_request_context,
    execution_id,
    get_request_context,
    stats,
    trigger_id,
)

needs_eager_tasks = pytest.mark.skipif(
    not hasattr(asyncio, "eager_task_factory"), reason="eager task factories exist from Python 3.12"
)

Event = tuple[Any, ...]


class Timeline:
    """Init/destroy hooks and the tasks' own steps, in the order they happened."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.hook = create_hook(init=self.init, destroy=self.destroy)

    def init(self, eid: int, kind: str, trigger: int, resource: Any) -> None:
        if kind == "task":
            self.events.append(("init", eid, trigger))

    def destroy(self, eid: int) -> None:
        self.events.append(("destroy", eid))

    def ran(self, name: str) -> None:
        self.events.append(("ran", name, execution_id(), trigger_id(), get_request_context()))

    def index(self, event: Event) -> int:
        return self.events.index(event)

    def step(self, name: str) -> Event:
        (event,) = [e for e in self.events if e[:2] == ("ran", name)]
        return event


def _run_in_context(main: Callable[[Timeline], Coroutine[Any, Any, None]]) -> tuple[Timeline, RequestContext]:
    timeline = Timeline()
    timeline.hook.enable()
    try:
        with create_request_context(request_id="eager-tasks") as context:
            asyncio.run(main(timeline))
    finally:
        timeline.hook.disable()
    return timeline, context


def _check_task(timeline: Timeline, name: str, trigger: int, context: RequestContext) -> int:
    """The task that ran step ``name`` was created by ``trigger`` and saw ``context``; its init
    came before that step and its one destroy after.  Returns its execution id."""
    step = timeline.step(name)
    _, _, eid, seen_trigger, seen = step
    assert seen_trigger == trigger and seen is context
    assert timeline.index(("init", eid, trigger)) < timeline.index(step)
    assert timeline.events.count(("destroy", eid)) == 1
    assert timeline.index(step) < timeline.index(("destroy", eid))
    return eid


@needs_eager_tasks
def test_eager_tasks_get_init_before_their_code_in_creation_order() -> None:
    async def grandchild(timeline: Timeline) -> None:
        timeline.ran("grandchild")

    async def child(timeline: Timeline) -> None:
        timeline.ran("child")  # runs inside create_task, before it returns
        await asyncio.get_running_loop().create_task(grandchild(timeline))
        timeline.ran("child after grandchild")

    async def main(timeline: Timeline) -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        timeline.ran("main")
        task = loop.create_task(child(timeline))
        timeline.ran("main after create_task")
        await task

    timeline, context = _run_in_context(main)
    main_eid = timeline.step("main")[2]
    child_eid = _check_task(timeline, "child", main_eid, context)
    grandchild_eid = _check_task(timeline, "grandchild", child_eid, context)
    # The child ran eagerly (before create_task returned) ...
    assert timeline.index(timeline.step("child")) < timeline.index(timeline.step("main after create_task"))
    # ... and the trigger's init precedes the child's.
    assert timeline.index(("init", child_eid, main_eid)) < timeline.index(("init", grandchild_eid, child_eid))
    assert stats()["live"] == 0


@needs_eager_tasks
def test_an_eager_task_that_never_suspends_is_destroyed_once() -> None:
    async def at_once(timeline: Timeline) -> str:
        timeline.ran("at once")
        return "done"

    async def main(timeline: Timeline) -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        timeline.ran("main")
        task = loop.create_task(at_once(timeline))
        assert task.done()  # finished inside create_task, never suspended
        assert await task == "done"
        await asyncio.sleep(0)  # the done callbacks run on the loop's next turn

    timeline, context = _run_in_context(main)
    _check_task(timeline, "at once", timeline.step("main")[2], context)
    assert stats()["live"] == 0


@needs_eager_tasks
def test_eager_tasks_in_a_given_context_and_a_custom_eager_factory() -> None:
    """``context=`` and ``create_eager_task_factory``: the same order, and the given context is the task's."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")

    async def child(timeline: Timeline) -> None:
        timeline.ran(f"child {marker.get()}")

    async def main(timeline: Timeline) -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.create_eager_task_factory(asyncio.Task))
        timeline.ran("main")
        given = contextvars.copy_context()
        given.run(marker.set, "given")
        await loop.create_task(child(timeline), context=given)

    timeline, context = _run_in_context(main)
    _check_task(timeline, "child given", timeline.step("main")[2], context)
    assert stats()["live"] == 0


# -- create_task's keywords ----------------------------------------------------------------


def _original_create_task() -> Callable[..., Any]:
    patched = asyncio.BaseEventLoop.create_task
    original: Callable[..., Any] = inspect.unwrap(patched)
    assert original is not patched, "create_task is not patched"
    return original


def test_create_task_has_the_running_pythons_signature() -> None:
    original = _original_create_task()
    assert inspect.signature(asyncio.BaseEventLoop.create_task) == inspect.signature(original)
    assert asyncio.BaseEventLoop.create_task.__wrapped__ is original  # type: ignore[attr-defined]


def _keywords(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword parameters ``fn`` names, and whether it takes any other (``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    named = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self", "coro"}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


async def _name_and_marker() -> tuple[str, str]:
    task = asyncio.current_task()
    assert task is not None
    return task.get_name(), _marker.get()


_marker: contextvars.ContextVar[str] = contextvars.ContextVar("_marker", default="unset")


@pytest.mark.parametrize("in_context", [True, False], ids=["in-a-context", "outside"])
def test_create_task_keywords_reach_the_original(in_context: bool) -> None:
    """Every keyword the running Python's ``create_task`` takes does what it does there."""
    named, takes_any = _keywords(_original_create_task())
    checked = {"name", "context", "eager_start"}
    assert named <= checked, f"create_task takes {named - checked} too on {sys.version}: check it here"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        given = contextvars.copy_context()
        given.run(_marker.set, "given")
        kwargs: dict[str, Any] = {"name": "named-task", "context": given}
        if "eager_start" in named:
            kwargs["eager_start"] = True
        task = loop.create_task(_name_and_marker(), **kwargs)
        if "eager_start" in named:
            assert task.done()  # it ran inside create_task
        assert await task == ("named-task", "given")
        if takes_any:  # 3.13.3+: keywords go on to the task factory
            seen: dict[str, Any] = {}

            def factory(loop: asyncio.AbstractEventLoop, coro: Any, **extra: Any) -> asyncio.Task[Any]:
                seen.update(extra)
                extra.pop("reqctx_test", None)
                return asyncio.Task(coro, loop=loop, **extra)

            loop.set_task_factory(factory)
            _, marker = await loop.create_task(_name_and_marker(), reqctx_test=42)
            assert marker == "unset"
            assert seen.get("reqctx_test") == 42
            loop.set_task_factory(None)

    if in_context:
        with create_request_context(request_id="keywords"):
            asyncio.run(main())
    else:
        asyncio.run(main())
    assert stats()["live"] == 0


def test_create_task_rejects_what_the_original_rejects() -> None:
    """A keyword the running Python does not take fails as it does there, and leaks no unit."""
    _, takes_any = _keywords(_original_create_task())
    if takes_any:
        pytest.skip("this Python's create_task takes any keyword (3.13.3+)")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        coro = _name_and_marker()
        try:
            with pytest.raises(TypeError, match="no_such_keyword"):
                loop.create_task(coro, no_such_keyword=1)  # noqa: RUF006 (it raises)
        finally:
            coro.close()

    with create_request_context(request_id="rejected"):
        asyncio.run(main())
    assert stats()["live"] == 0


# -- uvloop: an event loop that is not a BaseEventLoop ------------------------------------


def test_uvloop_tasks_see_the_context_but_get_no_unit_of_their_own() -> None:
    """As the README says: uvloop's ``create_task`` is its own, which is not patched."""
    assert not issubclass(uvloop.Loop, asyncio.BaseEventLoop)

    async def child(timeline: Timeline) -> None:
        timeline.ran("child")

    async def main(timeline: Timeline) -> None:
        timeline.ran("main")
        await asyncio.get_running_loop().create_task(child(timeline))

    def run_on_uvloop(coro: Coroutine[Any, Any, None]) -> None:
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(coro)
        finally:
            loop.close()

    timeline = Timeline()
    timeline.hook.enable()
    try:
        with create_request_context(request_id="uvloop") as context:
            run_on_uvloop(main(timeline))
    finally:
        timeline.hook.disable()
    _, _, main_eid, main_trigger, _ = timeline.step("main")
    assert timeline.step("child") == ("ran", "child", main_eid, main_trigger, context)
    assert [e for e in timeline.events if e[0] == "init"] == []
    assert stats()["live"] == 0
