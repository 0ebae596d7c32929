"""Every response carries the id: exceptions that escape the Flask app are answered by the
extension with a 500 that has exactly one id and consistent headers; ``call_on_close``
callbacks run with the request's context bound."""

from __future__ import annotations

import logging

import gevent
import pytest
from flask import Flask, Response
from werkzeug.test import Client

from flask_reqctx import ReqCtx, get_request_context, stats
from flask_reqctx.logging import RequestIdFilter


@pytest.fixture
def prod_app() -> Flask:
    """An app as deployed: no TESTING/DEBUG, so Flask does not propagate exceptions."""
    app = Flask("prod_app")
    ReqCtx(app)
    return app


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    handler = _Records()
    logger = logging.getLogger("flask_reqctx")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def _raw_call(app: Flask, path: str, request_id: str) -> tuple[list[tuple[str, object]], bytes]:
    """Call the WSGI app as a server does; every start_response call is recorded."""
    calls: list[tuple[str, object]] = []

    def start_response(status: str, headers: list, exc_info: object = None) -> object:
        calls.append((status, list(headers)))
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "t", "SERVER_PORT": "80",
        "wsgi.url_scheme": "http", "HTTP_X_REQUEST_ID": request_id, "wsgi.input": None,
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    body_iter = app(environ, start_response)
    try:
        body = b"".join(body_iter)
    finally:
        close = getattr(body_iter, "close", None)
        if close is not None:
            close()
    return calls, body


def _teardown_raises(app: Flask) -> None:
    @app.get("/teardown-raises")
    def view():
        return "fine so far"

    @app.teardown_request
    def teardown(exc):
        raise RuntimeError("teardown failed")


def _stream_raises_first(app: Flask) -> None:
    @app.get("/stream-raises")
    def view():
        def body():
            raise RuntimeError("no first chunk")
            yield b"never"

        return Response(body())


def _timeout_escapes(app: Flask) -> None:
    @app.get("/timeout")
    def view():
        with gevent.Timeout(0.001):
            gevent.sleep(1)
        return "unreachable"


@pytest.mark.parametrize("path, make", [
    ("/teardown-raises", _teardown_raises),
    ("/stream-raises", _stream_raises_first),
    ("/timeout", _timeout_escapes),
])
def test_an_escaping_exception_is_a_500_with_one_id(prod_app, records, path, make):
    make(prod_app)
    calls, body = _raw_call(prod_app, path, "err-1")
    assert len(calls) == 1, calls  # the server is asked once: no appended second header set
    status, headers = calls[0]
    assert status.startswith("500")
    assert [v for k, v in headers if k.lower() == "x-request-id"] == ["err-1"]
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    assert lengths == [str(len(body))]
    logged = [r for r in records if "answered 500" in r.getMessage()]
    assert len(logged) == 1 and logged[0].request_id == "err-1" and logged[0].exc_info is not None
    assert get_request_context() is None
    assert stats()["live"] == 0


def test_greenlet_exit_and_system_exit_pass_through(prod_app):
    @prod_app.get("/exit")
    def view():
        raise SystemExit(3)

    @prod_app.get("/kill")
    def kill():
        raise gevent.GreenletExit()

    with pytest.raises(SystemExit):
        _raw_call(prod_app, "/exit", "x")
    with pytest.raises(gevent.GreenletExit):
        _raw_call(prod_app, "/kill", "y")


def test_propagate_exceptions_still_propagates(prod_app):
    prod_app.config["PROPAGATE_EXCEPTIONS"] = True
    _teardown_raises(prod_app)
    with pytest.raises(RuntimeError, match="teardown failed"):
        _raw_call(prod_app, "/teardown-raises", "p")


def test_normal_responses_are_untouched(prod_app):
    @prod_app.get("/ok")
    def ok():
        return "hello"

    @prod_app.get("/own-id")
    def own():
        return "", 200, {"x-request-id": "set-by-the-app"}

    calls, body = _raw_call(prod_app, "/ok", "ok-1")
    assert body == b"hello" and calls[0][0] == "200 OK"
    assert [v for k, v in calls[0][1] if k == "X-Request-ID"] == ["ok-1"]
    calls, _ = _raw_call(prod_app, "/own-id", "ok-2")
    assert [v for k, v in calls[0][1] if k.lower() == "x-request-id"] == ["set-by-the-app"]


@pytest.mark.parametrize("streamed", [False, True])
def test_call_on_close_runs_with_the_request_context(prod_app, streamed):
    seen: list[str | None] = []

    @prod_app.get("/closing")
    def view():
        response = Response((b"x" for _ in range(3)) if streamed else "plain")
        response.call_on_close(lambda: seen.append(getattr(get_request_context(), "request_id", None)))
        return response

    client = Client(prod_app)
    response = client.get("/closing", headers={"X-Request-ID": "closing-1"})
    assert response.headers["X-Request-ID"] == "closing-1"
    response.close()
    assert seen == ["closing-1"]
    assert get_request_context() is None
    assert stats()["live"] == 0
