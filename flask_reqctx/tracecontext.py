"""W3C Trace Context (``traceparent`` / ``tracestate``): parse incoming, build outgoing.

No spans are recorded here: the point is that a request's logs and the calls it makes
carry the same trace id as its caller, so ids line up with OpenTelemetry, load
balancers and other services.

* A valid incoming ``traceparent`` (https://www.w3.org/TR/trace-context/) gives the
  request its trace id, the caller's parent id and trace flags; ``tracestate`` is kept
  (validated, for pass-through) only alongside a valid ``traceparent``.  An invalid
  ``traceparent`` is ignored as the spec says: the request starts a new trace, and the
  raw value is never logged.
* Without one, the request starts a new trace, lazily: a random trace id is made the
  first time something asks (a log record through the filter, ``outgoing_headers()``,
  ``ctx.trace_id``), so requests that neither log nor call out pay nothing.  Its flags
  are ``00`` (not sampled): we record nothing, and must not claim we did.
* Where an OpenTelemetry span is current when the trace is first needed (see
  :mod:`flask_reqctx.otel`), the request takes that span's trace id, flags and span id, so
  outgoing calls name the span as their parent; with an incoming ``traceparent`` (same
  trace id as the span) the span's id becomes this request's span id on first use.
* Outgoing calls carry ``00-<trace id>-<span id>-<flags>``: the same trace id and a new
  parent id, this request's own ``span_id`` (random, made once per request), so every
  call a request makes names the request as its parent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

from .otel import SpanIds, current_span
from .pooled import pooled

__all__ = ["TraceContext"]


#: A ``traceparent`` longer than this is rejected without parsing (OpenTelemetry's cap).
MAX_TRACEPARENT = 512
#: ``tracestate``: at most 32 list members and 512 characters (W3C's propagation minimum).
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE = 512

_traceparent = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})").match
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_tracestate_key = re.compile(
    r"[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}"
).fullmatch
# printable ASCII except ',' and '=', not ending in a space
_tracestate_value = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]").fullmatch


def _hex_batch(size: int) -> Callable[[], list[str]]:
    """Batches of 512 random ids of ``size`` bytes in lowercase hex, none all zero."""
    zero = "0" * (2 * size)

    def make() -> list[str]:
        ids = os.urandom(size * 512).hex(" ", size).split(" ")
        return ids if zero not in ids else [i for i in ids if i != zero]

    return make


#: Pools of 32 and 16 random lowercase hex digits (never all zero), like request ids.
trace_ids: Iterator[str] = pooled(_hex_batch(16))
span_ids: Iterator[str] = pooled(_hex_batch(8))
#: A new trace id / span id.
new_trace_id: Callable[[], str] = trace_ids.__next__
new_span_id: Callable[[], str] = span_ids.__next__


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` of a valid ``traceparent``, else None.

    The W3C rules: two lowercase hex digits of version (not ``ff``), 32 of trace id, 16 of
    parent id and 2 of flags, separated by ``-``; all-zero ids are invalid; version ``00``
    has exactly these four fields, a later version may append ``-``-prefixed fields
    (parsed as version 00, as the spec says).  Surrounding spaces/tabs are optional white
    space; anything longer than :data:`MAX_TRACEPARENT` is rejected.
    """
    if not isinstance(value, str) or len(value) > MAX_TRACEPARENT:
        return None
    value = value.strip(" \t")
    match = _traceparent(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None
    return trace_id, parent_id, flags


def parse_tracestate(value: object) -> str | None:
    """A valid ``tracestate`` normalised for forwarding (``k=v,k=v``), else None.

    Invalid as a whole (W3C: drop it) when a member is malformed, a key repeats, or there
    are more than 32 members or 512 characters; empty members are skipped.
    """
    if not isinstance(value, str) or len(value) > 4 * MAX_TRACESTATE:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or _tracestate_key(key) is None or _tracestate_value(val) is None or key in keys:
            return None
        keys.add(key)
        members.append(member)
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    out = ",".join(members)
    return out if len(out) <= MAX_TRACESTATE else None


class TraceContext:
    """One request's place in a trace: what it received, and its own span id for calls out."""

    __slots__ = ("_span_id", "flags", "parent_id", "trace_id", "tracestate")

    def __init__(
        self,
        trace_id: str,
        parent_id: str | None = None,
        flags: str = "00",
        tracestate: str | None = None,
    ) -> None:
        self.trace_id = trace_id
        #: The caller's span id (None when this request started the trace).
        self.parent_id = parent_id
        self.flags = flags
        self.tracestate = tracestate
        self._span_id: str | None = None

    @classmethod
    def from_headers(cls, traceparent: str, tracestate: str | None = None) -> TraceContext | None:
        """The context of a valid incoming ``traceparent`` (plus ``tracestate``), else None."""
        parsed = parse_traceparent(traceparent)
        if parsed is None:
            return None
        trace_id, parent_id, flags = parsed
        state = parse_tracestate(tracestate) if tracestate is not None else None
        return cls(trace_id, parent_id, flags, state)

    @property
    def span_id(self) -> str:
        """This request's own id in the trace: the parent id of every call it makes (the current
        OpenTelemetry span's, when one of this trace is current on first use)."""
        span_id = self._span_id
        if span_id is None:
            span = current_span()
            if span is not None and span.trace_id == self.trace_id:
                span_id, self.flags = span.span_id, span.flags
            else:
                span_id = new_span_id()
            if self._span_id is None:  # another greenlet/thread may have won the race
                self._span_id = span_id
            span_id = self._span_id
        return span_id

    def traceparent(self) -> str:
        """The ``traceparent`` for an outgoing call: same trace id, this request as parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def headers(self) -> dict[str, str]:
        """``traceparent`` (and ``tracestate`` when one came in) for an outgoing call."""
        headers = {"traceparent": self.traceparent()}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    @classmethod
    def from_span(cls, span: SpanIds) -> TraceContext:
        """The position of an OpenTelemetry span: its trace, flags and state, and its id as ours."""
        trace = cls(span.trace_id, span.parent_id, span.flags, span.tracestate)
        trace._span_id = span.span_id
        return trace

    def __repr__(self) -> str:
        return f"<TraceContext {self.trace_id} parent={self.parent_id} flags={self.flags}>"


def start_trace(trace_id: str | None = None) -> TraceContext:
    """A request's trace when none came in: ``trace_id``'s when one was already chosen (for
    log lines), else the current OpenTelemetry span's, else a new one."""
    if trace_id is not None:
        return TraceContext(trace_id)
    span = current_span()
    return TraceContext.from_span(span) if span is not None else TraceContext(new_trace_id())
