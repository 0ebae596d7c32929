"""The Flask extension: configuration, and the WSGI wrapper that gives each request its context.

The context is bound around the whole ``app.wsgi_app`` call, so it exists before Flask
runs any ``before_request`` and is gone from the calling unit when the call returns (a
test's own thread never keeps it).  A streamed body is produced with its context bound
and its request is destroyed when the server closes the response; any other request is
destroyed when the app call ends.  Either way a view that raises, a short-circuiting
``before_request`` or a ``gevent.Timeout`` takes the same path out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

from flask import Flask, Response, request
from werkzeug.wsgi import ClosingIterator

from . import signals
from .context import RequestContext, current_context, current_unit
from .data import DEFAULT_REDACT_HEADERS, headers_data, redact_set
from .ids import (
    COMPOSITE_HEADERS,
    environ_key,
    incoming_request_id,
    is_valid_request_id,
    log_rejected,
    new_request_id,
)
from .registry import Unit, bind_unit, execution_id, open_unit, unbind
from .signals import context_created, context_destroyed
from .tracecontext import TraceContext

__all__ = ["ReqCtx", "settings_for"]

log = logging.getLogger("flask_reqctx")

DataLoader = Callable[[Any], dict[str, Any]]

_settings: WeakKeyDictionary[Flask, _Settings] = WeakKeyDictionary()


class _Settings:
    """One app's resolved configuration (``REQCTX_*`` keys, then constructor options)."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        def option(name: str, default: Any) -> Any:
            key = "REQCTX_" + name.upper()
            return app.config.setdefault(key, options.get(name, default))

        headers = option("header", "X-Request-ID")
        self.headers: tuple[str, ...] = (headers,) if isinstance(headers, str) else tuple(headers)
        if not self.headers:
            raise ValueError("REQCTX_HEADER must name at least one header")
        self.header_keys = tuple(environ_key(name) for name in self.headers)
        self.trust_incoming = bool(option("trust_incoming", True))
        # Our id goes out under a plain header: never inside a traceparent or an X-Amzn-Trace-Id.
        plain = next((name for name in self.headers if name.lower() not in COMPOSITE_HEADERS), "X-Request-ID")
        response_header = option("response_header", plain)
        self.response_header: str | None = response_header or None
        outgoing_header = option("outgoing_header", plain)
        self.outgoing_header: str | None = outgoing_header or None
        self.trust_traceparent = bool(option("trust_traceparent", self.trust_incoming))
        self.redact = redact_set(option("redact_headers", DEFAULT_REDACT_HEADERS))
        self.validator: Callable[[str], bool] = option("validator", is_valid_request_id)
        self.generator: Callable[[], str] = option("generator", new_request_id)
        self.loader: DataLoader | None = options.get("data")
        if self.loader is not None and not callable(self.loader):
            raise TypeError("ReqCtx(data=...) must be a callable(request) -> dict")

    def choose_id(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, int]] | None]:
        """The request's id, and the ``(header, length)`` of each invalid incoming one
        (logged by the middleware once the context is bound, so under the fresh id)."""
        rejected: list[tuple[str, int]] | None = None
        if self.trust_incoming:
            for key in self.header_keys:
                if key in environ:  # the common case, no header at all, allocates nothing
                    rejected = []
                    incoming = incoming_request_id(environ, self.header_keys, self.validator, rejected)
                    if incoming is not None:
                        return incoming, rejected
                    break
        generator = self.generator
        generated = generator()
        if generator is not new_request_id and not is_valid_request_id(generated):
            log.error("flask_reqctx: the id generator returned an invalid id; using a uuid4")
            generated = new_request_id()
        return generated, rejected


def settings_for(app: Flask) -> _Settings:
    try:
        return _settings[app]
    except KeyError:
        raise RuntimeError(f"ReqCtx is not initialised on {app!r}") from None


class ReqCtx:
    """Give every request of an app a :class:`RequestContext` (``app.extensions["reqctx"]``).

    Options (each also a ``REQCTX_<NAME>`` config key, which wins): ``header`` (a name or a
    list, default ``X-Request-ID``; ``X-Amzn-Trace-Id`` and ``traceparent`` are understood),
    ``trust_incoming`` (True), ``response_header`` (the first plain header name; False
    turns the echo off), ``outgoing_header`` (the same default; the name the id is sent
    under by :meth:`outgoing_headers`; False: not sent), ``trust_traceparent`` (defaults
    to ``trust_incoming``: adopt a valid incoming W3C ``traceparent``/``tracestate``),
    ``redact_headers``, ``validator`` (a callable(str) -> bool, applied on top of the
    built-in charset/length check, which it can tighten but not loosen), ``generator``;
    and ``data=callable(request) -> dict`` to replace the default data.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "reqctx" in app.extensions:
            raise RuntimeError(f"ReqCtx is already initialised on {app!r}; init_app runs once per app")
        settings = _Settings(app, self.options)
        _settings[app] = settings
        app.extensions["reqctx"] = self
        app.wsgi_app = _RequestMiddleware(app, app.wsgi_app, settings)  # type: ignore[method-assign]
        # Every response Flask makes (error handlers' too) passes process_response; wrapping
        # it on the instance costs one call, where an after_request function costs an
        # ensure_sync check per request.
        app.process_response = partial(_process_response, app.process_response)  # type: ignore[method-assign]
        if settings.loader is not None:
            app.before_request_funcs.setdefault(None, []).insert(0, partial(_load_data, settings.loader))
        # Execution traces and the live view: hook-based, off (nothing enabled) unless configured.
        from .tracing import attach

        attach(app, settings, self.options)

    def outgoing_headers(self) -> dict[str, str]:
        """Headers to send on a call made for the current request (see
        :func:`flask_reqctx.outgoing_headers`); empty outside any request context."""
        from .outgoing import outgoing_headers

        return outgoing_headers()


def _process_response(process_response: Callable[[Response], Response], response: Response) -> Response:
    """A body produced after the view returns must keep its context until ``close()``.

    Not a sequence means a generator or iterator; excluded are file bodies (no user code
    runs) and the ``ClosingIterator`` that Werkzeug makes when it renders an error
    (``force_type``): such a body is produced already.
    """
    response = process_response(response)
    body = response.response
    if not isinstance(body, (list, tuple)) and not response.direct_passthrough:
        if not isinstance(body, ClosingIterator):
            unit = current_unit.get()
            if unit is not None:
                unit.streamed = True
    return response


def _load_data(loader: DataLoader) -> None:
    context = current_context.get()
    if context is None:  # pragma: no cover - the middleware always binds one
        return
    try:
        data = loader(request)
        if not isinstance(data, dict):
            raise TypeError(f"data loader returned {type(data).__name__}, not dict")
    except Exception:
        log.exception("flask_reqctx: data loader raised; this request's context has empty data")
        data = {}
    context.data = data


class _WsgiRequestContext(RequestContext):
    """A request's context; its default data is built from the WSGI environ on first read."""

    __slots__ = ()

    def __init__(self, request_id: str, environ: dict[str, Any] | None, settings: _Settings) -> None:
        self.request_id = request_id
        self._data = None
        self._load = environ  # None with a data loader: it sets the data in before_request
        self._trace = None
        self._origin = settings

    def _make_data(self, environ: Any) -> dict[str, Any]:
        return headers_data(environ, self._origin.redact) if environ is not None else {}


class _RequestMiddleware:
    """Wraps ``app.wsgi_app``: one unit of kind "request" per call."""

    def __init__(self, app: Flask, wsgi_app: Any, settings: _Settings) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.settings = settings

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        settings = self.settings
        request_id, rejected = settings.choose_id(environ)
        context = _WsgiRequestContext(request_id, environ if settings.loader is None else None, settings)
        traceparent = environ.get("HTTP_TRACEPARENT") if settings.trust_traceparent else None
        if traceparent is not None:  # before init hooks and signals can look at the trace
            context._trace = TraceContext.from_headers(traceparent, environ.get("HTTP_TRACESTATE"))
        # The trigger is the server's unit (a connection greenlet, a worker thread), which
        # gets its own id on first use: once per connection, not per request.
        unit = open_unit("request", context, context, execution_id())
        context_token = current_context.set(context)
        unit_token = current_unit.set(unit)
        # Logged once bound, so the records carry the request's (fresh) id; never the values.
        if rejected:
            for name, length in rejected:
                log_rejected(name, length)
        if traceparent is not None and context._trace is None:
            log.debug("flask_reqctx: ignored an invalid traceparent (%d chars)", len(traceparent))
        if context_created.receivers:
            signals.send_created(self.app, context)
        if settings.response_header is not None:
            start_response = partial(_echo_id, start_response, settings.response_header, request_id)
        try:
            app_iter = self.wsgi_app(environ, start_response)
        except BaseException:
            current_unit.reset(unit_token)
            current_context.reset(context_token)
            self.finish(unit)
            raise
        current_unit.reset(unit_token)
        current_context.reset(context_token)
        if unit.streamed:
            return _StreamedBody(app_iter, unit, self.finish)
        if unit.end() and context_destroyed.receivers:
            signals.send_destroyed(self.app, context)
        return app_iter

    def finish(self, unit: Unit) -> None:
        if unit.end() and context_destroyed.receivers:
            signals.send_destroyed(self.app, unit.context)


def _echo_id(
    start_response: Callable[..., Any],
    name: str,
    request_id: str,
    status: str,
    headers: list,
    exc_info: Any = None,
) -> Any:
    """``start_response`` that adds the request id, unless the app already set that header."""
    size, lowered = len(name), name.lower()
    for key, _value in headers:
        if len(key) == size and key.lower() == lowered:
            break
    else:
        headers.append((name, request_id))
    return start_response(status, headers, exc_info)


class _StreamedBody:
    """A streamed response body, produced with its request's context bound."""

    __slots__ = ("_app_iter", "_finish", "_iterator", "_unit")

    def __init__(self, app_iter: Iterable[bytes], unit: Unit, finish: Callable[[Unit], None]) -> None:
        self._app_iter = app_iter
        self._iterator: Iterator[bytes] = iter(app_iter)
        self._unit = unit
        self._finish = finish

    def __iter__(self) -> _StreamedBody:
        return self

    def __next__(self) -> bytes:
        tokens = bind_unit(self._unit)
        try:
            return next(self._iterator)
        finally:
            unbind(tokens)

    def close(self) -> None:
        tokens = bind_unit(self._unit)
        try:
            close = getattr(self._app_iter, "close", None)
            if close is not None:
                close()
        finally:
            unbind(tokens)
            self._finish(self._unit)

    def __del__(self) -> None:
        # A caller that never closes the body (Werkzeug's unbuffered test client) must not leak.
        self._finish(self._unit)
