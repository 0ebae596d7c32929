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
the pool's thread holds none between jobs; the job's init gets the ``AsyncResult`` that
``spawn`` returns (the one a ``ThreadPoolExecutor`` future wraps), and its destroy fires
when that result is delivered (see :mod:`.jobs`).
"""

from __future__ import annotations

import functools
from contextvars import Context
from typing import Any

import gevent
import gevent.pool
import gevent.threadpool
from gevent.monkey import get_original

from .. import hooks
from ..context import current_context, current_unit
from ..registry import carried_context, child_context, close_request_context, open_child, units_ended
from .internals import private_name
from .jobs import abandon, announce_job, wait_for

__all__: list[str] = []  # internal: flask_reqctx.patches.install() applies it

get_context = current_context.get
get_unit = current_unit.get
_native_lock: Any = get_original("_thread", "allocate_lock")


_POOL_LOST = (
    "greenlets that gevent.pool's map, map_async, imap, imap_unordered (and apply_async on a full pool)"
    " spawn no longer inherit the context"
)
#: The modules patched, as plain objects: their names are rebound here.
_gevent: Any = gevent
_pool: Any = gevent.pool


def install() -> None:
    Greenlet = _capturing(_gevent.Greenlet)
    _gevent.Greenlet = Greenlet
    _gevent.spawn = Greenlet.spawn
    _gevent.spawn_later = Greenlet.spawn_later
    _pool.Group.greenlet_class = Greenlet
    for name in ("Greenlet", "IMap", "IMapUnordered"):  # the names gevent.pool spawns with internally
        internal = private_name(_pool, name, library="gevent", lost=_POOL_LOST)
        if internal is not None:
            setattr(_pool, name, Greenlet if name == "Greenlet" else _capturing(internal))
    _install_threadpool()


def _capturing(base: Any) -> Any:
    """A subclass of the greenlet class ``base`` whose instances inherit the context."""
    gevent_init = _gevent.Greenlet.__init__  # whose first argument is the function to run
    base_spawn_later: Any = getattr(base.spawn_later, "__func__", None)  # the classmethod's function

    base_new, base_run = base.__new__, base.run

    class _SameAsBase(type):
        """``isinstance(g, gevent.Greenlet)`` stays true for greenlets that gevent itself
        (or code holding the original class) creates: the name now points at a subclass."""

        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, base)

        def __subclasscheck__(cls, subclass: type) -> bool:
            return issubclass(subclass, base)

    class Capturing(base, metaclass=_SameAsBase):  # type: ignore[misc]
        __doc__ = base.__doc__
        #: True while this greenlet is counted in ``live`` by itself: created in a context
        #: while no lifecycle hook was enabled, with a pending unit (see
        #: :class:`~flask_reqctx.registry.PendingUnit`); cleared by :meth:`end_counted`.
        __slots__ = ("reqctx_counted",)
        reqctx_counted: bool

        def __new__(cls, *args: Any, **_kwargs: Any) -> Any:
            # gevent's classes take their arguments in __init__ (run right after).
            self = base_new(cls)
            context = get_context()
            if context is None:
                self.reqctx_counted = False
            elif not hooks.enabled.lifecycle:
                self.reqctx_counted = True
                self.gr_context = child_context(context, "greenlet", self, pending=True)
            else:
                self.reqctx_counted = False
                # What it will run, for init hooks (gevent's __init__ sets it too); only then:
                # a greenlet given an attribute here gets an instance dict early (~4k instructions).
                if args and cls.__init__ is gevent_init and callable(args[0]):
                    self._run = args[0]
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
                    elif unit.open:
                        unit.end()
                if self.reqctx_counted:
                    self.end_counted()

        def end_counted(self) -> None:
            """End this greenlet's pending unit (see ``reqctx_counted``): once."""
            if self.reqctx_counted:
                self.reqctx_counted = False  # no call before the store: one caller gets here
                next(units_ended)

        def kill(self, *args: Any, **kwargs: Any) -> None:
            base.kill(self, *args, **kwargs)
            if self.dead:  # killed before it ever ran: its unit ends now
                if self.reqctx_counted:
                    self.end_counted()
                elif self.gr_context is not None:
                    unit = self.gr_context.get(current_unit)
                    if unit is not None:
                        unit.end()

        def __del__(self) -> None:
            # Freed without ever running (never started, or dropped by a full pool or a
            # Timeout): its pending unit ends now.  (A suspended greenlet is killed by
            # greenlet after this, and its run ends it: whichever comes first counts.)
            if self.reqctx_counted:
                self.end_counted()

        def link(self, callback: Any, *args: Any, **kwargs: Any) -> None:
            # The callback runs later in a new raw greenlet of the hub: in the context of
            # whoever linked it (``apply_async(callback=...)`` links its callback this way).
            if current_context.get() is not None:
                callback = _LinkedInContext(callback)
            base.link(self, callback, *args, **kwargs)

        if base is _gevent.Greenlet:

            @classmethod
            def spawn_later(cls, seconds: float, *args: Any, **kwargs: Any) -> Any:
                # gevent checks ``cls is Greenlet``, which a subclass never is.
                if not args and "run" not in kwargs:
                    raise TypeError("spawn_later needs a function to run")
                return base_spawn_later(cls, seconds, *args, **kwargs)

    Capturing.__module__ = base.__module__
    Capturing.__qualname__ = Capturing.__name__ = base.__name__
    return Capturing


class _LinkedInContext:
    """A link callback that runs in the context of whoever linked it, as it was at the
    link (:func:`~flask_reqctx.registry.carried_context`, a copy per call).  Equal to, and
    hashed as, the callback itself, so ``unlink(callback)`` finds it as gevent would."""

    __slots__ = ("callback", "carried")

    def __init__(self, callback: Any) -> None:
        self.callback = callback
        self.carried = carried_context()

    def __call__(self, *args: Any) -> Any:
        return self.carried.copy().run(self.callback, *args)

    def __eq__(self, other: object) -> bool:
        return bool(self.callback == other)

    def __hash__(self) -> int:
        return hash(self.callback)


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
    ThreadPool: Any = gevent.threadpool.ThreadPool
    original_spawn = ThreadPool.spawn

    @functools.wraps(original_spawn)
    def spawn(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        child = open_child("thread", None, init=False)  # init gets the AsyncResult, once it exists
        if child is None:
            return original_spawn(self, func, *args, **kwargs)
        unit, job_vars = child
        gate = None
        if hooks.enabled.lifecycle:  # a pool thread may start the job at once: it waits for the init
            gate = _native_lock()  # the pool's threads are real ones, also under monkey-patching
            gate.acquire()
        try:
            result = original_spawn(self, _JobInContext(func, job_vars, gate), *args, **kwargs)
        except BaseException:
            abandon(unit, gate, func)
            raise
        if gate is not None:
            announce_job(unit, gate, result, func)
        # Its destroy: once the result is delivered, in this thread (where its links run), so
        # the outcome can be read from it; the first link, so it precedes any waiter's wake-up.
        result.rawlink(unit.end)
        return result

    ThreadPool.spawn = spawn


class _JobInContext:
    """A thread pool job run in its submitter's context in the pool's thread (after its
    init, when given a ``gate``).  Equal to, and hashed as, the function itself, as gevent's
    own ``_before_run_task``/``_after_run_task`` hooks (and their users) see it."""

    __slots__ = ("func", "gate", "job_vars")

    def __init__(self, func: Any, job_vars: Context, gate: Any) -> None:
        self.func, self.job_vars, self.gate = func, job_vars, gate

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.gate is not None:
            wait_for(self.gate)
        return self.job_vars.run(self.func, *args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return bool(self.func == other)

    def __hash__(self) -> int:
        return hash(self.func)

    def __repr__(self) -> str:
        return repr(self.func)
