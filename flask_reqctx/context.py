"""The request context value and the two context variables that carry it.

Each greenlet, thread and asyncio task has its own :mod:`contextvars` context, so a
``ContextVar`` *is* a store keyed by execution identity, looked up in C.  The hot path,
:func:`get_request_context`, is that lookup and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from flask import globals as flask_globals

from .otel import OTEL_TRACE_MODULE
from .tracecontext import TraceContext, start_trace, trace_ids

if TYPE_CHECKING:
    from .data import HeaderRedaction
    from .registry import Unit

__all__ = ["RequestContext", "get_request_context"]


class Origin(Protocol):
    """What a context reads of the settings of the app that made it (the extension's
    per-app settings satisfy it)."""

    #: The request-id header a call out carries; None: none.
    outgoing_header: str | None
    #: What the default data shows of each request header.
    redact: HeaderRedaction


class RequestContext:
    """One request's id and data, shared by every unit the request reaches.

    ``data`` may be produced lazily (the default headers dict is only built when read),
    so a request that never looks at it does not pay for it; likewise :attr:`trace`.
    """

    __slots__ = ("__weakref__", "_data", "_load", "_trace", "origin", "request_id", "unit")
    #: Whether the middleware has ended the request: a slot of the middleware's contexts;
    #: any other context has no request unit of its own and counts as ended.
    ended: bool = True

    def __init__(
        self,
        request_id: str,
        data: dict[str, Any] | None = None,
        *,
        trace_id: str | None = None,
        load: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.request_id = request_id
        self._data = data if data is not None or load is not None else {}
        self._load: Any = load
        #: W3C trace position: a TraceContext; or just the trace id (a str) of a trace this
        #: request started itself, while only its id was asked for (log lines); None until
        #: an incoming traceparent or the first ask.
        self._trace: TraceContext | str | None = trace_id
        #: The settings of the app that made it (outgoing header names); None outside Flask.
        self.origin: Origin | None = None
        #: The unit of a request served by the middleware, made on first need (see registry).
        self.unit: Unit | None = None

    @property
    def trace(self) -> TraceContext:
        """This request's :class:`~flask_reqctx.tracecontext.TraceContext`.

        From a valid incoming ``traceparent``; otherwise a new trace, started here on first
        use (so a request that never logs or calls out never pays for a random id).
        """
        trace = self._trace
        if isinstance(trace, TraceContext):
            return trace
        started = start_trace(trace)
        if self._trace is trace:  # no call between test and store: one racing thread wins
            self._trace = started
        return self.trace

    @trace.setter
    def trace(self, value: TraceContext | None) -> None:
        self._trace = value

    @property
    def known_trace(self) -> TraceContext | None:
        """:attr:`trace` if this context has one already (never starts one)."""
        trace = self._trace
        return trace if isinstance(trace, TraceContext) else None

    @property
    def trace_id(self) -> str:
        """The W3C trace id (32 hex): the caller's, or a new trace's (see :attr:`trace`).

        Every log line reads it (:class:`~flask_reqctx.logging.RequestIdFilter`): a trace
        started for it is only its id until the whole :attr:`trace` is needed."""
        trace = self._trace
        if trace is None:
            if OTEL_TRACE_MODULE in _modules:  # the current span's trace, if any
                return self.trace.trace_id
            trace = next(trace_ids)
            if self._trace is None:  # no call between test and store: one racing thread wins
                self._trace = trace
                return trace
            trace = self._trace
        return trace if type(trace) is str else trace.trace_id  # type: ignore[union-attr]

    @trace_id.setter
    def trace_id(self, value: str | None) -> None:
        self._trace = TraceContext(value) if value is not None else None

    @property
    def data(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            source, self._load = self._load, None
            data = self._make_data(source)
            if self._data is None:  # another thread may have won the race
                self._data = data
            data = self._data
        return data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data, self._load = value, None

    def _make_data(self, load: Any) -> dict[str, Any]:
        result: dict[str, Any] = load() if load is not None else {}
        return result

    def to_dict(self) -> dict[str, Any]:
        """``{"request_id": str, "trace_id": str, "data": dict}``: always these three keys (a
        trace is started here if none was yet, as for a log line)."""
        return {"request_id": self.request_id, "trace_id": self.trace_id, "data": self.data}

    def execution_trace(self) -> dict[str, Any] | None:
        """The units this context reached, as JSON-ready data (``REQCTX_TRACE``); None when not
        recorded.  See :func:`flask_reqctx.tracing.execution_trace` (``ctx.trace`` is the W3C trace)."""
        tracing: Any = _modules.get("flask_reqctx.tracing")  # loaded once an app records traces
        return tracing.execution_trace(self) if tracing is not None else None

    def __repr__(self) -> str:
        return f"<RequestContext {self.request_id}>"


_modules = sys.modules

#: Flask's own request and app context variables: the ones a child unit does not inherit
#: (``flask.has_request_context()`` is False there, ``flask.request`` raises Flask's own
#: "Working outside of request context"), so a late child never reads, nor keeps alive, a
#: torn-down request or ``g``.  Flask keeps them under private names; a Flask without one
#: of them simply has nothing of it to leave out.
FLASK_VARIABLES: frozenset[ContextVar[Any]] = frozenset(
    var
    for var in (getattr(flask_globals, name, None) for name in ("_cv_request", "_cv_app"))
    if var is not None
)
#: Set wherever Flask's request context is (pushing one pushes its app's context first).
FLASK_APP_VARIABLE: ContextVar[Any] = flask_globals._cv_app


def mapping_slot(variable: ContextVar[Any]) -> int:
    """Where CPython's context mapping (a HAMT) puts ``variable`` at its first level: 5 bits
    of its hash folded to 32 bits (``hamt_hash`` and ``hamt_mask`` in ``Python/hamt.c``)."""
    full = hash(variable) & 0xFFFF_FFFF_FFFF_FFFF
    return ((full & 0xFFFF_FFFF) ^ (full >> 32)) & 0x1F


def _variable_apart(name: str, others: Iterable[ContextVar[Any]]) -> ContextVar[Any]:
    """``ContextVar(name, default=None)`` in a first-level slot of the context mapping that
    none of ``others`` holds.

    A variable's hash is made from its address, so where a process's memory falls decides
    whether two variables share a slot; when they do, every set, reset and lookup of either
    walks a second level.  Ours are set and reset on every request beside Flask's two: a
    shared slot cost ~2,500 instructions a request under callgrind (3.13, hello world), in
    roughly one process layout in five.  So candidates are made (and kept alive, or the next
    would reuse the address) until one lands apart; a Python whose hashes work otherwise just
    gets the first."""
    taken = {mapping_slot(other) for other in others}
    rejected: list[ContextVar[Any]] = []
    variable: ContextVar[Any] = ContextVar(name, default=None)
    while mapping_slot(variable) in taken and len(rejected) < 64:
        rejected.append(variable)
        variable = ContextVar(name, default=None)
    return variable


#: The context bound to the current unit (``None`` outside any request).
current_context: ContextVar[RequestContext | None] = _variable_apart("flask_reqctx.context", FLASK_VARIABLES)
#: The lifecycle record of the current unit, for ids and hooks; never on the hot path.  A
#: request served by the middleware binds only :data:`current_context` (see registry).
current_unit: ContextVar[Unit | None] = _variable_apart(
    "flask_reqctx.unit", (*FLASK_VARIABLES, current_context)
)

#: ``get_request_context()`` is the bound ``ContextVar.get``: no Python frame, no allocation.
get_request_context: Callable[[], RequestContext | None] = current_context.get
