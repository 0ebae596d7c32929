"""The Flask side: configuration, lifecycle of a request's context, data, ids, misuse."""

from __future__ import annotations

import logging
import uuid

import flask
import pytest
from flask import Flask, Response, abort, stream_with_context

from flask_reqctx import ReqCtx, default_data, get_request_context, stats
from flask_reqctx.data import REDACTED
from flask_reqctx.signals import context_created, context_destroyed


def _index(app: Flask) -> None:
    @app.get("/")
    def index():
        return get_request_context().to_dict()


def test_view_reads_id_and_headers(app, client):
    _index(app)
    response = client.get("/", headers={"X-Trace-Me": "yes"})
    body = response.get_json()
    assert uuid.UUID(body["request_id"]).version == 4
    assert body["data"]["headers"]["X-Trace-Me"] == "yes"
    assert response.headers["X-Request-ID"] == body["request_id"]


def test_each_request_gets_a_fresh_context(app, client):
    _index(app)
    ids = {client.get("/").get_json()["request_id"] for _ in range(20)}
    assert len(ids) == 20


def test_no_context_outside_and_after_a_request(app, client):
    _index(app)
    assert get_request_context() is None
    client.get("/")
    assert get_request_context() is None
    with app.test_request_context("/"):  # a Flask request context is not ours: no WSGI call
        assert get_request_context() is None


def test_factory_pattern_and_extension_registry():
    ext = ReqCtx(header="X-Correlation-ID")
    apps = [Flask(f"app{i}") for i in range(2)]
    for app in apps:
        ext.init_app(app)
        assert app.extensions["reqctx"] is ext
        assert app.config["REQCTX_HEADER"] == "X-Correlation-ID"


def test_init_app_twice_is_a_clear_error(app):
    with pytest.raises(RuntimeError, match="already initialised"):
        ReqCtx(app)


def test_several_apps_each_with_their_own_options():
    a, b = Flask("a"), Flask("b")
    b.config["REQCTX_HEADER"] = "X-Correlation-ID"
    b.config["REQCTX_RESPONSE_HEADER"] = False
    ReqCtx(a)
    ReqCtx(b)
    for app in (a, b):
        _index(app)
    ra = a.test_client().get("/", headers={"X-Request-ID": "id-a", "X-Correlation-ID": "corr"})
    rb = b.test_client().get("/", headers={"X-Request-ID": "id-a", "X-Correlation-ID": "corr"})
    assert ra.get_json()["request_id"] == "id-a" and ra.headers["X-Request-ID"] == "id-a"
    assert rb.get_json()["request_id"] == "corr"
    assert "X-Correlation-ID" not in rb.headers and "X-Request-ID" not in rb.headers


def test_config_wins_over_constructor_options():
    app = Flask("c")
    app.config["REQCTX_TRUST_INCOMING"] = False
    ReqCtx(app, trust_incoming=True)
    _index(app)
    body = app.test_client().get("/", headers={"X-Request-ID": "given"}).get_json()
    assert body["request_id"] != "given"


@pytest.mark.parametrize("bad", ["", "a" * 129, "has space", "new\nline", "tab\t", "ünï", "x;y"])
def test_invalid_incoming_id_is_replaced_and_never_logged(app, client, caplog, bad):
    _index(app)
    with caplog.at_level(logging.DEBUG, logger="flask_reqctx"):
        response = client.get("/", headers={"X-Request-ID": bad} if "\n" not in bad else {})
        if "\n" in bad:  # Werkzeug's client refuses newlines in headers; go through the environ
            response = client.get("/", environ_overrides={"HTTP_X_REQUEST_ID": bad})
    rid = response.get_json()["request_id"]
    assert rid != bad and uuid.UUID(rid).version == 4
    assert response.headers["X-Request-ID"] == rid
    if bad:
        assert all(bad not in record.getMessage() for record in caplog.records)


def test_id_is_echoed_on_errors(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    @app.get("/abort")
    def aborted():
        abort(418)

    app.config["TESTING"] = False  # let Flask turn the exception into a 500
    for path, status in (("/nowhere", 404), ("/boom", 500), ("/abort", 418)):
        response = client.get(path, headers={"X-Request-ID": f"err{status}"})
        assert response.status_code == status
        assert response.headers["X-Request-ID"] == f"err{status}"


@pytest.mark.parametrize("spelling", ["X-Request-ID", "x-request-id", "X-REQUEST-ID", "x-ReQuEsT-iD"])
def test_app_that_sets_the_header_itself_is_not_doubled(app, client, spelling):
    @app.get("/own")
    def own():
        return "x", 200, {spelling: "mine"}

    assert client.get("/own").headers.getlist("X-Request-ID") == ["mine"]
    assert client.get("/").headers.getlist("X-Request-ID") != ["mine"]  # 404: ours


@pytest.mark.parametrize("spelling", ["X-Correlation-Request-Id", "x-correlation-request-id"])
def test_a_long_echo_header_name_is_matched_in_any_case(spelling):
    app = Flask("long")
    ReqCtx(app, response_header="X-Correlation-Request-Id")
    app.get("/own", endpoint="own")(lambda: ("x", 200, {spelling: "mine"}))
    app.get("/", endpoint="index")(lambda: "x")
    client = app.test_client()
    assert client.get("/own").headers.getlist("X-Correlation-Request-Id") == ["mine"]
    echoed = client.get("/", headers={"X-Request-ID": "theirs"}).headers.getlist("X-Correlation-Request-Id")
    assert echoed == ["theirs"]


def test_legacy_write_starts_the_response_with_the_id():
    """PEP 3333's ``write()`` (an app below the extension that uses it): the response starts
    at the first write, with the id echoed, and what was written comes first."""
    seen = []

    def writing_app(environ, start_response):
        seen.append(get_request_context().request_id)
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]

    app = Flask("writer")
    app.wsgi_app = writing_app
    ReqCtx(app)
    sent = {}
    chunks = []

    def server_start_response(status, headers, exc_info=None):
        sent["status"], sent["headers"] = status, dict(headers)
        return chunks.append

    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}, server_start_response)
    chunks.extend(body)
    assert sent["status"] == "200 OK" and sent["headers"]["X-Request-ID"] == seen[0]
    assert b"".join(chunks) == b"written returned"
    assert stats()["live"] == 0


def test_data_loader_replaces_or_extends():
    replace, extend = Flask("replace"), Flask("extend")
    ReqCtx(replace, data=lambda request: {"path": request.path})
    ReqCtx(extend, data=lambda request: {**default_data(request), "path": request.path})
    for app in (replace, extend):
        _index(app)
    assert replace.test_client().get("/").get_json()["data"] == {"path": "/"}
    data = extend.test_client().get("/", headers={"Authorization": "x"}).get_json()["data"]
    assert data["path"] == "/" and data["headers"]["Authorization"] == REDACTED


def test_data_loader_that_raises_gives_empty_data_and_a_log(caplog):
    app = Flask("loader")
    ReqCtx(app, data=lambda request: 1 / 0)
    _index(app)
    with caplog.at_level(logging.ERROR, logger="flask_reqctx"):
        response = app.test_client().get("/")
    assert response.status_code == 200
    assert response.get_json()["data"] == {}
    assert any("data loader raised" in r.getMessage() for r in caplog.records)


def test_context_exists_before_any_before_request(app, client):
    seen = []

    @app.before_request
    def first():
        seen.append(get_request_context())

    _index(app)
    client.get("/")
    assert seen[0] is not None


def test_short_circuiting_before_request_and_raising_view_destroy(app, client):
    destroyed = []
    context_destroyed.connect(lambda sender, context: destroyed.append(context), weak=False)
    try:

        @app.before_request
        def stop():
            if get_request_context().data["headers"].get("X-Stop"):
                return "stopped", 403

        @app.get("/raise")
        def boom():
            raise ValueError("view failed")

        assert client.get("/raise", headers={"X-Stop": "1"}).status_code == 403
        with pytest.raises(ValueError):  # TESTING propagates the exception
            client.get("/raise")
        assert len(destroyed) == 2
        assert stats()["live"] == 0
    finally:
        context_destroyed.receivers.clear()


def test_signals_sent_with_app_and_context(app, client):
    events = []

    def created(sender, context):
        events.append(("created", sender, context))

    def destroyed(sender, context):
        events.append(("destroyed", sender, context))

    context_created.connect(created)
    context_destroyed.connect(destroyed)
    try:
        _index(app)
        rid = client.get("/").get_json()["request_id"]
    finally:
        context_created.disconnect(created)
        context_destroyed.disconnect(destroyed)
    assert [(kind, sender) for kind, sender, _ in events] == [("created", app), ("destroyed", app)]
    assert events[0][2] is events[1][2] and events[0][2].request_id == rid


def test_signal_receiver_that_raises_is_logged_not_fatal(app, client, caplog):
    def bad(sender, context):
        raise RuntimeError("receiver bug")

    context_created.connect(bad)
    try:
        _index(app)
        with caplog.at_level(logging.ERROR, logger="flask_reqctx"):
            assert client.get("/").status_code == 200
    finally:
        context_created.disconnect(bad)
    assert any("receiver raised" in r.getMessage() for r in caplog.records)


def test_streamed_body_keeps_its_context_until_closed(app):
    seen = []

    @app.get("/stream")
    def stream():
        def chunks():
            for i in range(3):
                seen.append(get_request_context().request_id)
                yield f"{i}\n"

        return Response(chunks())

    client = app.test_client()
    response = client.get("/stream", headers={"X-Request-ID": "streamed"}, buffered=False)
    assert get_request_context() is None  # not bound in the caller between chunks
    assert stats()["live"] == 1  # the request lives until its body is closed
    assert b"".join(response.response) == b"0\n1\n2\n"
    assert get_request_context() is None
    response.close()
    assert seen == ["streamed"] * 3
    assert stats()["live"] == 0


def _chunks_seeing_the_context(seen: list):
    for i in range(2):
        seen.append(get_request_context().request_id)
        yield f"{i}\n"


def test_a_passthrough_generator_body_runs_bound_too(app):
    seen = []
    app.get("/raw")(lambda: Response(_chunks_seeing_the_context(seen), direct_passthrough=True))
    response = app.test_client().get("/raw", headers={"X-Request-ID": "raw"})
    assert response.get_data() == b"0\n1\n"
    response.close()
    assert seen == ["raw", "raw"] and stats()["live"] == 0


def test_a_body_rewrapped_by_an_inner_middleware_runs_bound(app):
    """A middleware set on ``app.wsgi_app`` before the extension that returns its own
    iterable: what it iterates is still produced with the request's context bound."""
    seen = []
    app.get("/stream")(lambda: Response(_chunks_seeing_the_context(seen)))
    flask_app = app.wsgi_app

    def upper_casing(environ, start_response):
        body = flask_app(environ, start_response)
        try:
            yield from (chunk.upper() for chunk in body)
        finally:
            body.close()

    plain = Flask("inner")
    plain.wsgi_app = upper_casing
    ReqCtx(plain)
    response = plain.test_client().get("/stream", headers={"X-Request-ID": "inner"})
    assert response.get_data() == b"0\n1\n"
    response.close()
    assert seen == ["inner", "inner"] and stats()["live"] == 0


def test_a_file_body_reaches_the_server_unwrapped(app, tmp_path):
    """send_file's body is the server's ``wsgi.file_wrapper`` (sendfile): left as it is."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 10_000)

    class ServerFileWrapper:
        def __init__(self, file, block_size=8192):
            self.file, self.block_size = file, block_size

        def __iter__(self):
            return iter(lambda: self.file.read(self.block_size), b"")

        def close(self):
            self.file.close()

    app.get("/file")(lambda: flask.send_file(path))
    sent = {}
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/file",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.file_wrapper": ServerFileWrapper,
    }
    body = app(environ, lambda status, headers, exc_info=None: sent.update(status=status))
    try:
        assert type(body) is ServerFileWrapper and sent["status"] == "200 OK"
        assert stats()["live"] == 0  # nothing runs after the app call: the request is over
        assert b"".join(body) == b"x" * 10_000
    finally:
        body.close()


def test_stream_with_context_runs_once_and_destroys_once(app, client):
    destroyed = []
    context_destroyed.connect(lambda sender, context: destroyed.append(context), weak=False)
    try:

        @app.get("/swc")
        def swc():
            def chunks():
                yield get_request_context().request_id

            return Response(stream_with_context(chunks()))

        response = client.get("/swc", headers={"X-Request-ID": "swc-1"})
        assert response.get_data(as_text=True) == "swc-1"
        response.close()
    finally:
        context_destroyed.receivers.clear()
    assert [c.request_id for c in destroyed] == ["swc-1"]


def test_unclosed_streamed_body_is_collected_not_leaked(app):
    @app.get("/stream")
    def stream():
        return Response(iter([b"a", b"b"]))

    response = app.test_client().get("/stream", buffered=False)
    assert stats()["live"] == 1
    del response  # never closed: the autouse fixture checks live == 0 after gc
