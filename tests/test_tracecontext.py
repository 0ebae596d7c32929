"""W3C Trace Context: parsing incoming traceparent/tracestate, and the request's trace."""

from __future__ import annotations

import re
import string

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_reqctx import ReqCtx, TraceContext, create_request_context, get_request_context
from flask_reqctx.tracecontext import new_span_id, new_trace_id, parse_traceparent, parse_tracestate

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
VALID = f"00-{TRACE}-{PARENT}-01"
HEX32 = re.compile(r"[0-9a-f]{32}")
TRACEPARENT_OUT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


# -- parse_traceparent ------------------------------------------------------------------


def test_valid_traceparent_is_parsed():
    assert parse_traceparent(VALID) == (TRACE, PARENT, "01")
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00") == (TRACE, PARENT, "00")
    assert parse_traceparent(f" \t{VALID}\t ") == (TRACE, PARENT, "01")  # optional white space


INVALID_TRACEPARENTS = [
    "",
    "00",
    VALID.upper(),  # hex must be lowercase
    f"00-{TRACE.upper()}-{PARENT}-01",
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
    f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
    f"00-{TRACE}-{PARENT}-01x",
    f"01-{TRACE}-{PARENT}-01x",  # a later version may append only '-' fields
    f"00-{TRACE[:-1]}-{PARENT}-01",
    f"00-{TRACE}g-{PARENT}-01",
    f"00-{TRACE}-{PARENT[:-1]}-01",
    f"00-{TRACE}-{PARENT}-1",
    f"00_{TRACE}_{PARENT}_01",
    f"0-{TRACE}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-01\r\nX-Evil: 1",
    f"00-{TRACE}-{PARENT}-01\n",
    f"00 -{TRACE}-{PARENT}-01",
    f"01-{TRACE}-{PARENT}-01-" + "a" * 600,  # length cap
    None,
    b"00-" + TRACE.encode(),
]


def test_invalid_traceparent_is_rejected():
    for value in INVALID_TRACEPARENTS:
        assert parse_traceparent(value) is None, value


def test_future_version_is_parsed_as_version_00():
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01") == (TRACE, PARENT, "01")
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-holds") == (TRACE, PARENT, "01")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.hexdigits + "-xX \t\r\n\x00é", max_size=80) | st.text(max_size=80))
def test_parse_traceparent_never_raises_and_only_returns_safe_ids(value):
    parsed = parse_traceparent(value)
    if parsed is not None:
        trace_id, parent_id, flags = parsed
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and trace_id != "0" * 32
        assert re.fullmatch(r"[0-9a-f]{16}", parent_id) and parent_id != "0" * 16
        assert re.fullmatch(r"[0-9a-f]{2}", flags)


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s != "0" * 32),
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16),
    st.text(alphabet="0123456789abcdef", min_size=2, max_size=2),
)
def test_every_well_formed_traceparent_round_trips(trace_id, parent_id, flags):
    assert parse_traceparent(f"00-{trace_id}-{parent_id}-{flags}") == (trace_id, parent_id, flags)


def test_new_ids_are_random_lowercase_hex():
    assert HEX32.fullmatch(new_trace_id())
    assert re.fullmatch(r"[0-9a-f]{16}", new_span_id())
    assert len({new_trace_id() for _ in range(100)}) == 100


# -- parse_tracestate -------------------------------------------------------------------


def test_valid_tracestate_is_kept_normalised():
    assert parse_tracestate("congo=t61rcWkgMzE") == "congo=t61rcWkgMzE"
    assert (
        parse_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,,")
        == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert parse_tracestate("fw529a3039@dt=abc,a*b/c_d-e=v v") == "fw529a3039@dt=abc,a*b/c_d-e=v v"


INVALID_TRACESTATES = [
    "",
    " , ",
    "novalue",
    "Upper=1",  # keys are lowercase
    "k=v,k=w",  # duplicate key
    "k=a,b",  # member without '='
    "k=v=w",  # '=' in a value
    "k=caf\u00e9",  # printable ASCII only
    "k=a\r\nX-Evil: 1",
    "k=\x00",
    ",".join(f"k{i}=v" for i in range(33)),  # more than 32 members
    "k=" + "v" * 257,  # value longer than 256
    ",".join(f"key{i:03}=" + "v" * 40 for i in range(12)),  # over 512 characters
    None,
]


def test_invalid_tracestate_is_dropped():
    for value in INVALID_TRACESTATES:
        assert parse_tracestate(value) is None, value


# -- the request's trace ------------------------------------------------------------------


def _trace_view(app: Flask) -> None:
    @app.get("/trace")
    def trace():
        ctx = get_request_context()
        return {
            "trace_id": ctx.trace_id,
            "parent_id": ctx.trace.parent_id,
            "flags": ctx.trace.flags,
            "tracestate": ctx.trace.tracestate,
            "traceparent_out": ctx.trace.traceparent(),
            "span_id": ctx.trace.span_id,
        }


def test_valid_incoming_traceparent_gives_the_trace_id(app, client):
    _trace_view(app)
    body = client.get("/trace", headers={"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"}).get_json()
    assert body["trace_id"] == TRACE
    assert body["parent_id"] == PARENT
    assert body["flags"] == "01"
    assert body["tracestate"] == "congo=t61rcWkgMzE"
    out = TRACEPARENT_OUT.fullmatch(body["traceparent_out"])
    assert out is not None
    assert out.group(1) == TRACE  # same trace
    assert out.group(2) == body["span_id"] != PARENT  # a new parent id: this request
    assert out.group(3) == "01"  # the caller's sampling decision passes through


@pytest.mark.parametrize(
    "bad", [VALID.upper(), f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", "junk"]
)
def test_invalid_incoming_traceparent_is_ignored(app, client, caplog, bad):
    _trace_view(app)
    with caplog.at_level("DEBUG", logger="flask_reqctx"):
        body = client.get("/trace", headers={"traceparent": bad, "tracestate": "congo=1"}).get_json()
    assert HEX32.fullmatch(body["trace_id"]) and body["trace_id"] != TRACE
    assert body["parent_id"] is None
    assert body["flags"] == "00"
    assert body["tracestate"] is None  # tracestate only travels with a valid traceparent
    assert all(bad not in record.getMessage() for record in caplog.records)


def test_invalid_tracestate_is_dropped_but_traceparent_kept(app, client):
    _trace_view(app)
    body = client.get("/trace", headers={"traceparent": VALID, "tracestate": "Bad Key=1"}).get_json()
    assert body["trace_id"] == TRACE and body["tracestate"] is None


def test_without_traceparent_each_request_starts_its_own_trace(app, client):
    _trace_view(app)
    one = client.get("/trace").get_json()
    two = client.get("/trace").get_json()
    assert HEX32.fullmatch(one["trace_id"]) and HEX32.fullmatch(two["trace_id"])
    assert one["trace_id"] != two["trace_id"]
    assert one["parent_id"] is None and one["flags"] == "00"


def test_trace_is_started_lazily_and_then_stable(app, client):
    seen = {}

    @app.get("/lazy")
    def lazy():
        ctx = get_request_context()
        seen["first"] = ctx.trace_id
        seen["again"] = ctx.trace_id
        seen["span"] = (ctx.trace.span_id, ctx.trace.span_id)
        seen["after"] = ctx.to_dict()["trace_id"]
        return "ok"

    client.get("/lazy")
    assert seen["first"] == seen["again"] == seen["after"]
    assert seen["span"][0] == seen["span"][1]


def test_to_dict_carries_an_incoming_trace_id(app, client):
    @app.get("/")
    def index():
        return get_request_context().to_dict()

    assert client.get("/", headers={"traceparent": VALID}).get_json()["trace_id"] == TRACE


def test_child_greenlets_and_threads_share_the_trace(app, client):
    import threading

    seen = []

    @app.get("/")
    def index():
        t = threading.Thread(target=lambda: seen.append(get_request_context().trace.traceparent()))
        t.start()
        t.join()
        seen.append(get_request_context().trace.traceparent())
        return "ok"

    client.get("/")
    assert len(seen) == 2 and seen[0] == seen[1]


@pytest.mark.parametrize("option", [{"trust_traceparent": False}, {"trust_incoming": False}])
def test_traceparent_can_be_distrusted(option):
    app = Flask("distrust")
    ReqCtx(app, **option)
    _trace_view(app)
    body = app.test_client().get("/trace", headers={"traceparent": VALID}).get_json()
    assert body["trace_id"] != TRACE and body["parent_id"] is None


def test_traceparent_trusted_while_request_ids_are_not():
    app = Flask("mixed")
    ReqCtx(app, trust_incoming=False, trust_traceparent=True)
    _trace_view(app)
    assert app.test_client().get("/trace", headers={"traceparent": VALID}).get_json()["trace_id"] == TRACE


def test_traceparent_as_a_request_id_header():
    app = Flask("tp_as_id")
    app.config["REQCTX_HEADER"] = ["X-Request-ID", "traceparent"]
    ReqCtx(app)

    @app.get("/")
    def index():
        return get_request_context().to_dict()

    client = app.test_client()
    response = client.get("/", headers={"traceparent": VALID})
    assert response.get_json()["request_id"] == TRACE
    assert response.headers["X-Request-ID"] == TRACE  # echoed under the plain header
    assert "traceparent" not in response.headers
    response = client.get("/", headers={"traceparent": "00-garbage"})
    assert response.get_json()["request_id"] != "00-garbage"


def test_create_request_context_has_a_trace_too():
    with create_request_context() as ctx:
        assert HEX32.fullmatch(ctx.trace_id)
        assert ctx.trace.parent_id is None
    with create_request_context() as ctx:
        ctx.trace = TraceContext(TRACE, PARENT, "01")
        assert ctx.trace_id == TRACE
        ctx.trace_id = None  # forget it: a new trace starts on the next ask
        assert ctx.trace_id != TRACE


def test_context_created_receivers_already_see_the_incoming_trace(app, client, caplog):
    from flask_reqctx.signals import context_created

    seen = []

    def receiver(sender, context):
        seen.append(context.trace_id)

    context_created.connect(receiver)
    try:
        _trace_view(app)
        client.get("/trace", headers={"traceparent": VALID})
        with caplog.at_level("DEBUG", logger="flask_reqctx"):
            response = client.get("/trace", headers={"traceparent": "00-not-valid"})
    finally:
        context_created.disconnect(receiver)
    assert seen[0] == TRACE
    assert seen[1] == response.get_json()["trace_id"] != TRACE
    (record,) = [r for r in caplog.records if "traceparent" in r.getMessage()]
    assert "(12 chars)" in record.getMessage() and "not-valid" not in record.getMessage()
