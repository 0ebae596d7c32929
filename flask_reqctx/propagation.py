"""Carry the current context into the units a request creates, at the moment it creates them.

Nothing in the runtime does this for us: a new greenlet or thread starts with an empty
``contextvars`` context, executor jobs run in whatever context their pooled worker has,
and gevent's ``spawning_greenlet`` is wrong for reused workers.  So each creation point
is wrapped once per process: the child gets its own unit (init fires there, with the
creator as trigger) and a fresh ``Context`` holding the creator's ``RequestContext``; the
child's end (or cancellation) destroys the unit.  Only our two variables are carried;
Flask's own request context is deliberately not (``flask.request`` in a child that
outlives its request would read a torn-down request).

Patched when :func:`install` runs: at ``import flask_reqctx``, unless the environment
variable ``FLASK_REQCTX_PATCH`` is ``0`` (then call it yourself, or rely on :func:`bind`):

* gevent: ``gevent.Greenlet``/``gevent.spawn``/``gevent.spawn_later`` and the greenlet
  class of ``gevent.pool.Group``/``Pool`` become a subclass that captures at ``__init__``
  (``Greenlet.__init__`` itself is Cython and cannot be patched).  Code that bound
  ``from gevent import spawn`` *before* the install keeps gevent's own class: import
  ``flask_reqctx`` first, or use :func:`flask_reqctx.bind`.
* ``threading.Thread.start`` (captures) and ``Thread._bootstrap_inner`` (runs in the child).
* ``concurrent.futures.ThreadPoolExecutor.submit``: each job runs in its submitter's
  context; the pooled worker itself holds none between jobs.
* ``asyncio.BaseEventLoop.create_task``: tasks copy contextvars already; this gives each
  task its own unit, so ``execution_id()`` and init/destroy see it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from contextvars import Context, copy_context
from typing import Any

from .context import current_unit
from .registry import Unit, bind_unit, open_child, open_unit

__all__ = ["install", "installed"]

_installed = False
_lock = threading.Lock()


def installed() -> bool:
    return _installed


def install() -> None:
    """Wrap the creation points (idempotent, once per process)."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        _install_threads()
        _install_executor()
        _install_asyncio()
        _install_gevent()
        _installed = True


# -- threads ---------------------------------------------------------------------------


def _install_threads() -> None:
    Thread = threading.Thread
    original_start = Thread.start
    original_bootstrap = Thread._bootstrap_inner  # type: ignore[attr-defined]

    @functools.wraps(original_start)
    def start(self: threading.Thread) -> None:
        child = open_child("thread", self)
        if child is None:
            return original_start(self)
        self._reqctx_child = child  # type: ignore[attr-defined]
        try:
            original_start(self)
        except BaseException:
            child[0].end()
            raise

    @functools.wraps(original_bootstrap)
    def _bootstrap_inner(self: threading.Thread) -> None:
        child: tuple[Unit, Context] | None = self.__dict__.pop("_reqctx_child", None)
        if child is None:
            return original_bootstrap(self)
        unit, child_vars = child
        try:
            child_vars.run(original_bootstrap, self)
        finally:
            unit.end()

    Thread.start = start  # type: ignore[method-assign]
    Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]


# -- concurrent.futures ----------------------------------------------------------------


def _install_executor() -> None:
    Executor = concurrent.futures.ThreadPoolExecutor
    original_submit = Executor.submit

    @functools.wraps(original_submit)
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        child = open_child("thread", fn)
        if child is None:
            return original_submit(self, fn, *args, **kwargs)
        unit, child_vars = child
        try:
            # Submitted from a blank context: a worker thread this submit starts must not
            # inherit the context (it serves later jobs of other requests).
            future = Context().run(original_submit, self, child_vars.run, fn, *args, **kwargs)
        except BaseException:
            unit.end()
            raise
        future.add_done_callback(unit.end)  # also on cancellation, and on shutdown
        return future

    Executor.submit = submit  # type: ignore[method-assign]


# -- asyncio ---------------------------------------------------------------------------


def _install_asyncio() -> None:
    Loop = asyncio.BaseEventLoop
    original_create_task = Loop.create_task

    @functools.wraps(original_create_task)
    def create_task(self: Any, coro: Any, *, name: Any = None, context: Context | None = None) -> Any:
        parent = current_unit.get() if context is None else context.get(current_unit)
        if parent is None or parent.context is None:
            return original_create_task(self, coro, name=name, context=context)
        unit = open_unit("task", parent.context, coro, parent.eid)
        # asyncio's own semantics (the task copies its creator's variables), plus its unit.
        task_vars = context if context is not None else copy_context()
        try:
            task_vars.run(bind_unit, unit)
            task = original_create_task(self, coro, name=name, context=task_vars)
        except BaseException:
            unit.end()
            raise
        task.add_done_callback(unit.end)
        return task

    Loop.create_task = create_task  # type: ignore[method-assign]


# -- gevent ----------------------------------------------------------------------------


def _install_gevent() -> None:
    try:
        import gevent
        import gevent.pool
    except ImportError:
        return

    original = gevent.Greenlet

    class _SameAsOriginal(type):
        """``isinstance(g, gevent.Greenlet)`` stays true for greenlets that gevent itself
        (or code holding the original class) creates: the name now points at a subclass."""

        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, original)

        def __subclasscheck__(cls, subclass: type) -> bool:
            return issubclass(subclass, original)

    class Greenlet(original, metaclass=_SameAsOriginal):  # type: ignore[misc, valid-type]
        """gevent's Greenlet, plus: inherit the creator's context at creation."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            child = open_child("greenlet", self)
            if child is not None:
                unit, self.gr_context = child
                self.rawlink(unit.end)  # runs after death, also killed before start

    Greenlet.__module__ = original.__module__
    Greenlet.__qualname__ = Greenlet.__name__ = "Greenlet"
    gevent.Greenlet = Greenlet
    gevent.spawn = Greenlet.spawn
    gevent.spawn_later = Greenlet.spawn_later
    gevent.pool.Group.greenlet_class = Greenlet
