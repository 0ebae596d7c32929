"""Execution traces in the Chrome Trace Event Format (Perfetto, chrome://tracing, speedscope).

Each context becomes a "process" (its pid is the context's execution id, named after the
request) and each of its units a "thread" (tid = the unit's execution id) with one ``B``/``E``
pair, so every unit has a lane of its own and the pairs never need to nest.  A unit still
alive is closed at the moment of the export, with ``"alive": true`` in its end's args.
Timestamps are microseconds on the monotonic clock, so requests line up with each other.
Format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

__all__: list[str] = []  # internal: flask_reqctx.tracing.to_chrome_trace is the public call


def unit_title(unit: dict[str, Any]) -> str:
    """``greenlet fetch_part @ app.py:12``: kind, what it runs (innermost name), where it was made."""
    title = str(unit["kind"])
    if unit.get("label"):
        title += f" {unit['label'].split('.<locals>.')[-1]}"
    if unit.get("site"):
        title += f" @ {os.path.basename(unit['site'])}"
    return title


def _context_events(trace: dict[str, Any], now_us: float) -> Iterator[dict[str, Any]]:
    """A context's events, made one unit at a time: a reader that serialises each at once
    holds none of them (the live view's stream leaves the garbage collector nothing to do)."""
    pid = trace["eid"]
    t0 = trace["start_ns"] / 1000
    title = " ".join(str(part) for part in (trace.get("method"), trace.get("path")) if part)
    yield {
        "ph": "M",
        "name": "process_name",
        "pid": pid,
        "tid": 0,
        "args": {"name": f"{title or trace['kind']} {trace['request_id']}"},
    }
    yield {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}}
    for unit in trace["units"]:
        tid = unit["eid"]
        start = t0 + unit["start_ms"] * 1000
        alive = unit["end_ms"] is None
        end = now_us if alive else t0 + unit["end_ms"] * 1000
        args = {key: unit[key] for key in ("eid", "trigger", "site", "function") if unit.get(key) is not None}
        yield {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": unit_title(unit)}}
        yield {
            "ph": "B",
            "name": unit_title(unit),
            "cat": unit["kind"],
            "pid": pid,
            "tid": tid,
            "ts": start,
            "args": args,
        }
        yield {
            "ph": "E",
            "pid": pid,
            "tid": tid,
            "ts": max(end, start),
            "args": {"outcome": unit["outcome"], "error": unit.get("error"), "alive": alive},
        }
    if trace.get("dropped"):
        yield (
            {
                "ph": "i",
                "s": "p",
                "name": f"{trace['dropped']} more units not recorded",
                "pid": pid,
                "tid": trace["eid"],
                "ts": t0,
            }
        )


def chrome_trace(traces: Iterable[dict[str, Any]], out: str | IO[str] | None = None) -> dict[str, Any]:
    """``{"traceEvents": [...], "displayTimeUnit": "ms"}`` for ``traces`` (from
    :func:`flask_reqctx.tracing.execution_trace`/``live``/``finished``); written as JSON to ``out``
    (a path or a text file) when given."""
    now_us = time.monotonic_ns() / 1000
    events: list[dict[str, Any]] = []
    for trace in traces:
        events += _context_events(trace, now_us)
    document = {"traceEvents": events, "displayTimeUnit": "ms"}
    if isinstance(out, str):
        with open(out, "w", encoding="utf-8") as f:
            json.dump(document, f)
    elif out is not None:
        json.dump(document, out)
    return document


def chrome_trace_chunks(
    traces: Iterable[dict[str, Any]], pause: Callable[[], None] | None = None
) -> Iterator[str]:
    """The JSON text of :func:`chrome_trace` for ``traces``, a few hundred events at a time,
    calling ``pause`` between two (the live view streams it: no whole document in memory,
    and the worker's other requests run in between)."""
    now_us = time.monotonic_ns() / 1000
    encode = json.JSONEncoder().encode
    yield '{"traceEvents": ['
    separator = ""
    chunk: list[str] = []
    for trace in traces:
        for event in _context_events(trace, now_us):
            chunk.append(encode(event))  # text: the event itself is freed at once
            if len(chunk) == _EVENTS_PER_CHUNK:
                yield separator + ",".join(chunk)
                separator, chunk = ",", []
                if pause is not None:
                    pause()
    if chunk:
        yield separator + ",".join(chunk)
    yield '], "displayTimeUnit": "ms"}'


#: Events serialised between two pauses (three per unit).
_EVENTS_PER_CHUNK = 600
