"""The live view: an opt-in blueprint (``REQCTX_LIVE_VIEW=True``) showing the execution traces.

``/_reqctx/`` (the prefix is ``REQCTX_LIVE_VIEW_PREFIX``) renders the contexts live now and the
last finished requests as server-drawn SVG timelines; ``json`` has the same data and
``chrome-trace.json`` the Chrome Trace Event Format (open it in Perfetto).  Each shows the
``?last=N`` finished requests (default ``REQCTX_LIVE_VIEW_SHOW``) and the ``?live=N`` oldest live
contexts (the same default), and says how many there are: a hit does work for what it shows,
and the JSON and Chrome trace are streamed a trace at a time, yielding to the worker's other
requests in between (under gevent a switch through the hub), so a large answer never stalls them.
Only loopback clients that did not come through a proxy may look, unless ``REQCTX_LIVE_VIEW_TOKEN`` is set:
then the token is required from everyone (``?token=``, or an ``X-Reqctx-Token`` header), and
anything else gets 403.  The page shows a context's data as the context holds it, so redacted
header values stay ``[redacted]``; the raw WSGI environ is never read here.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, abort, request

from . import tracing
from .chrometrace import chrome_trace_chunks
from .context import get_request_context
from .liveview_render import render_page
from .registry import stats

__all__: list[str] = []  # internal: mounted by ReqCtx for REQCTX_LIVE_VIEW

_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-Ip")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Self-contained: inline styles only, nothing fetched, no scripts.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
}


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class _LiveView:
    def __init__(self, token: str | None, leak_after: float, show: int) -> None:
        self.token = token
        self.leak_after = leak_after
        self.show = show

    def guard(self) -> None:
        """Before every live-view request: keep it out of the traces, then check access."""
        tracing.discard(get_request_context())
        if self.token:
            given = request.args.get("token") or request.headers.get("X-Reqctx-Token") or ""
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                abort(403)
        elif not _is_loopback(request.remote_addr) or any(h in request.headers for h in _PROXY_HEADERS):
            abort(403)

    def limits(self) -> tuple[int, int]:
        """``(live, last)``: how many live contexts and finished requests to show."""
        live = request.args.get("live", default=self.show, type=int)
        last = request.args.get("last", default=self.show, type=int)
        return max(0, live), max(0, last)

    def head(self) -> dict[str, Any]:
        live_count, finished_count = tracing.counts()
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "leak_after_s": self.leak_after,
            "stats": stats(),
            "live_count": live_count,
            "finished_count": finished_count,
        }

    def live(self, limit: int, pace: _Pacer) -> Iterator[dict[str, Any]]:
        """The ``limit`` oldest live contexts' traces, one at a time, paced."""
        for trace in tracing.live_traces(limit):
            pace()
            data = trace.as_dict()
            age_ms = data["age_ms"]  # None once it ended: it may have during a pause
            data["probable_leak"] = age_ms is not None and age_ms > self.leak_after * 1000
            yield data

    @staticmethod
    def finished(last: int, pace: _Pacer) -> Iterator[dict[str, Any]]:
        """The ``last`` finished requests' traces, newest first, one at a time, paced."""
        for trace in tracing.finished_traces(last):
            pace()
            yield trace.as_dict()

    def page(self) -> Response:
        refresh = request.args.get("refresh", type=float)
        live, last = self.limits()
        pace = _Pacer()
        shown = {"live": list(self.live(live, pace)), "finished": list(self.finished(last, pace))}
        data = self.head() | shown
        html = render_page(data, refresh=refresh, token=request.args.get("token"))
        return self._respond(html, "text/html; charset=utf-8")

    def json(self) -> Response:
        live, last = self.limits()
        return self._respond(self._json_chunks(live, last), "application/json")

    def _json_chunks(self, live: int, last: int) -> Iterator[str]:
        pace = _Pacer()
        yield json.dumps(self.head())[:-1] + ', "live": ['
        yield from _joined(json.dumps(trace) for trace in self.live(live, pace))
        yield '], "finished": ['
        yield from _joined(json.dumps(trace) for trace in self.finished(last, pace))
        yield "]}"

    def chrome_trace(self) -> Response:
        live, last = self.limits()
        pace = _Pacer()
        traces = (trace for part in (self.live(live, pace), self.finished(last, pace)) for trace in part)
        response = self._respond(chrome_trace_chunks(traces, pace), "application/json")
        response.headers["Content-Disposition"] = f'attachment; filename="reqctx-{os.getpid()}.json"'
        return response

    @staticmethod
    def _respond(body: str | Iterable[str], mimetype: str) -> Response:
        return Response(body, content_type=mimetype, headers=_SECURITY_HEADERS)


def _joined(items: Iterable[str]) -> Iterator[str]:
    """``items`` with a comma before each but the first (the members of a JSON list)."""
    separator = ""
    for item in items:
        yield separator + item
        separator = ","


class _Pacer:
    """Lets the worker's other requests run once a live-view response has worked for
    :data:`_SLICE_S`: a short ``time.sleep``, which under gevent's monkey-patching waits for
    the next turn of the event loop (its timers and IO run; ``sleep(0)`` would only run
    greenlets already scheduled) and with threads gives up the GIL."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self.since >= _SLICE_S:
            time.sleep(_PAUSE_S)
            self.since = time.perf_counter()


#: Work between two pauses, and the pause (a turn of the event loop, at least).
_SLICE_S = 0.01
_PAUSE_S = 0.0005


def register(app: Flask, option: Callable[[str, Any], Any]) -> None:
    """Mount the live view on ``app`` (called for ``REQCTX_LIVE_VIEW=True``)."""
    prefix = option("live_view_prefix", "/_reqctx")
    token = option("live_view_token", None)
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        raise ValueError("REQCTX_LIVE_VIEW_TOKEN must be a string of at least 16 characters")
    leak_after = float(option("live_view_leak_after", 60.0))
    view = _LiveView(token, leak_after, int(option("live_view_show", 20)))
    blueprint = Blueprint("reqctx_live_view", __name__, url_prefix=prefix)
    blueprint.before_request(view.guard)
    blueprint.add_url_rule("/", "page", view.page)
    blueprint.add_url_rule("/json", "json", view.json)
    blueprint.add_url_rule("/chrome-trace.json", "chrome_trace", view.chrome_trace)
    app.register_blueprint(blueprint)
