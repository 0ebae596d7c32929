"""Credentials stay out of the request data: the name rule, user additions, the opt-out,
rejected request ids; through the Flask test client and a real ``gunicorn -k gevent``."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask
from werkzeug.test import TestResponse as Response

from flask_reqctx import ReqCtx, default_data, get_request_context
from flask_reqctx.data import _CACHE_SIZE, REDACTED, HeaderRedaction, headers_data
from flask_reqctx.logging import RequestIdFilter

#: Credential headers that reached the data verbatim before the name rule (the issue's 15
#: named ones first), each with a distinct secret value.
CREDENTIAL_HEADERS = [
    "X-Auth-Token",
    "X-CSRF-Token",
    "X-XSRF-Token",
    "X-Access-Token",
    "X-Amz-Security-Token",
    "Api-Key",
    "X-Goog-Api-Key",
    "Ocp-Apim-Subscription-Key",
    "Private-Token",
    "X-Vault-Token",
    "Cf-Access-Jwt-Assertion",
    "X-Amzn-Oidc-Accesstoken",
    "X-Hub-Signature-256",
    "Authentication",
    "X-Client-Secret",
    "X-CSRFToken",
    "X-Session-Id",
    "X-Gitlab-Token",
    "X-Shopify-Hmac-Sha256",
    "Stripe-Signature",
    "X-Forwarded-Client-Cert",
    "X-Goog-Iap-Jwt-Assertion",
    "X-Amzn-Oidc-Data",
    "X-Ms-Client-Principal",
    "X-Github-Otp",
    "Cf-Access-Client-Secret",
    "X-Password",
    "X-Endpoint-Api-Userinfo",
    "DPoP",
    "X-Api-Credentials",
]
#: The five names redacted before (all still are).
OLD_DEFAULTS = ["Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key"]
#: Ordinary headers, shown: none of them may trip the rule.
ORDINARY_HEADERS = {
    "Keep-Alive": "timeout=5",
    "Accept": "application/json",
    "Accept-Language": "en",
    "Cache-Control": "no-cache",
    "Origin": "http://127.0.0.1",
    "Referer": "http://127.0.0.1/page",
    "X-Forwarded-For": "10.0.0.1",
    "X-Forwarded-Proto": "https",
    "X-Correlation-Id": "corr-1",
    "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "Sec-Fetch-Mode": "cors",
    "X-Requested-With": "XMLHttpRequest",
    "If-None-Match": '"abc"',
    "Upgrade-Insecure-Requests": "1",
    "X-Keyboard-Layout": "dvorak",
    "X-Hotpot": "1",
}


def _secret(name: str) -> str:
    return f"s3cret-{name.lower()}-value"


def _context_app(**options: object) -> Flask:
    app = Flask("redaction")
    app.config.update({f"REQCTX_{k.upper()}": v for k, v in options.items()})
    ReqCtx(app)

    @app.get("/")
    def index():
        return get_request_context().to_dict()

    return app


def _get(app: Flask, path: str, headers: dict[str, str]) -> Response:
    """``GET path``; a ``Cookie`` goes through the client's jar (it drops the raw header)."""
    client = app.test_client()
    headers = dict(headers)
    if "Cookie" in headers:
        client.set_cookie("c", headers.pop("Cookie"))
    return client.get(path, headers=headers)


def _data(app: Flask, headers: dict[str, str]) -> dict[str, str]:
    return _get(app, "/", headers).get_json()["data"]["headers"]


def test_every_credential_header_is_redacted_by_default():
    names = CREDENTIAL_HEADERS + OLD_DEFAULTS
    assert len(CREDENTIAL_HEADERS) >= 25
    body = _get(_context_app(), "/", {n: _secret(n) for n in names}).get_data(True)
    shown = json.loads(body)["data"]["headers"]
    for name in names:
        key = name.replace("_", "-").title()
        assert shown[key] == REDACTED, name
        assert _secret(name) not in body, name


def test_ordinary_headers_are_shown():
    shown = _data(_context_app(), ORDINARY_HEADERS)
    for name, value in ORDINARY_HEADERS.items():
        assert shown[name.title()] == value, name


@pytest.mark.parametrize(
    ("name", "redacted"),
    [
        ("Keep-Alive", False),  # no word ends in "key"
        ("X-Keyboard", False),
        ("X-Hotpot", False),  # "otp" only as a whole word
        ("X-Otp", True),
        ("X-Apikey", True),
        ("X-Api-Keys", True),
        ("X-Key-Id", True),
        ("Idempotency-Key", True),  # errs on the side of hiding: REQCTX_KEEP_HEADERS shows it
        ("Sec-Websocket-Key", True),
        ("Sec-Websocket-Protocol", True),  # explicit default: bearer tokens ride in it
        ("x-upper-AUTH-case", True),
    ],
)
def test_name_rule_decisions(name, redacted):
    assert (_data(_context_app(), {name: "v"})[name.title()] == REDACTED) is redacted


def test_user_names_add_to_the_defaults():
    for value in (["X-Internal-Account", "x_tenant_pin"], "X-Internal-Account"):
        app = _context_app(redact_headers=value)
        shown = _data(app, {"X-Internal-Account": "acct", "X-Tenant-Pin": "1234", "Authorization": "a"})
        assert shown["X-Internal-Account"] == REDACTED
        assert shown["Authorization"] == REDACTED
        assert shown["X-Tenant-Pin"] == (REDACTED if isinstance(value, list) else "1234")
    app = Flask("option")
    ReqCtx(app, redact_headers=["X-Internal-Account"])  # the constructor option, same meaning

    @app.get("/")
    def index():
        return get_request_context().to_dict()

    shown = _data(app, {"X-Internal-Account": "acct", "Cookie": "c=1", "X-Other": "o"})
    assert shown["X-Internal-Account"] == shown["Cookie"] == REDACTED
    assert shown["X-Other"] == "o"


def test_keep_headers_is_the_explicit_opt_out():
    app = _context_app(keep_headers=["Idempotency-Key", "sec-websocket-protocol"])
    shown = _data(
        app, {"Idempotency-Key": "op-1", "Sec-WebSocket-Protocol": "chat", "X-Auth-Token": "t", "Cookie": "c"}
    )
    assert shown["Idempotency-Key"] == "op-1"
    assert shown["Sec-Websocket-Protocol"] == "chat"
    assert shown["X-Auth-Token"] == shown["Cookie"] == REDACTED


def test_bad_redaction_config_is_a_clear_error():
    with pytest.raises(ValueError, match="both list"):
        _context_app(redact_headers=["X-Token"], keep_headers=["x-token"])
    with pytest.raises(TypeError, match="REQCTX_KEEP_HEADERS must be header names"):
        _context_app(keep_headers=[1])
    with pytest.raises(TypeError, match="REQCTX_REDACT_HEADERS must be header names"):
        _context_app(redact_headers=[""])


BAD_ID = "rejected id with spaces rawvalue-7f3a"


def test_a_rejected_request_id_is_redacted_and_never_logged(caplog):
    app = _context_app(keep_headers=["X-Request-ID"])  # keeping the header never shows a rejected id
    with caplog.at_level(logging.DEBUG):
        response = app.test_client().get("/", headers={"X-Request-ID": BAD_ID})
    body = response.get_data(True)
    assert json.loads(body)["data"]["headers"]["X-Request-Id"] == REDACTED
    assert "rawvalue-7f3a" not in body
    assert any("ignored an invalid incoming X-Request-Id" in r.getMessage() for r in caplog.records)
    assert all("rawvalue-7f3a" not in r.getMessage() for r in caplog.records)
    # A valid incoming id is the request's id, and shown as it came.
    assert _data(app, {"X-Request-ID": "good-id-1"})["X-Request-Id"] == "good-id-1"


def test_each_request_id_header_is_judged_by_the_id_rule():
    app = _context_app(header=["X-Request-ID", "X-Correlation-ID", "traceparent"])
    response = app.test_client().get(
        "/", headers={"X-Request-ID": BAD_ID, "X-Correlation-ID": "corr-2", "traceparent": "00-nope"}
    )
    context = response.get_json()
    assert context["request_id"] == "corr-2"
    assert context["data"]["headers"]["X-Request-Id"] == REDACTED
    assert context["data"]["headers"]["X-Correlation-Id"] == "corr-2"
    assert context["data"]["headers"]["Traceparent"] == REDACTED  # an invalid traceparent carries no id


def test_an_id_the_validator_rejects_or_raises_on_is_redacted(caplog):
    app = _context_app(validator=lambda value: value.startswith("ok-"))
    assert _data(app, {"X-Request-ID": "abc"})["X-Request-Id"] == REDACTED
    assert _data(app, {"X-Request-ID": "ok-1"})["X-Request-Id"] == "ok-1"

    def raising(value: str) -> bool:
        raise ValueError(f"not an id: {value}")

    app = _context_app(validator=raising)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="flask_reqctx"):
        assert _data(app, {"X-Request-ID": "quoted-by-the-error"})["X-Request-Id"] == REDACTED
    # Logged once, when the id was chosen; never with the value.
    assert [r.getMessage() for r in caplog.records] == [
        "request-id validator raised ValueError; id treated as invalid"
    ]


def test_data_loader_extending_the_default_data_gets_the_same_redaction():
    app = Flask("loader")
    ReqCtx(
        app, data=lambda request: {**default_data(request), "path": request.path}, redact_headers=["X-Pin"]
    )

    @app.get("/")
    def index():
        return get_request_context().to_dict()

    data = app.test_client().get("/", headers={"X-Request-ID": BAD_ID, "X-Pin": "1", "X-Auth-Token": "t"})
    shown = data.get_json()["data"]
    assert shown["path"] == "/"
    assert shown["headers"]["X-Request-Id"] == shown["headers"]["X-Pin"] == REDACTED
    assert shown["headers"]["X-Auth-Token"] == REDACTED


def test_logging_the_context_writes_no_credential(caplog):
    logger = logging.getLogger("redaction.app")
    app = _context_app()

    @app.get("/log")
    def log_view():
        logger.warning("request data %s", get_request_context().to_dict())
        return "ok"

    filter_ = RequestIdFilter()
    logger.addFilter(filter_)
    try:
        names = CREDENTIAL_HEADERS + OLD_DEFAULTS
        with caplog.at_level(logging.DEBUG):
            _get(app, "/log", {**{n: _secret(n) for n in names}, "X-Request-ID": BAD_ID})
    finally:
        logger.removeFilter(filter_)
    logged = caplog.text
    assert "request data" in logged and REDACTED in logged
    for name in names:
        assert _secret(name) not in logged, name
    assert "rawvalue-7f3a" not in logged


def test_decisions_are_cached_per_name_and_the_cache_is_bounded():
    redaction = HeaderRedaction()
    environ = {f"HTTP_X_CUSTOM_{i}": "v" for i in range(_CACHE_SIZE + 200)}
    environ |= {"HTTP_X_AUTH_TOKEN": "t", "wsgi.input": object(), "CONTENT_TYPE": "", "CONTENT_LENGTH": "3"}
    for _ in range(2):  # the second pass reads the cache, and decides names beyond it afresh
        headers = headers_data(environ, redaction)["headers"]
        assert len(redaction._cache) == _CACHE_SIZE
        assert headers["X-Auth-Token"] == REDACTED
        assert headers["X-Custom-0"] == headers[f"X-Custom-{_CACHE_SIZE + 199}"] == "v"
        assert headers["Content-Length"] == "3" and "Content-Type" not in headers
        assert len(headers) == _CACHE_SIZE + 200 + 2


def test_redaction_on_a_real_gevent_server(server):
    names = CREDENTIAL_HEADERS + OLD_DEFAULTS
    headers = {**{n: _secret(n) for n in names}, **ORDINARY_HEADERS, "X-Request-ID": BAD_ID}
    status, response_headers, body = server.request("/context", headers)
    assert status == 200
    context = json.loads(body)
    shown = context["data"]["headers"]
    assert response_headers["X-Request-ID"] == context["request_id"] != BAD_ID
    for name in names:
        assert shown[name.title()] == REDACTED, name
    for name, value in ORDINARY_HEADERS.items():
        assert shown[name.title()] == value, name
    assert shown["X-Request-Id"] == REDACTED
    log = server.log(None)
    (logged,) = [line for line in log.splitlines() if line.startswith("context {")]  # the app's log line
    assert json.loads(logged[len("context ") :]) == context
    assert "flask_reqctx: WARNING: ignored an invalid incoming X-Request-Id" in log
    for name in names:
        assert _secret(name) not in log, name
    assert "rawvalue-7f3a" not in log
