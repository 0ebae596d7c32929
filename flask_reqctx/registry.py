"""Execution units and their lifecycle: ids, trigger ids, init/destroy, ``stats()``.

A *unit* is what Node calls an async resource: a request, or a greenlet, thread, executor
job or asyncio task created while a context was current.  Units are keyed by their
execution id (a counter, never reused, unlike ``id()`` or thread idents) in ``_live`` while
they hold a context; ending a unit pops it, so destroy fires exactly once per init.
"""

from __future__ import annotations

import itertools
from contextvars import Context
from typing import Any

from . import hooks, signals
from .context import RequestContext, current_context, current_unit

__all__ = ["Unit", "create_request_context", "execution_id", "stats", "trigger_id"]

_next_eid = itertools.count(1).__next__
_destroyed = itertools.count()  # created is destroyed + live: one counter to keep
_live: dict[int, Unit] = {}


class Unit:
    """The lifecycle record of one execution unit; small, and holds no reference to it."""

    __slots__ = ("__weakref__", "context", "eid", "kind", "streamed", "tokens", "trigger_eid")

    def __init__(self, kind: str, trigger_eid: int, context: RequestContext | None) -> None:
        self.eid = _next_eid()
        self.trigger_eid = trigger_eid
        self.kind = kind
        self.context = context
        self.tokens: Any = None  # set when create_request_context bound it
        self.streamed = False  # a request whose body is produced after the view returns

    def end(self, *_ignored: Any) -> bool:
        """Destroy this unit; True the first time only.  Usable as a rawlink/done callback."""
        if _live.pop(self.eid, None) is None:
            return False
        next(_destroyed)
        if hooks.lifecycle_hooks:
            hooks.emit_destroy(self.eid)
        return True

    def __repr__(self) -> str:
        return f"<Unit {self.kind} eid={self.eid} trigger={self.trigger_eid} {self.context!r}>"


def _ensure_unit() -> Unit:
    """The current unit, giving an anonymous (context-less) one its id on first ask."""
    unit = current_unit.get()
    if unit is None:
        unit = Unit("root", 0, None)
        current_unit.set(unit)
    return unit


def open_unit(kind: str, context: RequestContext, resource: Any, trigger_eid: int) -> Unit:
    """Register a unit holding ``context`` and fire init."""
    unit = Unit(kind, trigger_eid, context)
    _live[unit.eid] = unit
    if hooks.lifecycle_hooks:
        hooks.emit_init(unit.eid, kind, trigger_eid, resource)
    return unit


def open_child(kind: str, resource: Any) -> tuple[Unit, Context] | None:
    """At creation of a child unit: a unit inheriting the current context, and a fresh
    :class:`contextvars.Context` holding it for the child to run in; ``None`` when there
    is no context to inherit (the child then costs nothing more)."""
    context = current_context.get()
    if context is None:
        return None
    parent = current_unit.get()
    unit = Unit(kind, parent.eid if parent is not None else 0, context)
    _live[unit.eid] = unit
    if hooks.lifecycle_hooks:
        hooks.emit_init(unit.eid, kind, unit.trigger_eid, resource)
    child_vars = Context()
    child_vars.run(_bind, context, unit)
    return unit, child_vars


def _bind(context: RequestContext | None, unit: Unit | None) -> None:
    current_context.set(context)
    current_unit.set(unit)


def bind_unit(unit: Unit) -> Any:
    """Bind ``unit`` (and its context) to the running unit; returns tokens for :func:`unbind`."""
    return current_context.set(unit.context), current_unit.set(unit)


def unbind(tokens: Any) -> None:
    context_token, unit_token = tokens
    current_unit.reset(unit_token)
    current_context.reset(context_token)


def execution_id() -> int:
    """Process-unique id of the current execution unit; each request gets a fresh one."""
    return _ensure_unit().eid


def trigger_id() -> int:
    """``execution_id()`` of the unit that created the current one; 0 for a root."""
    return _ensure_unit().trigger_eid


def stats() -> dict[str, int]:
    """``live``: units holding a context now; ``created``/``destroyed``: totals."""
    destroyed = int(repr(_destroyed)[6:-1])  # itertools.count shows its next value
    live = len(_live)
    return {"live": live, "created": destroyed + live, "destroyed": destroyed}


def create_request_context(
    data: dict[str, Any] | None = None, request_id: str | None = None, *, kind: str = "request"
) -> RequestContext:
    """Bind a new context to the current unit outside Flask (a CLI job, a queue worker).

    Over an existing context the new one *replaces* it for this unit: an inherited or
    request context is shadowed and comes back when the new one is closed; a context that
    an earlier ``create_request_context`` made in this same unit is closed first, so a
    worker loop calling it once per job never accumulates live contexts.  Use it as a
    context manager (``with create_request_context(...) as ctx:``) to close it at the end.
    ``kind`` is the unit kind its init hook reports (``"task"`` for a task-queue job).
    """
    from .ids import new_request_id

    previous = current_unit.get()
    if previous is not None and previous.tokens is not None:
        close_request_context(previous.context)
        previous = current_unit.get()
    context = RequestContext(request_id if request_id is not None else new_request_id(), data or {})
    unit = open_unit(kind, context, context, previous.eid if previous is not None else 0)
    unit.tokens = bind_unit(unit)
    signals.send_created(None, context)
    return context


def close_request_context(context: RequestContext | None = None) -> bool:
    """Unbind and destroy a context made by :func:`create_request_context` in this unit.

    Returns False (and does nothing) when the current unit holds no such context, e.g. in
    a child greenlet that merely inherited it.
    """
    unit = current_unit.get()
    if unit is None or unit.tokens is None or (context is not None and unit.context is not context):
        return False
    tokens, unit.tokens = unit.tokens, None
    try:
        unbind(tokens)
    except ValueError:  # set in another Context (e.g. a copied one); clear it here instead
        _bind(None, None)
    unit.end()
    signals.send_destroyed(None, unit.context)
    return True
