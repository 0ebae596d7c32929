"""Execution units and their lifecycle: ids, trigger ids, init/destroy, ``stats()``.

A *unit* is what Node calls an async resource: a request, or a greenlet, thread, executor
job or asyncio task created while a context was current.  Bookkeeping is done only where
something needs it, so a plain request costs two counter ticks and no object:

* ``live`` is exact from two counters: every unit opened ticks one, every unit ended the
  other, exactly once (:meth:`Unit.end` is idempotent and thread-safe).
* A child unit (greenlet, thread, job, task) gets a :class:`Unit` at creation, stored in
  its own ``contextvars`` context: a copy of its creator's whole context as it was at that
  moment, less Flask's own request and app variables (:func:`carried_context`).  A unit that
  vanishes without ending (a greenlet never started, a thread or task that dies holding a
  context made by :func:`create_request_context`) is ended when its record is freed.
  A gevent greenlet made while no lifecycle hook is enabled gets a :class:`PendingUnit`
  instead (its record made on first need; the greenlet counts its own end).
* A request served by the middleware binds only the context; its :class:`Unit` (its
  execution id and trigger) is made on first need: ``execution_id()`` in it, a child it
  creates, or an enabled hook (then at its start, so init fires there).

Execution ids come from a counter, never reused (unlike ``id()`` or thread idents).
"""

from __future__ import annotations

import functools
import gc
import itertools
import operator
import sys
from collections.abc import Callable
from contextvars import Context, ContextVar, copy_context
from typing import Any, TypeVar, cast

from . import hooks, signals
from .context import FLASK_APP_VARIABLE, FLASK_VARIABLES, RequestContext, current_context, current_unit
from .ids import check_request_id, new_request_id

__all__ = [
    "bind",
    "close_request_context",
    "create_request_context",
    "execution_id",
    "exit_context",
    "stats",
    "trigger_id",
]

#: Execution ids (taken with the builtin ``next(...)``: a third of the cost of calling a bound
#: ``__next__``).
eids = itertools.count(1)
#: A tick per unit opened / ended (``live`` is their difference), ``next(...)`` too.  Each
#: counts *down* in C and hands out None, so a tick allocates nothing (an ``itertools.count``
#: makes an int a tick, ~450 instructions on 3.13), and :func:`ticks` reads it without ticking.
units_opened = itertools.repeat(None, sys.maxsize)
units_ended = itertools.repeat(None, sys.maxsize)


def ticks(counter: itertools.repeat[None]) -> int:
    """How often ``next(counter)`` has been called on one of the tick counters above."""
    return sys.maxsize - operator.length_hint(counter)


class Unit:
    """The lifecycle record of one execution unit; small, and holds no reference to it.

    ``context`` is the request context the unit holds; ``None`` for a root (a unit that
    never held one) and for a request's own unit, which the context refers to instead
    (the other way round would make a reference cycle and delay freeing the request).
    """

    __slots__ = ("context", "eid", "kind", "open", "restore", "template", "trigger_eid")

    def __init__(self, kind: str, trigger_eid: int, context: RequestContext | None) -> None:
        self.eid = next(eids)
        self.trigger_eid = trigger_eid
        self.kind = kind
        self.context = context
        #: Counted in ``live``: set by :func:`open_unit`, cleared by :meth:`end`.
        self.open = False
        #: For a context made by create_request_context: the values to restore on close.
        self.restore: tuple[RequestContext | None, Unit | None] | None = None
        #: What its children start from (see child_context): the mapping of its contextvars
        #: context it was made from, and the template; one attribute, so that a reader never
        #: pairs one's mapping with another's template.  Both refer back to the unit: dropped
        #: when it ends.
        self.template: tuple[object, Context] | None = None

    def end(self, *_ignored: Any) -> bool:
        """Destroy this unit; True the first time only.  Usable as a done callback."""
        if not self.open:
            return False
        # No call between the test and the store: CPython switches threads (and greenlet
        # switches happen) only at calls and backward jumps, so one of two racers gets here.
        self.open = False
        self.template = None
        next(units_ended)
        if hooks.enabled.lifecycle:
            hooks.emit_destroy(self.eid)
        return True

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        # The unit's greenlet, thread or task is gone without ending it (never started,
        # or a context made by create_request_context was never closed).  Not once the
        # interpreter is shutting down: no hook or receiver runs in a half-torn-down process.
        if self.open and not _finalizing() and self.end() and self.restore is not None:
            signals.send_destroyed(None, self.context)

    def __repr__(self) -> str:
        return f"<Unit {self.kind} eid={self.eid} trigger={self.trigger_eid} {self.context!r}>"


class PendingUnit(Unit):
    """The unit of a child whose creator counts its end itself (a gevent greenlet created
    while no lifecycle hook is enabled), until something in it asks for its record.

    Most children never ask (nothing in them reads ``execution_id()``, creates a child or
    a context of its own), so a child costs no record, no ``Context.run`` to set it and no
    finalizer of a record (its greenlet's own ends it): it holds this one, shared by the
    siblings made from the same template (see :func:`child_context`).  Its kind is
    ``"greenlet"``: gevent's greenlets are the only children made pending.
    :meth:`own_record` gives the child its own :class:`Unit` on first need.  Not open
    itself, nor is the record made from it: the child's creator counts the child in
    ``live`` and ends it there (see :mod:`flask_reqctx.patches.gevent`).
    """

    __slots__ = ()

    def __init__(self, parent: Unit, context: RequestContext) -> None:
        super().__init__("greenlet", parent.eid, context)
        self.eid = 0  # no id of its own: each child that asks gets one (own_record)

    def own_record(self) -> Unit:
        """The current child's own record (a fresh id, this trigger), kept in its context.
        Called in the child, whose context holds this pending unit."""
        unit = Unit(self.kind, self.trigger_eid, self.context)
        _set_unit(unit)
        return unit


_get_unit = current_unit.get
_set_context = current_context.set
_set_unit = current_unit.set


def open_unit(
    kind: str, context: RequestContext, resource: Any, trigger_eid: int, *, init: bool = True
) -> Unit:
    """Register a unit holding ``context`` and fire init (with ``init=False``: see :func:`announce`)."""
    unit = Unit(kind, trigger_eid, context)
    unit.open = True
    next(units_opened)
    if hooks.enabled.lifecycle and init:
        hooks.emit_init(unit.eid, kind, trigger_eid, resource)
    return unit


def announce(unit: Unit, resource: Any) -> None:
    """Fire the init of a unit opened with ``init=False``, now that ``resource`` exists.

    For units whose resource is made by the call that schedules them (an executor's Future,
    an asyncio Task): init gets it, as Node's does.  Call it before the unit's code can run
    and before it can end (see :mod:`flask_reqctx.patches.jobs` for pools)."""
    if hooks.enabled.lifecycle:
        hooks.emit_init(unit.eid, unit.kind, unit.trigger_eid, resource)


def current() -> Unit:
    """The unit running now, given its record on first ask."""
    unit = current_unit.get()
    context = current_context.get()
    if unit is not None and (unit.context is context or context is None):
        return unit if type(unit) is not PendingUnit else unit.own_record()
    if context is None:  # a root: an identity of its own, kept for its life
        unit = Unit("root", 0, None)
        current_unit.set(unit)
        return unit
    return request_unit(context)


def request_unit(context: RequestContext) -> Unit:
    """The unit of the request that ``context`` belongs to, made on first need.

    Only called from that request's own unit, where :data:`current_unit` still holds the
    server's unit (a connection greenlet, a worker thread): that is the request's trigger.
    """
    unit = context.unit
    if unit is None:
        server = current_unit.get()
        if server is None:
            server = Unit("root", 0, None)
            current_unit.set(server)
        unit = Unit("request", server.eid, None)
        if context.unit is None:  # another thread may have won the race
            context.unit = unit
        unit = context.unit
    return unit


def announce_request(context: RequestContext) -> None:
    """A request starts while a hook is enabled: give it its unit now and fire init."""
    unit = request_unit(context)
    hooks.emit_init(unit.eid, "request", unit.trigger_eid, context)


def end_request_hooked(context: RequestContext, sender: Any) -> None:
    """A request served by the middleware has ended (with hooks, receivers or a unit of its
    own): its destroy hook and signal."""
    unit = context.unit
    if unit is not None:
        unit.template = None  # it refers to Flask's request (see child_context)
        if hooks.enabled.lifecycle:
            hooks.emit_destroy(unit.eid)
    signals.send_destroyed(sender, context)


def open_child(kind: str, resource: Any, *, init: bool = True) -> tuple[Unit, Context] | None:
    """At creation of a child unit: a unit inheriting the current context, and a fresh
    :class:`contextvars.Context` holding it for the child to run in; ``None`` when there
    is no context to inherit (the child then costs nothing more).  With ``init=False`` its
    init waits for :func:`announce`."""
    context = current_context.get()
    if context is None:
        return None
    child_vars = child_context(context, kind, resource, init=init)
    return cast(Unit, child_vars[current_unit]), child_vars


def child_context(
    context: RequestContext, kind: str, resource: Any, *, init: bool = True, pending: bool = False
) -> Context:
    """A child unit of the current one, which holds ``context``, registered (init fires,
    unless ``init=False``: then :func:`announce` fires it); returned as the
    :class:`contextvars.Context` the child runs in: :func:`carried_context` holding the
    child's unit.

    With ``pending=True`` (for a caller that counts the child's end itself, see
    :class:`PendingUnit`) the child gets no record yet: it is counted in ``live`` now, and
    its context holds the pending unit its siblings share, made into its own record on first
    need.  No init fires for it: a caller passes it only while no lifecycle hook is enabled.
    """
    parent = _get_unit()  # current(), inline: a context is current
    if parent is None or parent.context is not context:
        parent = context.unit or request_unit(context)
    elif type(parent) is PendingUnit:
        parent = parent.own_record()
    if pending:
        next(units_opened)  # what open_unit counts; the child's creator ends it
    else:
        unit = open_unit(kind, context, resource, parent.eid, init=init)
    # carried_context() with the pending unit of the parent's children set in it, kept in the
    # parent (Unit.template) while the mapping of its context is the very same object:
    # nothing was set since (see carried_context).
    snapshot = _copy_context()
    mapping = _get_referents(snapshot)[0] if MAPPING_VISIBLE else None
    kept = parent.template
    if kept is not None and kept[0] is mapping:
        template = kept[1]
    else:
        template = Context()
        template.run(_set_carried, snapshot, PendingUnit(parent, context))
        # Never kept by the unit of a request that has ended: nothing would drop it.
        if mapping is not None and (parent is not context.unit or not context.ended):
            parent.template = (mapping, template)
    child_vars = template.copy()
    if not pending:
        child_vars.run(_set_unit, unit)
    return child_vars


def carried_context() -> Context:
    """What a unit created now starts from: a copy of the whole current ``contextvars``
    context (other libraries' variables too: OpenTelemetry's span, structlog's, Sentry's
    scopes, the user's own), as asyncio gives a task, less Flask's own request and app
    variables (:data:`~flask_reqctx.context.FLASK_VARIABLES`).

    The copy is O(1) (the mapping is immutable and shared).  A ``Context`` can lack a
    variable only when built from an empty one, so where Flask's are present (in the
    request's own unit) the others are set one by one into a fresh one.  For its children,
    :func:`child_context` keeps that one in the creating unit (``Unit.template``) for the
    next ones, as long as the creator's mapping is the very same object: nothing was set
    since.  Only identity will do (``Context.__eq__`` compares values: a variable set to an
    equal but distinct object, a fresh ``[]`` per child, would hand the first child's object
    to the next), and only ``gc.get_referents`` shows the mapping (checked at import:
    :data:`MAPPING_VISIBLE`; without it, no reuse).
    """
    snapshot = _copy_context()
    if _flask_app_variable not in snapshot:  # Flask's request context comes with its app's
        return snapshot
    carried = Context()
    carried.run(_set_carried, snapshot)
    return carried


def _set_carried(snapshot: Context, pending: PendingUnit | None = None) -> None:
    """Set, in the current (fresh) context, every variable of ``snapshot`` but Flask's (and
    the current unit to ``pending``, given one)."""
    flask_variables = _flask_variables
    for variable, value in snapshot.items():
        if variable not in flask_variables:
            variable.set(value)
    if pending is not None:
        _set_unit(pending)


def _mapping_visible() -> bool:
    """Whether ``gc.get_referents`` of a copied ``Context`` is its mapping alone, the same
    object while nothing is set and another once something is (CPython's layout)."""
    probe = Context()
    first, second = gc.get_referents(probe.copy()), gc.get_referents(probe.copy())
    if len(first) != 1 or len(second) != 1 or first[0] is not second[0]:
        return False
    probe.run(_probe_variable.set, True)
    changed = gc.get_referents(probe.copy())
    return len(changed) == 1 and changed[0] is not first[0]


_probe_variable: ContextVar[bool] = ContextVar("flask_reqctx.probe", default=False)
MAPPING_VISIBLE = _mapping_visible()
_copy_context = copy_context
_get_referents = gc.get_referents
_flask_variables = tuple(FLASK_VARIABLES)
_flask_app_variable = FLASK_APP_VARIABLE


def execution_id() -> int:
    """Process-unique id of the current execution unit; each request gets a fresh one."""
    return current().eid


def trigger_id() -> int:
    """``execution_id()`` of the unit that created the current one; 0 for a root."""
    return current().trigger_eid


def stats() -> dict[str, int]:
    """``live``: units holding a context now; ``created``/``destroyed``: totals."""
    ended = ticks(units_ended)  # first: a unit ended after this read was created before the next
    created = ticks(units_opened)
    return {"live": created - ended, "created": created, "destroyed": ended}




class CreatedContext(RequestContext):
    """A context made by :func:`create_request_context`; ``with`` closes it."""

    __slots__ = ()

    def __enter__(self) -> CreatedContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        close_request_context(self)


def create_request_context(
    data: dict[str, Any] | None = None, request_id: str | None = None, *, kind: str = "request"
) -> CreatedContext:
    """Bind a new context to the current unit outside Flask (a CLI job, a queue worker).

    ``request_id`` must pass the same rule as an incoming header (``ValueError`` otherwise)
    and ``data`` must be a dict (``TypeError``).  Over an existing context the new one
    *replaces* it for this unit: an inherited or request context is shadowed and comes
    back when the new one is closed; a context that an earlier ``create_request_context``
    made in this same unit is closed first, so a worker loop calling it once per job never
    accumulates live contexts.  Use it as a context manager (``with
    create_request_context(...) as ctx:``) to close it at the end; one never closed is
    destroyed when its unit (thread, greenlet, asyncio task) ends.  ``kind`` is the unit
    kind its init hook reports (``"task"`` for a task-queue job).
    """
    if data is not None and not isinstance(data, dict):
        raise TypeError(f"create_request_context: data must be a dict, not {type(data).__name__}")
    if request_id is not None:
        check_request_id(request_id)
    previous = current()
    if previous.restore is not None:
        close_request_context(previous.context)
        previous = current()
    context = CreatedContext(request_id if request_id is not None else new_request_id(), data or {})
    unit = open_unit(kind, context, context, previous.eid)
    unit.restore = (current_context.get(), current_unit.get())
    current_context.set(context)
    current_unit.set(unit)
    signals.send_created(None, context)
    return context


def close_request_context(context: RequestContext | None = None) -> bool:
    """Unbind and destroy a context made by :func:`create_request_context` in this unit.

    Returns False (and does nothing) when the current unit holds no such context, e.g. in
    a child greenlet that merely inherited it.
    """
    unit = current_unit.get()
    if unit is None or unit.restore is None or (context is not None and unit.context is not context):
        return False
    if current_context.get() is not unit.context:
        return False
    previous_context, previous_unit = unit.restore
    current_context.set(previous_context)
    current_unit.set(previous_unit)
    if unit.end():
        signals.send_destroyed(None, unit.context)
    return True


F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


def bind(fn: F) -> F:
    """Return ``fn`` wrapped to run in the context current now (Node's ``AsyncLocalStorage.bind``).

    For work handed to something the extension cannot see: a callback registry, a
    third-party pool, a queue consumed elsewhere.  ``fn`` runs in a copy of what a child
    created now would start from (:func:`carried_context`: every context variable but
    Flask's), a fresh copy per call, so calls neither see each other's changes nor leak
    them to the caller.  Outside a request context, ``fn`` runs with none.
    """
    carried = carried_context()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        return carried.copy().run(fn, *args, **kwargs)

    return bound  # type: ignore[return-value]


def exit_context(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Run ``fn(*args, **kwargs)`` with none of the request's state (Node's
    ``AsyncLocalStorage.exit``): in an empty ``contextvars`` context, so neither our context
    nor any variable the request set (a span, structlog's, Sentry's, the user's) is seen by
    ``fn`` or by what it starts.

    For work started from inside a request that must not belong to it: a long-lived
    worker greenlet or thread started lazily on the first request would otherwise keep
    that request's context for its whole life, e.g.
    ``exit_context(gevent.spawn, consume_forever)``.
    """
    return Context().run(fn, *args, **kwargs)
