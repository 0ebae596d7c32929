"""The Flask extension: configuration, and the WSGI wrapper that gives each request its context.

The context is bound around the whole ``app.wsgi_app`` call, so it exists before Flask
runs any ``before_request`` and is gone from the calling unit when the call returns (a
test's own thread never keeps it).  A streamed body is produced with its context bound
and its request is destroyed when the server closes the response; any other request is
destroyed when the app call ends.  Either way a view that raises, a short-circuiting
``before_request`` or a ``gevent.Timeout`` takes the same path out.
"""

from __future__ import annotations

import inspect
import logging
import sys
import warnings
import weakref
from collections.abc import Callable, Container, Iterable, Iterator
from functools import partial
from itertools import product
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import InternalServerError
from werkzeug.wsgi import ClosingIterator, FileWrapper

from . import hooks, signals
from .context import RequestContext, current_context
from .data import HeaderRedaction, headers_data
from .ids import (
    COMPOSITE_HEADERS,
    environ_key,
    incoming_request_id,
    is_valid_request_id,
    log_rejected,
    new_request_id,
    request_ids,
)
from .registry import announce_request, end_request_hooked, units_ended, units_opened
from .signals import context_created, context_destroyed
from .state import holds_state
from .tracecontext import TraceContext

__all__ = ["ReqCtx"]

log = logging.getLogger("flask_reqctx")

DataLoader = Callable[[Any], dict[str, Any]]

#: The echo header's name is spelled out in every case (2**letters names) up to this length.
_MAX_SPELLED_LETTERS = 12


class _Settings:
    """One app's resolved configuration (``REQCTX_*`` keys, then constructor options)."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        _warn_unknown_config(app)
        option = partial(_option, app, options)

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
        #: The echo header's every upper/lower-case spelling: "did the app set it itself?" is
        #: then a set lookup per response header, not a ``str.lower()`` call.
        self.response_spellings: Container[str] | None = (
            spellings(self.response_header) if self.response_header is not None else None
        )
        outgoing_header = option("outgoing_header", plain)
        self.outgoing_header: str | None = outgoing_header or None
        self.trust_traceparent = bool(option("trust_traceparent", self.trust_incoming))
        self.validator: Callable[[str], bool] = option("validator", is_valid_request_id)
        # What the default data shows of each header (data.py): the id headers go through the validator.
        redact, keep = option("redact_headers", ()), option("keep_headers", ())
        self.redact = HeaderRedaction(redact, keep, self.header_keys, self.validator)
        generator: Callable[[], str] = option("generator", new_request_id)
        self.fresh_id = generator if generator is new_request_id else _checked(generator)
        #: The environ keys an incoming id is looked for under; none when not trusted.
        self.incoming_keys = self.header_keys if self.trust_incoming else ()
        self.loader: DataLoader | None = options.get("data")
        if self.loader is not None and not callable(self.loader):
            raise TypeError("ReqCtx(data=...) must be a callable(request) -> dict")

    def incoming_id(self, environ: dict[str, Any]) -> tuple[str | None, list[tuple[str, int]]]:
        """The first valid trusted incoming id (None if none), and the ``(header, length)`` of each
        invalid one (logged by the middleware once the context is bound, so under the fresh id)."""
        rejected: list[tuple[str, int]] = []
        return incoming_request_id(environ, self.incoming_keys, self.validator, rejected), rejected


def _checked(generator: Callable[[], str]) -> Callable[[], str]:
    """A user's id generator, whose ids must pass the same rule as incoming ones."""

    def fresh_id() -> str:
        generated = generator()
        if not is_valid_request_id(generated):
            log.error("the id generator returned an invalid id; using a uuid4")
            return new_request_id()
        return generated

    return fresh_id


class _AnyCase:
    """``in`` tests a header name against ``name`` case-insensitively (for a long name)."""

    __slots__ = ("lowered",)

    def __init__(self, name: str) -> None:
        self.lowered = name.lower()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() == self.lowered


def spellings(name: str) -> Container[str]:
    """Every upper/lower-case spelling of a header name (1,024 for ``X-Request-ID``), for
    names of up to :data:`_MAX_SPELLED_LETTERS` letters; a case-insensitive test beyond."""
    if sum(char.lower() != char.upper() for char in name) > _MAX_SPELLED_LETTERS:
        return _AnyCase(name)
    return frozenset(map("".join, product(*({char.lower(), char.upper()} for char in name))))


#: Every option a module reads (``ReqCtx(name=...)`` or ``REQCTX_<NAME>``): a new option is
#: added here, or it is refused as a misspelling.  ``data`` is an option only, no config key.
OPTIONS = frozenset(
    {
        "header",
        "trust_incoming",
        "response_header",
        "outgoing_header",
        "trust_traceparent",
        "validator",
        "redact_headers",
        "keep_headers",
        "generator",
        "data",
        # execution traces and the live view (flask_reqctx.tracing, flask_reqctx.liveview)
        "trace",
        "trace_max_units",
        "trace_keep",
        "live_view",
        "live_view_prefix",
        "live_view_token",
        "live_view_leak_after",
        "live_view_show",
    }
)
_CONFIG_KEYS = frozenset("REQCTX_" + name.upper() for name in OPTIONS - {"data"})


def _check_option_names(options: dict[str, Any]) -> None:
    """A misspelt option is an error, not a silently ignored setting."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise TypeError(
            f"ReqCtx() got unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(OPTIONS))}"
        )


class _WarnedKeys:
    """The unknown config keys warned about already: each is warned about once a process."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def reset(self) -> None:
        self.keys.clear()


_warned = holds_state(_WarnedKeys())


def _warn_unknown_config(app: Flask) -> None:
    """An unknown ``REQCTX_*`` config key is likely a misspelling: a warning naming it (once),
    not an error: the config may hold keys for another version of the package."""
    unknown = sorted(k for k in app.config if k.startswith("REQCTX_") and k not in _CONFIG_KEYS)
    unknown = [key for key in unknown if key not in _warned.keys]
    if not unknown:
        return
    _warned.keys.update(unknown)
    level, frame = 1, inspect.currentframe()
    # the warning points at the app's own call: the first frame outside this module
    while frame is not None and frame.f_back is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    for key in unknown:
        message = f"unknown config key {key!r} for flask_reqctx (first seen on app {app.name!r}): ignored"
        warnings.warn(message, stacklevel=level)


def _option(app: Flask, options: dict[str, Any], name: str, default: Any) -> Any:
    """A setting: the ``REQCTX_<NAME>`` config key, else the constructor option, else ``default``."""
    return app.config.setdefault("REQCTX_" + name.upper(), options.get(name, default))


class ReqCtx:
    """Give every request of an app a :class:`RequestContext` (``app.extensions["reqctx"]``).

    Options (each also a ``REQCTX_<NAME>`` config key, which wins): ``header`` (a name or a
    list, default ``X-Request-ID``; ``X-Amzn-Trace-Id`` and ``traceparent`` are understood),
    ``trust_incoming`` (True), ``response_header`` (the first plain header name; False
    turns the echo off), ``outgoing_header`` (the same default; the name the id is sent
    under by :meth:`outgoing_headers`; False: not sent), ``trust_traceparent`` (defaults
    to ``trust_incoming``: adopt a valid incoming W3C ``traceparent``/``tracestate``),
    ``redact_headers`` and ``keep_headers`` (names added to / exempt from the redaction
    rule of :mod:`flask_reqctx.data`), ``validator`` (a callable(str) -> bool, applied on top of the
    built-in charset/length check, which it can tighten but not loosen), ``generator``;
    and ``data=callable(request) -> dict`` to replace the default data.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        _check_option_names(options)
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "reqctx" in app.extensions:
            raise RuntimeError(f"ReqCtx is already initialised on {app!r}; init_app runs once per app")
        settings = _Settings(app, self.options)
        app.extensions["reqctx"] = self
        # Both wrappers reach the app through a weak reference: the app stays free of
        # reference cycles and is freed when its last reference goes, as a plain Flask app.
        app_ref = weakref.ref(app)
        app.wsgi_app = _serving(app_ref, app.wsgi_app, settings)  # type: ignore[method-assign]
        if settings.loader is not None:
            app.before_request_funcs.setdefault(None, []).insert(0, partial(_load_data, settings.loader))
        # Execution traces and the live view: hook-based, off (nothing enabled, not even
        # imported) unless configured.
        if _option(app, self.options, "trace", False) or _option(app, self.options, "live_view", False):
            from . import tracing

            if tracing.attach(app, settings, partial(_option, app, self.options)):
                from . import liveview

                liveview.register(app, partial(_option, app, self.options))

    def outgoing_headers(self) -> dict[str, str]:
        """Headers to send on a call made for the current request (see
        :func:`flask_reqctx.outgoing_headers`); empty outside any request context."""
        from .outgoing import outgoing_headers

        return outgoing_headers()



def _unbound(app_ref: weakref.ref[Flask], method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` as a function of (app, ...): the plain function when it is bound to the
    app itself (so the wrapper holds the app only weakly), else a caller of ``method``."""
    if getattr(method, "__self__", None) is app_ref():
        function: Callable[..., Any] = method.__func__  # type: ignore[attr-defined]
        return function

    def call(_app: Any, *args: Any) -> Any:
        return method(*args)

    return call


#: Bodies complete when the view returns (a ClosingIterator is Werkzeug's rendered error).
_FINISHED_BODIES = (list, tuple, ClosingIterator)


def _iterable_produced_later(app_iter: Iterable[bytes], environ: dict[str, Any]) -> bool:
    """For what the app returned when it is not a Flask response's (another middleware's
    iterable, a passthrough body): only a list or a file (which the server may send with
    sendfile, so it stays unwrapped) is known to run no user code; anything else is taken
    as produced later, which is always safe."""
    if isinstance(app_iter, (list, tuple, FileWrapper)):
        return False
    file_wrapper = environ.get("wsgi.file_wrapper")
    return not (isinstance(file_wrapper, type) and isinstance(app_iter, file_wrapper))


def _load_data(loader: DataLoader) -> None:
    context = current_context.get()
    if context is None:  # pragma: no cover - the middleware always binds one
        return
    try:
        data = loader(request)
        if not isinstance(data, dict):
            raise TypeError(f"data loader returned {type(data).__name__}, not dict")
    except Exception:
        log.exception("data loader raised; this request's context has empty data")
        data = {}
    context.data = data


def _passes_through(exc: BaseException) -> bool:
    """Whether ``exc`` ends the unit itself, never answered with a 500: an exit, or a
    greenlet's (only once greenlet is imported: nothing else can raise it)."""
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return True
    greenlet = sys.modules.get("greenlet")
    return greenlet is not None and isinstance(exc, greenlet.GreenletExit)


class _WsgiRequestContext(RequestContext):
    """A request's context; its default data is built from the WSGI environ on first read.

    Made by the middleware, which sets its fields: ``_WsgiRequestContext()`` runs no
    ``__init__`` frame (object's own, in C).  It also holds the
    request's response start until the app call is over: the server's
    ``start_response`` is called once, by the middleware, so that an exception escaping
    the app can still be answered with a 500 carrying the id (gunicorn appends the headers
    of a second ``start_response`` to the first call's instead of replacing them).
    """

    __slots__ = ("_headers", "_server_start_response", "_status", "ended")
    # Class attributes of each app's subclass (of_app): the same for all its requests.
    origin: _Settings
    response_spellings: Container[str] | None
    response_header: str | None
    _server_start_response: Callable[..., Any] | None
    _status: str | None
    _headers: list[tuple[str, str]] | None
    ended: bool
    __init__ = object.__init__

    @classmethod
    def of_app(cls, settings: _Settings) -> type[_WsgiRequestContext]:
        """The context class of one app: its settings are class attributes, read by every
        request and stored by none."""
        app_settings = {
            "origin": settings,
            "response_spellings": settings.response_spellings,
            "response_header": settings.response_header,
        }
        return type(cls.__name__, (cls,), {"__slots__": (), "__module__": cls.__module__, **app_settings})

    def _make_data(self, environ: Any) -> dict[str, Any]:
        """The default data, from the environ; empty until a ``data=`` loader has run."""
        settings = self.origin
        if environ is None or settings.loader is not None:
            return {}
        return headers_data(environ, settings.redact)

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        """The ``start_response`` the app sees: adds the id (unless the app set that header
        itself) and records the call; the server's is called once the app call is over."""
        if exc_info is not None and self._server_start_response is None:
            raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late to change
        spelled = self.response_spellings
        if spelled is not None:
            for header in headers:  # a plain loop: cheaper than map(), a dict or str.lower()
                if header[0] in spelled:
                    break
            else:
                # response_header is a str whenever response_spellings is set
                headers.append((self.response_header, self.request_id))  # type: ignore[arg-type]
        self._status, self._headers = status, headers
        return _legacy_write

    def send_response(self) -> Any:
        """Call the server's ``start_response`` with the recorded call, once."""
        start_response = self._server_start_response
        if start_response is None:
            return None
        if self._status is None:
            raise RuntimeError("the WSGI app returned without calling start_response")
        self._server_start_response = None
        return start_response(self._status, self._headers)

    def send_error(self, exc: BaseException) -> list[bytes]:
        """Answer an exception that escaped the app with a 500 carrying the id."""
        log.error("unhandled exception escaped the app; answered 500", exc_info=exc)
        body = InternalServerError().get_body().encode()
        self._status = "500 INTERNAL SERVER ERROR"
        self._headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
        if self.response_header is not None:
            self._headers.append((self.response_header, self.request_id))
        self.send_response()
        return [body]


def _legacy_write(data: bytes) -> None:
    """The ``write()`` that ``start_response`` returns (PEP 3333's legacy API): the response
    starts now.  One function for all requests: it is called during the app call, where the
    request's context is the current one."""
    context = current_context.get()
    write = context.send_response() if isinstance(context, _WsgiRequestContext) else None
    if write is not None:
        write(data)


def _serving(
    app_ref: weakref.ref[Flask], wsgi_app: Any, settings: _Settings
) -> Callable[..., Iterable[bytes]]:
    """The function that replaces ``app.wsgi_app``: one request context per call, unbound
    when the call returns.  A closure: what it reads per request are fast local names, and
    Flask's call of it is a Python-to-Python call (an instance's ``__call__`` is reached
    through C and costs a frame of its own)."""
    middleware = _RequestMiddleware(app_ref)
    wsgi_app = _unbound(app_ref, wsgi_app)
    # next() of an iterator is the cheapest call: the pool itself, or a user's generator's
    fresh_ids = request_ids if settings.fresh_id is new_request_id else iter(settings.fresh_id, None)
    # None (never a WSGI environ key) when incoming ids / traceparent are not trusted.
    first_key = settings.incoming_keys[0] if settings.incoming_keys else None
    more_keys = bool(settings.incoming_keys[1:])
    traceparent_key = "HTTP_TRACEPARENT" if settings.trust_traceparent else None
    set_context, reset_context = current_context.set, current_context.reset
    context_class = _WsgiRequestContext.of_app(settings)

    def open_request(environ: dict[str, Any], start_response: Callable[..., Any]) -> _WsgiRequestContext:
        """The request's context: built (a C-level type call, no ``__init__`` frame), its
        id chosen, counted in ``live``, init fired."""
        context: _WsgiRequestContext = context_class()
        context._data = context._trace = context.unit = context._status = context._headers = None
        context._load = environ
        context._server_start_response = start_response
        context.ended = False
        # The common case, no id header and no traceparent: two dict lookups.
        if first_key in environ or traceparent_key in environ or more_keys:
            _adopt_incoming(context, environ, settings)
        else:
            context.request_id = next(fresh_ids)
        next(units_opened)
        if hooks.enabled.lifecycle:
            announce_request(context)
        return context

    def reqctx_wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Short up to the app call on purpose: gevent's spawning_stack capture reads this
        # frame's line number for every greenlet the request spawns, by a walk of the line
        # table up to the current instruction.
        context = open_request(environ, start_response)
        token = set_context(context)
        try:
            if context_created.receivers:
                signals.send_created(app_ref(), context)
            app_iter: Iterable[bytes] = wsgi_app(app_ref(), environ, context.start_response)
            # Whether user code may still run once this call returns (a body produced after
            # the view returns, call_on_close callbacks): read off the Response itself, at no
            # cost to Flask's own calls.  Werkzeug hands a response's body back as a
            # ClosingIterator whose last callback is the response's close().
            try:
                response = app_iter._callbacks[-1].__self__  # type: ignore[attr-defined]
                later = response._on_close or not (
                    isinstance(response.response, _FINISHED_BODIES) or response.direct_passthrough
                )
            except (AttributeError, IndexError):
                later = _iterable_produced_later(app_iter, environ)
            if later:
                return _StreamedBody(app_iter, context, middleware)
            if context._server_start_response is not None:  # send_response(), inline
                if context._status is None:
                    raise RuntimeError("the WSGI app returned without calling start_response")
                context._server_start_response = None
                start_response(context._status, context._headers)
            context.ended = True  # what finish() does, inline
            next(units_ended)
            if hooks.enabled.lifecycle or context_destroyed.receivers or context.unit is not None:
                end_request_hooked(context, app_ref())
            return app_iter
        except BaseException as exc:
            return middleware.fail(context, exc)
        finally:
            reset_context(token)

    return reqctx_wsgi_app


def _adopt_incoming(context: _WsgiRequestContext, environ: dict[str, Any], settings: _Settings) -> None:
    """The request's id and trace from its headers (the first valid id, else a fresh one; a
    valid ``traceparent``), before init hooks and signals can look at them.  Invalid ones
    are logged with the context bound (so the records carry the fresh id); never their values."""
    request_id, rejected = settings.incoming_id(environ)
    context.request_id = request_id or settings.fresh_id()
    traceparent = environ.get("HTTP_TRACEPARENT") if settings.trust_traceparent else None
    if traceparent is not None:
        context._trace = TraceContext.from_headers(traceparent, environ.get("HTTP_TRACESTATE"))
    if not rejected and (traceparent is None or context._trace is not None):
        return
    token = current_context.set(context)
    try:
        for name, length in rejected or ():
            log_rejected(name, length)
        if traceparent is not None and context._trace is None:
            log.debug("ignored an invalid traceparent (%d chars)", len(traceparent))
    finally:
        current_context.reset(token)


class _RequestMiddleware:
    """The request's end, and an exception escaping the app: the rare paths of the WSGI call."""

    def __init__(self, app_ref: weakref.ref[Flask]) -> None:
        self.app_ref = app_ref

    def fail(self, context: _WsgiRequestContext, exc: BaseException) -> list[bytes]:
        """An exception escaped the app (or a streamed body's first chunk): answer it with a
        500 carrying the id, unless it must propagate (``PROPAGATE_EXCEPTIONS``, testing or
        debug, as Flask decides; a greenlet kill; an exit) or the response has started."""
        try:
            app = self.app_ref()
            propagate = app is None or app.config["PROPAGATE_EXCEPTIONS"]
            if propagate is None:
                propagate = app.testing or app.debug  # type: ignore[union-attr]
            if propagate or _passes_through(exc) or context._server_start_response is None:
                raise exc
            return context.send_error(exc)
        finally:
            self.finish(context)

    def finish(self, context: _WsgiRequestContext) -> None:
        """The request's end: exactly once, by whichever path gets here first."""
        if context.ended:
            return
        context.ended = True
        next(units_ended)
        end_request_hooked(context, self.app_ref())


class _StreamedBody:
    """A body produced after the app call, with its request's context bound; the request
    ends at ``close()`` (also after ``call_on_close`` callbacks, which run bound)."""

    __slots__ = ("_app_iter", "_context", "_first", "_iterator", "_middleware")

    def __init__(
        self, app_iter: Iterable[bytes], context: _WsgiRequestContext, middleware: _RequestMiddleware
    ) -> None:
        self._app_iter = app_iter
        self._context = context
        self._middleware = middleware
        self._iterator: Iterator[bytes] = iter(app_iter)
        # The first chunk is made now, before the response starts: an exception there is
        # still answered with a 500 carrying the id (the caller has the context bound).
        try:
            self._first: bytes | None = next(self._iterator, None)
        except BaseException:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
            raise
        context.send_response()

    def __iter__(self) -> _StreamedBody:
        return self

    def __next__(self) -> bytes:
        first = self._first
        if first is not None:
            self._first = None
            return first
        token = current_context.set(self._context)
        try:
            return next(self._iterator)
        finally:
            current_context.reset(token)

    def close(self) -> None:
        token = current_context.set(self._context)
        try:
            close = getattr(self._app_iter, "close", None)
            if close is not None:
                close()
        finally:
            current_context.reset(token)
            self._middleware.finish(self._context)

    def __del__(self) -> None:
        # A caller that never closes the body (Werkzeug's unbuffered test client) must not leak.
        self._middleware.finish(self._context)
