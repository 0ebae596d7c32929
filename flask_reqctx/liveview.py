"""The live view: an opt-in blueprint (``REQCTX_LIVE_VIEW=True``) showing the execution traces.

``/_reqctx/`` (the prefix is ``REQCTX_LIVE_VIEW_PREFIX``) renders the contexts live now and the
last finished requests as server-drawn SVG timelines; ``json`` has the same data and
``chrome-trace.json`` the Chrome Trace Event Format (open it in Perfetto).  Only loopback
clients that did not come through a proxy may look, unless ``REQCTX_LIVE_VIEW_TOKEN`` is set:
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
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, abort, request

from . import tracing
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

    def data(self) -> dict[str, Any]:
        live = tracing.live()
        for trace in live:
            trace["probable_leak"] = trace["age_ms"] > self.leak_after * 1000
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "leak_after_s": self.leak_after,
            "stats": stats(),
            "live": live,
            "finished": tracing.finished(),
        }

    def page(self) -> Response:
        refresh = request.args.get("refresh", type=float)
        last = request.args.get("last", default=self.show, type=int)
        token = request.args.get("token")
        html = render_page(self.data(), last=max(0, last), refresh=refresh, token=token)
        return self._respond(html, "text/html; charset=utf-8")

    def json(self) -> Response:
        return self._respond(json.dumps(self.data()), "application/json")

    def chrome_trace(self) -> Response:
        response = self._respond(json.dumps(tracing.to_chrome_trace()), "application/json")
        response.headers["Content-Disposition"] = f'attachment; filename="reqctx-{os.getpid()}.json"'
        return response

    @staticmethod
    def _respond(body: str, mimetype: str) -> Response:
        return Response(body, content_type=mimetype, headers=_SECURITY_HEADERS)


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
