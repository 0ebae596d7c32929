"""Send the current request's id and trace on every ``requests`` call made during it.

::

    from flask_reqctx.integrations import requests as reqctx_requests

    reqctx_requests.install()   # once, at start-up; idempotent

``install()`` wraps ``requests.Session.send``, the one method every call goes through
(``requests.get``, ``Session.request``, a prepared request sent by hand, each redirect),
so every session, including ones made by third-party libraries, sends
:func:`flask_reqctx.outgoing_headers`:

* outside a request context it does nothing at all;
* a header the caller set (per call, or on ``Session.headers``) is never overridden (and
  a caller's own ``traceparent`` gets no ``tracestate`` of ours);
  to keep the request's ids away from a host, pass ``install(should_propagate=...)``,
  a ``callable(prepared_request) -> bool`` (e.g. only to your own domains).

A header removed with ``headers={"X-Request-ID": None}`` cannot be told from one never
set, so it is added back; use ``should_propagate`` for that.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import requests

from ..context import current_context
from ..outgoing import add_missing_headers, propagation_allowed
from ..state import holds_state

__all__ = ["install", "installed", "uninstall"]


class _Installation:
    """``requests.Session.send`` as it was before :func:`install` (None: not installed), and
    the ``should_propagate`` predicate; :meth:`reset` is :func:`uninstall`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.original_send: Callable[..., Any] | None = None
        self.should_propagate: Callable[[requests.PreparedRequest], bool] | None = None

    def reset(self) -> None:
        uninstall()


_installation = holds_state(_Installation())


def installed() -> bool:
    return _installation.original_send is not None


def install(should_propagate: Callable[[requests.PreparedRequest], bool] | None = None) -> None:
    """Make every ``requests`` session send the current request's headers (idempotent).

    A second call only replaces ``should_propagate``.
    """
    with _installation.lock:
        _installation.should_propagate = should_propagate
        if _installation.original_send is not None:
            return
        original = requests.Session.send

        @functools.wraps(original)
        def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
            context = current_context.get()
            if context is not None:
                _add_headers(context, request)
            return original(self, request, **kwargs)

        _installation.original_send = original
        requests.Session.send = send  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore ``requests.Session.send``."""
    with _installation.lock:
        if _installation.original_send is not None:
            requests.Session.send = _installation.original_send  # type: ignore[method-assign]
        _installation.original_send = _installation.should_propagate = None


def _add_headers(context: Any, request: requests.PreparedRequest) -> None:
    if propagation_allowed(_installation.should_propagate, request):
        add_missing_headers(context, request.headers)  # a CaseInsensitiveDict: ``in`` ignores case
