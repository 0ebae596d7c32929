"""Send the current request's id and trace on every ``httpx`` call made during it.

::

    from flask_reqctx.integrations import httpx as reqctx_httpx

    reqctx_httpx.install()   # once, at start-up; idempotent

``install()`` wraps ``httpx.Client.send`` and ``httpx.AsyncClient.send``, the methods every
call goes through (``httpx.get``, ``client.get``/``request``/``stream``, a request built by
hand and sent), on the classes, so clients made before the call, in child greenlets,
threads and asyncio tasks, and by third-party libraries all send
:func:`flask_reqctx.outgoing_headers`:

* outside a request context it does nothing at all;
* a header the caller set (per call, or on the client's ``headers``) is never overridden,
  and a caller's own ``traceparent`` gets no ``tracestate`` of ours;
* ``install(should_propagate=...)``, a ``callable(httpx.Request) -> bool``, keeps the
  request's ids away from hosts it rejects (e.g. only your own domains).

Redirects keep the headers of the request they follow (httpx copies them).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import httpx

from ..context import get_request_context
from ..outgoing import add_missing_headers, propagation_allowed
from ..state import holds_state

__all__ = ["install", "installed", "uninstall"]

Predicate = Callable[[httpx.Request], bool]


class _Installation:
    """The saved ``send`` methods while installed, and the user's predicate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sync_send: Callable[..., Any] | None = None
        self.async_send: Callable[..., Any] | None = None
        self.should_propagate: Predicate | None = None

    def reset(self) -> None:
        uninstall()


_installation = holds_state(_Installation())


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _installation.sync_send is not None


def install(should_propagate: Predicate | None = None) -> None:
    """Make every ``httpx`` client send the current request's headers (idempotent).

    A second call only replaces ``should_propagate``.
    """
    state = _installation
    with state.lock:
        state.should_propagate = should_propagate
        if state.sync_send is not None:
            return
        sync_send = httpx.Client.send
        async_send = httpx.AsyncClient.send

        @functools.wraps(sync_send)
        def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            _add_headers(request)
            return sync_send(self, request, **kwargs)

        @functools.wraps(async_send)
        async def send_async(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
            _add_headers(request)
            return await async_send(self, request, **kwargs)

        state.sync_send, state.async_send = sync_send, async_send
        httpx.Client.send = send  # type: ignore[method-assign]
        httpx.AsyncClient.send = send_async  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore ``httpx.Client.send`` and ``httpx.AsyncClient.send``."""
    state = _installation
    with state.lock:
        if state.sync_send is not None:
            httpx.Client.send = state.sync_send  # type: ignore[method-assign]
        if state.async_send is not None:
            httpx.AsyncClient.send = state.async_send  # type: ignore[method-assign]
        state.sync_send = state.async_send = state.should_propagate = None


def _add_headers(request: httpx.Request) -> None:
    context = get_request_context()
    if context is not None and propagation_allowed(_installation.should_propagate, request):
        add_missing_headers(context, request.headers)  # httpx.Headers: ``in`` ignores case
