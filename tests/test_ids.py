"""Incoming request ids: which are adopted, which replaced, and that the id is always echoed."""

from __future__ import annotations

import logging
import re
import uuid

import pytest
from flask import Flask, abort, redirect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_reqctx import ReqCtx, get_request_context, is_valid_request_id, new_request_id

SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

VALID_IDS = [
    "abc-123",
    str(uuid.uuid4()),
    str(uuid.uuid4()).upper(),  # uppercase UUIDs are fine (ACID#12)
    uuid.uuid4().hex,  # nginx $request_id
    "0af7651916cd43dd8448eb211c80319c",  # a W3C trace id
    "1-5759e988-bd862e3fe1be46a994272793",  # an X-Ray id
    "a",
    "A.b_c:d-e",
    "x" * 128,
]

INVALID_IDS = [
    "",  # empty
    "x" * 129,  # too long
    "x" * 10_000,
    "has space",
    " leading",
    "trailing ",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "crlf\r\nX-Injected: yes",
    "nul\x00byte",
    "bell\x07",
    "del\x7f",
    "caf\u00e9",  # non-ASCII
    "\u202eevil",  # bidi override
    "emoji\U0001f600",
    "semi;colon",
    "com,ma",
    "quote\"'",
    "a=b",
    "slash/path",
    "<script>",
    "%0d%0a",
]


def _app(**options) -> Flask:
    app = Flask("ids")
    app.config["TESTING"] = True
    ReqCtx(app, **options)

    @app.get("/")
    def index():
        return {"request_id": get_request_context().request_id}

    return app


def _get(client, headers: dict[str, str], path: str = "/"):
    """Send headers through the environ, so values a client would refuse (CR/LF) still arrive."""
    environ = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    return client.get(path, environ_overrides=environ)


def _assert_fresh(rid: str) -> None:
    assert uuid.UUID(rid).version == 4 and rid == str(uuid.UUID(rid))


def _assert_one_safe_echo(response, name: str = "X-Request-ID") -> str:
    values = response.headers.getlist(name)
    assert len(values) == 1, values
    assert SAFE.fullmatch(values[0])
    for key, value in response.headers.items():
        assert "\r" not in key + value and "\n" not in key + value
    return values[0]


# -- validation -------------------------------------------------------------------------


def test_is_valid_request_id():
    for value in VALID_IDS:
        assert is_valid_request_id(value), value
    for value in INVALID_IDS:
        assert not is_valid_request_id(value), value
    for value in (None, 123, b"abc", ["abc"]):
        assert not is_valid_request_id(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=140))
def test_is_valid_request_id_accepts_exactly_the_safe_charset(value):
    assert is_valid_request_id(value) == (SAFE.fullmatch(value) is not None)


def test_new_request_id_is_a_uuid4_string():
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for rid in ids:
        _assert_fresh(rid)


# -- adoption through the extension -------------------------------------------------------


def test_valid_incoming_ids_are_adopted_and_echoed():
    client = _app().test_client()
    for value in VALID_IDS:
        response = _get(client, {"X-Request-ID": value})
        assert response.get_json()["request_id"] == value
        assert _assert_one_safe_echo(response) == value


def test_invalid_incoming_ids_are_replaced_never_logged_nor_echoed(caplog):
    client = _app().test_client()
    with caplog.at_level(logging.DEBUG):
        for value in INVALID_IDS:
            caplog.clear()
            response = _get(client, {"X-Request-ID": value})
            rid = response.get_json()["request_id"]
            _assert_fresh(rid)
            assert _assert_one_safe_echo(response) == rid
            messages = [record.getMessage() for record in caplog.records]
            if value:
                # one warning naming the header and the length, never the value
                assert any("X-Request-Id" in m and f"({len(value)} chars)" in m for m in messages), messages
                assert all(value not in m for m in messages)
                assert all(value not in str(record.args) for record in caplog.records)
            assert not value or value not in response.get_data(as_text=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | st.text(alphabet="abc-_.:\r\n\t \x00\u00e9", max_size=20))
def test_any_incoming_value_gives_a_safe_echoed_id(value):
    client = _APP.test_client()
    response = _get(client, {"X-Request-ID": value})
    rid = response.get_json()["request_id"]
    assert _assert_one_safe_echo(response) == rid
    if is_valid_request_id(value):
        assert rid == value
    else:
        _assert_fresh(rid)


_APP = _app()


def test_header_list_first_valid_wins():
    client = _app(header=["X-Request-ID", "X-Correlation-ID"]).test_client()
    both = _get(client, {"X-Request-ID": "first", "X-Correlation-ID": "second"})
    assert both.get_json()["request_id"] == "first"
    fallback = _get(client, {"X-Request-ID": "bad value", "X-Correlation-ID": "second"})
    assert fallback.get_json()["request_id"] == "second"
    only_second = _get(client, {"X-Correlation-ID": "second"})
    assert only_second.get_json()["request_id"] == "second"
    assert _assert_one_safe_echo(only_second) == "second"  # echoed under the first name
    assert "X-Correlation-ID" not in only_second.headers
    neither = _get(client, {"X-Request-ID": "bad value", "X-Correlation-ID": "also bad"})
    _assert_fresh(neither.get_json()["request_id"])


def test_amazon_trace_id_self_then_root():
    client = _app(header=["X-Request-ID", "X-Amzn-Trace-Id"]).test_client()
    root = "Root=1-5759e988-bd862e3fe1be46a994272793"
    assert _get(client, {"X-Amzn-Trace-Id": root}).get_json()["request_id"] == root[5:]
    with_self = f"Self=1-67891233-abcdef012345678912345678;{root};Sampled=1"
    response = _get(client, {"X-Amzn-Trace-Id": with_self})
    assert response.get_json()["request_id"] == "1-67891233-abcdef012345678912345678"
    assert _assert_one_safe_echo(response) == "1-67891233-abcdef012345678912345678"
    assert "X-Amzn-Trace-Id" not in response.headers  # never echoed inside the composite header
    bad = _get(client, {"X-Amzn-Trace-Id": "Root=1-bad value\r\n"}).get_json()["request_id"]
    _assert_fresh(bad)


def test_only_amazon_header_echoes_under_x_request_id():
    response = _get(_app(header="X-Amzn-Trace-Id").test_client(), {"X-Amzn-Trace-Id": "Root=1-abc"})
    assert response.headers["X-Request-ID"] == "1-abc"


def test_untrusted_incoming_ids_are_never_adopted():
    client = _app(trust_incoming=False).test_client()
    response = _get(client, {"X-Request-ID": "given"})
    _assert_fresh(response.get_json()["request_id"])
    assert _assert_one_safe_echo(response) != "given"


def test_custom_validator_tightens_but_cannot_loosen():
    def strict_uuid(value: str) -> bool:
        try:
            return str(uuid.UUID(value)) == value.lower()
        except ValueError:
            return False

    client = _app(validator=strict_uuid).test_client()
    good = str(uuid.uuid4())
    assert _get(client, {"X-Request-ID": good}).get_json()["request_id"] == good
    _assert_fresh(_get(client, {"X-Request-ID": "abc-123"}).get_json()["request_id"])

    anything = _app(validator=lambda value: True).test_client()
    response = _get(anything, {"X-Request-ID": "evil\r\nX-Injected: 1"})
    _assert_fresh(response.get_json()["request_id"])
    assert "X-Injected" not in response.headers


def test_validator_that_raises_means_invalid(caplog):
    def broken(value: str) -> bool:
        raise RuntimeError("validator bug")

    client = _app(validator=broken).test_client()
    with caplog.at_level(logging.ERROR, logger="flask_reqctx"):
        response = _get(client, {"X-Request-ID": "secret-value"})
    _assert_fresh(response.get_json()["request_id"])
    assert response.status_code == 200
    assert any("validator raised" in r.getMessage() for r in caplog.records)
    assert all("secret-value" not in r.getMessage() for r in caplog.records)


def test_generator_is_used_and_an_invalid_one_falls_back(caplog):
    counter = iter(range(10**6))
    custom = _app(generator=lambda: f"job-{next(counter)}").test_client()
    assert _get(custom, {}).get_json()["request_id"] == "job-0"
    assert _get(custom, {"X-Request-ID": "bad id"}).get_json()["request_id"] == "job-1"

    broken = _app(generator=lambda: "not\r\nsafe").test_client()
    with caplog.at_level(logging.ERROR, logger="flask_reqctx"):
        response = _get(broken, {})
    _assert_fresh(response.get_json()["request_id"])
    assert _assert_one_safe_echo(response) == response.get_json()["request_id"]


def test_response_header_name_and_switch():
    renamed = _get(_app(response_header="X-Trace-Ref").test_client(), {"X-Request-ID": "abc"})
    assert renamed.headers["X-Trace-Ref"] == "abc" and "X-Request-ID" not in renamed.headers

    app = Flask("off")
    app.config["REQCTX_RESPONSE_HEADER"] = False
    ReqCtx(app)
    app.get("/")(lambda: "ok")
    response = _get(app.test_client(), {"X-Request-ID": "abc"})
    assert "X-Request-ID" not in response.headers


def test_id_is_echoed_on_every_kind_of_error_response():
    app = _app()
    app.config["TESTING"] = False  # unhandled exceptions become 500s, as in production

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    @app.get("/abort/<int:code>")
    def aborted(code):
        abort(code)

    @app.get("/redirect")
    def redirected():
        return redirect("/")

    @app.get("/guarded")
    def guarded():
        return "never"

    @app.before_request
    def guard():
        from flask import request

        if request.path == "/guarded":
            abort(401)

    client = app.test_client()
    cases = [
        ("/nowhere", "GET", 404),
        ("/boom", "GET", 500),
        ("/abort/403", "GET", 403),
        ("/abort/503", "GET", 503),
        ("/redirect", "GET", 302),
        ("/guarded", "GET", 401),
        ("/", "POST", 405),
    ]
    for path, method, status in cases:
        rid = f"err-{status}"
        response = client.open(path, method=method, headers={"X-Request-ID": rid})
        assert response.status_code == status, path
        assert _assert_one_safe_echo(response) == rid, path
        bad = client.open(path, method=method, environ_overrides={"HTTP_X_REQUEST_ID": "bad\r\nid"})
        _assert_fresh(_assert_one_safe_echo(bad))


def test_error_handler_sees_the_same_id():
    app = _app()
    app.config["TESTING"] = False

    @app.errorhandler(500)
    def on_error(error):
        return {"error_request_id": get_request_context().request_id}, 500

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    response = app.test_client().get("/boom", headers={"X-Request-ID": "rid-500"})
    assert response.get_json()["error_request_id"] == "rid-500"
    assert response.headers["X-Request-ID"] == "rid-500"


@pytest.mark.parametrize("names", [[], ()])
def test_empty_header_list_is_a_configuration_error(names):
    with pytest.raises(ValueError):
        _app(header=names)


def test_generated_ids_are_canonical_uuid4_unique_across_batches_and_forks():
    import os
    import uuid

    from flask_reqctx.ids import new_request_id

    ids = [new_request_id() for _ in range(3000)]  # several refills of the pool
    assert len(set(ids)) == len(ids)
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not replay the parent's pooled ids
        os.write(write_end, " ".join(new_request_id() for _ in range(10)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_ids = os.read(read_end, 4096).decode().split()
    os.close(read_end)
    os.close(write_end)
    parent_ids = [new_request_id() for _ in range(10)]
    assert len(child_ids) == 10 and not set(child_ids) & set(parent_ids)
