"""The runtimes the extension patches keep their own contracts while a context is bound.

Code inside a request runs with a context current; gevent's and asyncio's documented
behaviour must not change there (gevent's own suite asserts each of these: see
``tests/runtime_suites/``).  Each test runs with no context too, as the control.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import gevent.greenlet
import gevent.pool
import greenlet
import pytest

from flask_reqctx import RequestContext, create_request_context, get_request_context


@contextmanager
def _no_context() -> Iterator[None]:
    yield None


@pytest.fixture(params=["in a context", "no context"])
def current(request: pytest.FixtureRequest) -> Iterator[RequestContext | None]:
    """The state the code under test runs in: a bound context (inside a request), or none."""
    bound = request.param == "in a context"
    with create_request_context({"suite": "contracts"}) if bound else _no_context() as ctx:
        yield ctx


def _noop() -> None:
    """A greenlet body that returns at once."""


# -- gevent ----------------------------------------------------------------------------

#: The public ways a user creates a greenlet that nothing has linked yet.
NEW_GREENLETS: list[Any] = [
    pytest.param(lambda: gevent.Greenlet(_noop), id="Greenlet()"),
    pytest.param(lambda: gevent.spawn(_noop), id="spawn"),
    pytest.param(lambda: gevent.Greenlet.spawn(_noop), id="Greenlet.spawn"),
    pytest.param(lambda: gevent.spawn_later(0.001, _noop), id="spawn_later"),
]
#: ... and those whose greenlet a group has linked (to drop it from the group when it ends).
ALL_GREENLETS: list[Any] = [
    *NEW_GREENLETS,
    pytest.param(lambda: gevent.pool.Group().spawn(_noop), id="Group.spawn"),
    pytest.param(lambda: gevent.pool.Pool(2).spawn(_noop), id="Pool.spawn"),
]


def _end(g: gevent.Greenlet) -> None:
    """Kill a greenlet, started or not, and let its links run (they run in the hub, after
    its death), so that the unit the extension gave it is destroyed before the test ends."""
    g.kill()
    gevent.sleep(0)


@pytest.mark.parametrize("args", [(1,), (1, 1)], ids=["seconds only", "non-callable"])
def test_spawn_later_without_a_callable_raises_type_error(current: Any, args: tuple[Any, ...]) -> None:
    """gevent: ``spawn_later(seconds)`` with nothing to run is a TypeError at the call, not a
    greenlet scheduled to fail later."""
    try:
        g = gevent.spawn_later(*args)
    except TypeError:
        return
    _end(g)
    pytest.fail(f"gevent.spawn_later{args} returned {g!r} instead of raising TypeError")


@pytest.mark.parametrize("make", NEW_GREENLETS)
def test_a_new_greenlet_has_no_links(current: Any, make: Callable[[], gevent.Greenlet]) -> None:
    """gevent: ``has_links()`` is false until the user links something, and false again
    once the user has unlinked everything they linked."""
    g = make()
    try:
        assert not g.has_links()
        for link in (g.link, g.link_value, g.link_exception, g.rawlink):
            link(_noop)
            assert g.has_links()
            g.unlink(_noop)
            assert not g.has_links(), f"after {link.__name__} + unlink"
    finally:
        _end(g)


class _Waiter:
    """A user's link callback whose ``__eq__`` must never be asked: gevent finds a link by
    identity (its own suite replaces ``greenlet.switch`` with such an object)."""

    def __init__(self) -> None:
        self.compared: list[object] = []

    def __call__(self, *args: Any) -> Any:
        return None

    def __eq__(self, other: object) -> bool:
        self.compared.append(other)
        return NotImplemented

    __hash__ = object.__hash__


class _Switch(_Waiter):
    """A greenlet's ``switch`` replaced by a user object, as gevent's semaphore tests do."""

    def __init__(self, switch: Callable[..., Any]) -> None:
        super().__init__()
        self._switch = switch

    def __call__(self, *args: Any) -> Any:
        return self._switch(*args)


@pytest.mark.parametrize("make", NEW_GREENLETS)
def test_unlink_never_calls_a_user_objects_eq(current: Any, make: Callable[[], gevent.Greenlet]) -> None:
    g = make()
    waiter = _Waiter()
    try:
        g.rawlink(waiter)
        g.unlink(waiter)
        assert waiter.compared == []
        assert not g.has_links()
    finally:
        _end(g)


def test_interrupted_join_unlinks_its_waiter_without_eq(current: Any) -> None:
    """The shape of gevent's ``test_fair_or_hangs``: a greenlet whose ``switch`` is a user
    object joins another; the join ends early and unlinks that object from a live greenlet."""
    switches: list[_Switch] = []

    class SwitchReplaced(gevent.Greenlet):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.switch = _Switch(super().switch)
            switches.append(self.switch)

    target = gevent.spawn(gevent.sleep, 60)
    try:
        joiner = SwitchReplaced.spawn(target.join, 0.001)
        joiner.join()
        assert joiner.successful() and not target.dead
        assert not target.has_links()
    finally:
        _end(target)
    assert [s.compared for s in switches] == [[]]


@pytest.mark.parametrize("make", ALL_GREENLETS)
def test_type_checks_accept_every_greenlet(current: Any, make: Callable[[], gevent.Greenlet]) -> None:
    """As the README documents: ``isinstance``/``issubclass`` against ``gevent.Greenlet`` and
    gevent's own class hold for greenlets made either way."""
    made, own = make(), gevent.greenlet.Greenlet(_noop)
    try:
        for g in (made, own):
            assert isinstance(g, gevent.Greenlet)
            assert isinstance(g, gevent.greenlet.Greenlet)
            assert isinstance(g, greenlet.greenlet)
            assert issubclass(type(g), gevent.Greenlet)
            assert issubclass(type(g), gevent.greenlet.Greenlet)
        assert not isinstance(object(), gevent.Greenlet)
    finally:
        _end(made)
        _end(own)


def test_greenlets_still_see_the_context(current: RequestContext | None) -> None:
    """The contract the extension adds must survive the fixes to gevent's own."""
    g = gevent.spawn(get_request_context)
    assert g.get() is current
    assert not g.has_links()


# -- asyncio ---------------------------------------------------------------------------


async def _seen() -> RequestContext | None:
    return get_request_context()


async def _seen_by_a_child_task() -> RequestContext | None:
    return await asyncio.get_running_loop().create_task(_seen())


def _run_with_factory(factory: Any) -> RequestContext | None:
    loop = asyncio.new_event_loop()
    try:
        loop.set_task_factory(factory)
        return loop.run_until_complete(_seen_by_a_child_task())
    finally:
        loop.close()


def _old_style(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
    """A task factory written before Python 3.11 added ``context=``: two arguments."""
    return asyncio.Task(coro, loop=loop)


def _new_style(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """A factory that passes ``context=`` (3.11+) through to the task."""
    return asyncio.Task(coro, loop=loop, **kwargs)


@pytest.mark.parametrize("factory", [_old_style, _new_style], ids=["old-style", "new-style"])
def test_task_factories_work_and_tasks_see_the_context(current: RequestContext | None, factory: Any) -> None:
    """asyncio: a task copies its creator's variables, whatever factory the loop has."""
    assert _run_with_factory(factory) is current


@pytest.mark.parametrize("factory", [_old_style, _new_style], ids=["old-style", "new-style"])
def test_a_named_task_keeps_its_name_through_a_factory(current: RequestContext | None, factory: Any) -> None:
    """asyncio: ``create_task(coro, name=...)`` names the task the factory made."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        task = loop.create_task(_seen(), name="named")
        assert await task is current
        return task.get_name()

    assert asyncio.run(main()) == "named"


def test_explicit_task_context_is_honoured(current: RequestContext | None) -> None:
    """``create_task(coro, context=ctx)`` runs the task in ``ctx``, also through a factory."""
    import contextvars

    async def main() -> tuple[RequestContext | None, RequestContext | None]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(_new_style)
        explicit = contextvars.copy_context()
        return await loop.create_task(_seen(), context=explicit), explicit.run(get_request_context)

    seen, in_explicit = asyncio.run(main())
    assert seen is in_explicit is current
