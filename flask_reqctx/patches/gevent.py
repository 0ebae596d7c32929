"""gevent: greenlets, pools and gevent's native thread pool inherit the context.

``Greenlet.__init__`` is compiled (Cython) and cannot be patched, so the creation points
get a subclass that captures in ``__new__``: it has returned before gevent's own
``__init__`` records the spawning stack, so gevent sees exactly the frames it sees for
its own class.  The child's unit ends when its ``run`` returns (also when killed while
running); a greenlet that never runs (never started, killed before starting, dropped by
a full pool or a ``Timeout`` while waiting for a slot) ends its unit when it is freed.
No link is added: ``has_links()`` and ``unlink`` behave as for gevent's own class.

Patched names: ``gevent.Greenlet``/``spawn``/``spawn_later``, the greenlet class of
``gevent.pool.Group``/``Pool``, and the names ``gevent.pool`` spawns with internally
(``apply_async`` on a full pool, ``map``, ``map_async``, ``imap``, ``imap_unordered``);
``gevent.threadpool.ThreadPool.spawn`` (the hub's thread pool, ``apply``, and
``gevent.threadpool.ThreadPoolExecutor``): each job runs in its submitter's context and
the pool's thread holds none between jobs.
"""

from __future__ import annotations

import functools
from contextvars import Context
from typing import Any

import gevent
import gevent.pool
import gevent.threadpool

from .. import hooks
from ..context import current_context, current_unit
from ..registry import Unit, child_context, close_request_context, count_ended, open_child

__all__ = ["install"]

get_context = current_context.get
get_unit = current_unit.get


def install() -> None:
    Greenlet = _capturing(gevent.Greenlet)
    gevent.Greenlet = Greenlet  # type: ignore[misc]
    gevent.spawn = Greenlet.spawn
    gevent.spawn_later = Greenlet.spawn_later
    gevent.pool.Group.greenlet_class = Greenlet
    gevent.pool.Greenlet = Greenlet  # type: ignore[misc]
    gevent.pool.IMap = _capturing(gevent.pool.IMap)  # type: ignore[misc]
    gevent.pool.IMapUnordered = _capturing(gevent.pool.IMapUnordered)  # type: ignore[misc]
    _install_threadpool()


def _capturing(base: Any) -> Any:
    """A subclass of the greenlet class ``base`` whose instances inherit the context."""

    base_new, base_run = base.__new__, base.run

    class _SameAsBase(type):
        """``isinstance(g, gevent.Greenlet)`` stays true for greenlets that gevent itself
        (or code holding the original class) creates: the name now points at a subclass."""

        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, base)

        def __subclasscheck__(cls, subclass: type) -> bool:
            return issubclass(subclass, base)

    class Capturing(base, metaclass=_SameAsBase):  # type: ignore[misc, valid-type]
        __doc__ = base.__doc__

        def __new__(cls, *_args: Any, **_kwargs: Any) -> Any:
            # gevent's classes take their arguments in __init__ (run right after).
            self = base_new(cls)
            context = get_context()
            if context is not None:
                self.gr_context = child_context(context, "greenlet", self)
            return self

        def run(self) -> None:
            try:
                base_run(self)
            finally:
                unit = get_unit()
                if unit is not None:
                    if unit.restore is not None:
                        _close_left_open()
                    elif unit.open:  # unit.end(), inline
                        unit.open = False
                        count_ended()
                        if hooks.lifecycle_hooks:
                            hooks.emit_destroy(unit.eid)

        if base is gevent.Greenlet:

            @classmethod
            def spawn_later(cls, seconds: float, *args: Any, **kwargs: Any) -> Any:
                # gevent checks ``cls is Greenlet``, which a subclass never is.
                if not args and "run" not in kwargs:
                    raise TypeError("spawn_later needs a function to run")
                return base.spawn_later.__func__(cls, seconds, *args, **kwargs)

    Capturing.__module__ = base.__module__
    Capturing.__qualname__ = Capturing.__name__ = base.__name__
    return Capturing


def _close_left_open() -> None:
    """A greenlet returns with contexts from create_request_context still open: close
    them, and end its own unit under them."""
    unit = current_unit.get()
    while unit is not None and unit.restore is not None:
        close_request_context(unit.context)
        unit = current_unit.get()
    if unit is not None:
        unit.end()


def _install_threadpool() -> None:
    ThreadPool = gevent.threadpool.ThreadPool
    original_spawn = ThreadPool.spawn

    @functools.wraps(original_spawn)
    def spawn(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        child = open_child("thread", func)
        if child is None:
            return original_spawn(self, func, *args, **kwargs)
        try:
            return original_spawn(self, functools.partial(_run_job, *child, func), *args, **kwargs)
        except BaseException:
            child[0].end()
            raise

    ThreadPool.spawn = spawn


def _run_job(unit: Unit, job_vars: Context, func: Any, *args: Any, **kwargs: Any) -> Any:
    """A thread pool job, run in its submitter's context in the pool's thread."""
    try:
        return job_vars.run(func, *args, **kwargs)
    finally:
        unit.end()
