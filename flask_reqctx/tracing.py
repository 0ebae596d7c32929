"""Per-request execution trees, recorded through the public hook API (``REQCTX_TRACE=True``).

Off by default, and then nothing here runs: the hook is enabled only once an app asks for
tracing (or for the live view).  While on, every context of a traced app records its units:
execution id, kind, trigger id, creation and end (monotonic, relative to the context's
start), outcome, what the unit runs and, for child units, the one frame that created it.

A context's trace is *live* while any of its units is; when the last one ends it moves to a
ring of finished traces.  Memory is bounded: at most ``REQCTX_TRACE_MAX_UNITS`` unit records a
context (the rest are counted), at most ``REQCTX_TRACE_KEEP`` finished traces.  Resources
are held weakly; the context itself only while the trace is live (its units hold it anyway).

Recording is lock-free: each step is one atomic dict/set/deque operation under the GIL, so
the callbacks may run in any thread, greenlet or the gevent hub.
"""

from __future__ import annotations

import heapq
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import IO, Any
from weakref import WeakKeyDictionary

from flask import Flask, got_request_exception, request, request_finished

from .context import RequestContext, get_request_context
from .hooks import create_hook
from .state import holds_state
from .unitinfo import Probe, creation_site, describe, install_thread_excepthook, site_text

__all__ = ["enable", "execution_trace", "finished", "live", "to_chrome_trace"]

DEFAULT_MAX_UNITS = 1000
DEFAULT_KEEP = 200

_now = time.monotonic_ns


class UnitRecord:
    """One unit of a trace; ``end`` stays None while it lives."""

    __slots__ = (
        "eid",
        "end",
        "error",
        "kind",
        "label",
        "outcome",
        "probe",
        "ref",
        "root",
        "site",
        "start",
        "trigger",
    )

    def __init__(self, eid: int, kind: str, trigger: int, start: int, root: bool = False) -> None:
        self.eid, self.kind, self.trigger, self.start, self.root = eid, kind, trigger, start, root
        self.end: int | None = None
        self.outcome = "alive"
        self.error: str | None = None
        self.label: str | None = None
        self.site: Any = None
        self.ref: weakref.ref[Any] | None = None
        self.probe: Probe | None = None

    def finish(self, end: int) -> None:
        probe, ref = self.probe, self.ref
        self.probe = self.ref = None
        if probe is not None:
            self.outcome, self.error = probe(ref() if ref is not None else None)
        elif self.error is not None:  # a request whose view raised (Flask's got_request_exception)
            self.outcome = "raised"
        else:  # a context's own unit returns; a resource without a probe does not say how it ended
            self.outcome = "returned" if self.root else "ended"
        self.end = end

    def as_dict(self, t0: int) -> dict[str, Any]:
        site, function = site_text(self.site)
        end = self.end
        return {
            "eid": self.eid,
            "kind": self.kind,
            "trigger": self.trigger,
            "label": self.label,
            "site": site,
            "function": function,
            "start_ms": (self.start - t0) / 1e6,
            "end_ms": (end - t0) / 1e6 if end is not None else None,
            "outcome": self.outcome,
            "error": self.error,
        }


class ContextTrace:
    """The units of one context, from its own unit's init until its last unit's destroy."""

    __slots__ = (
        "alive",
        "config",
        "context",
        "context_ref",
        "discarded",
        "dropped",
        "eid",
        "ended",
        "kind",
        "method",
        "path",
        "request_id",
        "snapshot",
        "start",
        "started_at",
        "status",
        "units",
    )

    def __init__(self, context: RequestContext, eid: int, kind: str, start: int, config: _AppTracing) -> None:
        self.context: RequestContext | None = context
        self.context_ref = weakref.ref(context)
        self.request_id = context.request_id
        self.eid, self.kind, self.start, self.config = eid, kind, start, config
        self.started_at = time.time()
        self.units: list[UnitRecord] = []
        self.alive: set[int] = set()
        self.dropped = 0
        self.ended: int | None = None
        self.method: str | None = None
        self.path: str | None = None
        self.status: int | None = None
        self.snapshot: dict[str, Any] | None = None
        self.discarded = False

    def as_dict(self, now: int | None = None) -> dict[str, Any]:
        t0 = self.start
        root = self.units[0] if self.units else None
        snapshot = self.snapshot
        if snapshot is None and self.context is not None:
            snapshot = _snapshot(self.context)
        live = self.ended is None
        now = _now() if now is None else now
        return {
            "request_id": self.request_id,
            "trace_id": (snapshot or {}).get("trace_id"),
            "eid": self.eid,
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "started_at": self.started_at,
            "start_ns": t0,
            "duration_ms": (root.end - t0) / 1e6 if root is not None and root.end is not None else None,
            "live": live,
            "age_ms": (now - t0) / 1e6 if live else None,
            "units": [unit.as_dict(t0) for unit in list(self.units)],
            "dropped": self.dropped,
            "data": _jsonable((snapshot or {}).get("data")),
        }


class _AppTracing:
    __slots__ = ("keep_data", "max_units")

    def __init__(self, max_units: int, keep_data: bool) -> None:
        #: Keep the context's data (and trace id) in its finished trace: the live view shows it.
        self.max_units, self.keep_data = max_units, keep_data


class _Recorder:
    """What tracing holds for the process: per-app settings, live traces and units, the ring."""

    def __init__(self) -> None:
        #: Tracing settings per app, keyed by the app's extension settings (a context's origin).
        self.apps: WeakKeyDictionary[Any, _AppTracing] = WeakKeyDictionary()
        #: For contexts made outside Flask (``create_request_context``) while tracing is on.
        self.unowned = _AppTracing(DEFAULT_MAX_UNITS, keep_data=False)
        #: Live traces by ``id(context)`` (the trace holds the context, so the id is not reused).
        self.live: dict[int, ContextTrace] = {}
        #: Live units by execution id: their trace, and their record (None once over the limit).
        self.units: dict[int, tuple[ContextTrace, UnitRecord | None]] = {}
        #: The ring's size: the largest any enable() asked for (None: never enabled).
        self.keep: int | None = None
        self.finished: deque[ContextTrace] = deque(maxlen=0)

    def reset(self) -> None:
        """Recording off, nothing recorded, no app traced (for tests)."""
        _hook.disable()
        self.__init__()  # type: ignore[misc]


_recorder = holds_state(_Recorder())


def _snapshot(context: RequestContext) -> dict[str, Any] | None:
    try:
        return context.to_dict()
    except Exception:  # a data loader's object that cannot be read: show the trace without it
        return None


def _jsonable(value: Any) -> Any:
    """``value`` with anything JSON cannot hold replaced by its ``repr``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


# -- the hook ---------------------------------------------------------------------------


def _on_init(eid: int, kind: str, trigger: int, resource: Any) -> None:
    now = _now()
    if isinstance(resource, RequestContext):  # a context's own unit: a request, or a job's context
        origin = getattr(resource, "origin", None)
        config = _recorder.apps.get(origin) if origin is not None else _recorder.unowned
        if config is None:
            return
        trace = ContextTrace(resource, eid, kind, now, config)
        record = UnitRecord(eid, kind, trigger, now, root=True)
        trace.units.append(record)
        trace.alive.add(eid)
        _recorder.units[eid] = (trace, record)
        _recorder.live[id(resource)] = trace
        return
    context = get_request_context()
    trace = _recorder.live.get(id(context)) if context is not None else None  # type: ignore[assignment]
    if trace is None or trace.context is not context:
        return
    trace.alive.add(eid)
    if len(trace.units) >= trace.config.max_units:
        trace.dropped += 1
        _recorder.units[eid] = (trace, None)
        return
    record = UnitRecord(eid, kind, trigger, now)
    record.site = creation_site()
    record.label, record.ref, record.probe = describe(kind, resource)
    trace.units.append(record)
    _recorder.units[eid] = (trace, record)


def _on_destroy(eid: int) -> None:
    entry = _recorder.units.pop(eid, None)
    if entry is None:
        return
    trace, record = entry
    now = _now()
    if record is not None:
        record.finish(now)
    trace.alive.discard(eid)
    if not trace.alive:
        _finish(trace, now)


def _finish(trace: ContextTrace, now: int) -> None:
    context = trace.context
    if context is None or _recorder.live.pop(id(context), None) is not trace:
        return  # finished already (another thread saw the last unit end too)
    if trace.config.keep_data:
        trace.snapshot = _snapshot(context)
    trace.context = None
    trace.ended = now
    # A set never shrinks: emptied, it keeps the table its largest fan-out needed (64 KB for
    # 2,000 units alive at once).  A kept trace holds a fresh one, so it costs O(MAX_UNITS).
    trace.alive = set()
    if not trace.discarded:
        _recorder.finished.append(trace)


_hook = create_hook(init=_on_init, destroy=_on_destroy)


# -- Flask wiring -----------------------------------------------------------------------


def _current_trace() -> ContextTrace | None:
    context = get_request_context()
    return _recorder.live.get(id(context)) if context is not None else None


def _on_request_finished(sender: Flask, response: Any, **_extra: Any) -> None:
    trace = _current_trace()
    if trace is not None:  # one signal for all three: Flask's request is still there
        trace.method, trace.path = request.method, request.path  # never the query string
        trace.status = response.status_code


def _on_request_exception(sender: Flask, exception: BaseException, **_extra: Any) -> None:
    trace = _current_trace()
    if trace is not None and trace.units:
        trace.units[0].error = type(exception).__name__


def _positive_int(app: Flask, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an int >= {minimum}, got {value!r} (app {app.name!r})")
    return value


def attach(app: Flask, settings: Any, option: Callable[[str, Any], Any]) -> bool:
    """Called by ``ReqCtx.init_app``: turn recording on for ``app`` if asked (``option(name,
    default)`` reads its settings); True when the app also wants the live view (which the
    extension then mounts)."""
    live_view = bool(option("live_view", False))
    if not (option("trace", False) or live_view):
        return False
    max_units = _positive_int(app, "REQCTX_TRACE_MAX_UNITS", option("trace_max_units", DEFAULT_MAX_UNITS), 1)
    keep = _positive_int(app, "REQCTX_TRACE_KEEP", option("trace_keep", DEFAULT_KEEP), 0)
    enable(keep)
    _recorder.apps[settings] = _AppTracing(max_units, keep_data=live_view)
    request_finished.connect(_on_request_finished, app)
    got_request_exception.connect(_on_request_exception, app)
    return live_view


def enable(keep: int = DEFAULT_KEEP) -> None:
    """Start recording (also the contexts ``create_request_context`` makes); the ring of finished
    traces keeps the largest ``keep`` asked for.  ``ReqCtx`` calls it for traced apps."""
    if _recorder.keep is None or keep > _recorder.keep:
        _recorder.keep = keep
        _recorder.finished = deque(_recorder.finished, maxlen=keep)
    install_thread_excepthook()
    _hook.enable()


def discard(context: RequestContext | None) -> None:
    """Record ``context`` no further into the ring (the live view's own requests)."""
    trace = _recorder.live.get(id(context)) if context is not None else None
    if trace is not None:
        trace.discarded = True


# -- reading ----------------------------------------------------------------------------


def execution_trace(context: RequestContext | None = None) -> dict[str, Any] | None:
    """The recorded execution tree of ``context`` (default: the current one) as JSON-ready data.

    None when it was not recorded (tracing off, another app's context) or has left the ring.
    ``ctx.execution_trace()`` is the same call.
    """
    if context is None:
        context = get_request_context()
        if context is None:
            return None
    found = _recorder.live.get(id(context))
    if found is None or found.context is not context:
        found = next((t for t in reversed(_recorder.finished) if t.context_ref() is context), None)
    return found.as_dict() if found is not None else None


def live(limit: int | None = None) -> list[dict[str, Any]]:
    """Traces of the contexts live now (some unit still holds them), oldest first (the
    ``limit`` oldest, when given)."""
    now = _now()
    return [trace.as_dict(now) for trace in live_traces(limit)]


def finished(last: int | None = None) -> list[dict[str, Any]]:
    """The ring of finished traces, most recent first (at most ``last`` of them)."""
    return [trace.as_dict() for trace in finished_traces(last)]


def live_traces(limit: int | None = None) -> list[ContextTrace]:
    """The recorded live traces, oldest first (the ``limit`` oldest): for a reader that turns
    them into data one at a time (the live view); :func:`live` is the data."""
    traces = [trace for trace in list(_recorder.live.values()) if not trace.discarded]
    if limit is None:
        return sorted(traces, key=_started)
    return heapq.nsmallest(max(limit, 0), traces, key=_started)


def finished_traces(last: int | None = None) -> list[ContextTrace]:
    """The ring's traces, most recent first (at most ``last``); :func:`finished` is the data."""
    traces = list(_recorder.finished)  # a copy of references, taken in C: no lock needed
    traces.reverse()
    return traces[: None if last is None else max(last, 0)]


def counts() -> tuple[int, int]:
    """How many traces are live (not counting the live view's own) and how many finished are kept."""
    return sum(1 for trace in list(_recorder.live.values()) if not trace.discarded), len(_recorder.finished)


def _started(trace: ContextTrace) -> int:
    return trace.start


def to_chrome_trace(
    traces: Iterable[dict[str, Any]] | None = None, out: str | IO[str] | None = None
) -> dict[str, Any]:
    """Chrome Trace Event Format for ``traces`` (default: live and finished); see :mod:`.chrometrace`."""
    from .chrometrace import chrome_trace

    return chrome_trace(traces if traces is not None else [*live(), *finished()], out)
