"""SQL comments: statements sent through an attached SQLAlchemy engine carry the request's
ids in sqlcommenter format, seen by a real PostgreSQL (Debian's, started once per session)."""

from __future__ import annotations

import re
import string
import threading
from urllib.parse import unquote

import psycopg
import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from postgres_server import PostgresServer
from servers import GunicornServer, run_load
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from waiting import wait_until

from flask_reqctx import ReqCtx, RequestContext, create_request_context, get_request_context
from flask_reqctx.integrations import sqlalchemy as reqctx_sqlalchemy

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
#: every character the request-id rule allows
ALL_ID_CHARS = string.ascii_letters + string.digits + "._:-"
COMMENT = re.compile(r" /\*((?:[a-z_]+='[A-Za-z0-9_.~%-]*',?)+)\*/;?$")


@pytest.fixture(scope="session")
def postgres():
    with PostgresServer(settings={"shared_preload_libraries": "pg_stat_statements"}) as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        yield server


@pytest.fixture(scope="module")
def engine(postgres):
    engine = create_engine(postgres.url, pool_size=2)
    reqctx_sqlalchemy.attach(engine)
    yield engine
    engine.dispose()


def current_query(engine, sql: str = "SELECT current_query()", **options) -> str:
    with engine.connect().execution_options(**options) as conn:
        return conn.execute(text(sql)).scalar_one()


def parse_comment(query: str) -> dict[str, str]:
    """The sqlcommenter pairs at the end of ``query`` (which must end in exactly one comment)."""
    match = COMMENT.search(query)
    assert match is not None, query
    assert query.count("/*") == 1 and query.count("*/") == 1, query
    pairs = dict(pair.split("=", 1) for pair in match.group(1).split(","))
    assert list(pairs) == sorted(pairs)
    return {key: unquote(value.strip("'")) for key, value in pairs.items()}


# -- the comment -------------------------------------------------------------------------------


def test_comment_format():
    app = Flask("comment_format")
    ReqCtx(app)

    @app.get("/")
    def index():
        ctx = get_request_context()
        return {"comment": reqctx_sqlalchemy.sqlcommenter_comment(ctx), "span": ctx.trace.span_id}

    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    sent = {"X-Request-ID": "a:b", "traceparent": TRACEPARENT, "tracestate": state}
    body = app.test_client().get("/", headers=sent).get_json()
    assert body["comment"] == (
        f"/*request_id='a%3Ab',traceparent='00-{TRACE}-{body['span']}-01',"
        "tracestate='congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7'*/"
    )


def test_the_server_sees_the_comment_with_every_id_character(engine):
    # the longest ids; 64 ':' each become '%3A' (doubled for psycopg, once in the text)
    for request_id in (ALL_ID_CHARS, (ALL_ID_CHARS * 2)[:128], "x:" * 64, "0"):
        with create_request_context(request_id=request_id) as ctx:
            trace = {"request_id": request_id, "traceparent": f"00-{ctx.trace_id}-{ctx.trace.span_id}-00"}
            seen = [
                current_query(engine),  # text(), parameters {}: psycopg reads '%'
                current_query(engine, no_parameters=True),  # cursor.execute(sql): psycopg does not
                current_query(engine, "SELECT current_query() ;  "),  # the comment before the ';'
            ]
            with engine.connect() as conn:
                seen.append(conn.exec_driver_sql("SELECT current_query()").scalar_one())
                seen.append(conn.execute(text("SELECT current_query() WHERE :a = 1"), {"a": 1}).scalar_one())
            with Session(engine) as session:
                seen.append(session.scalar(text("SELECT current_query()")))
        for query in seen:
            assert parse_comment(query) == trace, query
            assert "%%" not in query
        assert seen[2].endswith("*/;")


def test_nothing_outside_a_context_nor_on_a_commented_statement(engine):
    assert current_query(engine) == "SELECT current_query()"
    with create_request_context(request_id="rid-1"):
        for own in ("SELECT current_query() /* mine */", "SELECT current_query() -- mine"):
            assert current_query(engine, own) == own
        assert parse_comment(current_query(engine))["request_id"] == "rid-1"
    reqctx_sqlalchemy.detach(engine)
    try:
        with create_request_context(request_id="rid-2"):
            assert current_query(engine) == "SELECT current_query()"
    finally:
        reqctx_sqlalchemy.attach(engine)
    reqctx_sqlalchemy.attach(engine)  # idempotent: one comment, not two
    with create_request_context(request_id="rid-3"):
        assert parse_comment(current_query(engine))["request_id"] == "rid-3"
    assert reqctx_sqlalchemy.attached(engine)


# a tracestate value may hold any printable ASCII but ',' and '=' (W3C), '*/', quotes included
_state_chars = st.sampled_from([chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",="])
_state_values = st.text(_state_chars, min_size=1, max_size=40).filter(lambda v: not v.endswith(" "))


@settings(max_examples=60, deadline=None)
@given(value=_state_values)
def test_a_hostile_tracestate_cannot_close_the_comment(engine, value):
    app = Flask("hostile")
    ReqCtx(app)

    @app.get("/")
    def index():
        return {"query": current_query(engine), "state": get_request_context().trace.tracestate}

    headers = {"traceparent": TRACEPARENT, "tracestate": f"k={value}"}
    body = app.test_client().get("/", headers=headers).get_json()
    assert body["state"] == f"k={value}"  # accepted as it came
    assert parse_comment(body["query"])["tracestate"] == f"k={value}"  # one comment, at the end


def test_hostile_values_by_hand(engine):
    app = Flask("hostile_by_hand")
    ReqCtx(app)
    app.get("/")(lambda: {"query": current_query(engine)})
    for value in ("x*/ DROP TABLE users; --", "x'*/;SELECT 1/*", "x\\'/*"):
        headers = {"traceparent": TRACEPARENT, "tracestate": f"k={value}"}
        query = app.test_client().get("/", headers=headers).get_json()["query"]
        # the server ran one statement (a closed comment would have run DROP: no such table)
        assert query.startswith("SELECT current_query() /*request_id=")
        assert parse_comment(query)["tracestate"] == f"k={value}"


def test_an_id_made_by_hand_is_encoded_whole():
    """``RequestContext`` is public: one built with an id outside the rule still cannot close
    the comment."""
    ctx = RequestContext("x*/ DROP TABLE t; --'\n")
    comment = reqctx_sqlalchemy.sqlcommenter_comment(ctx)
    assert comment.startswith("/*request_id='x%2A%2F%20DROP%20TABLE%20t%3B%20--%27%0A',traceparent='00-")
    assert parse_comment("SELECT 1 " + comment)["request_id"] == ctx.request_id


# -- where a DBA looks -------------------------------------------------------------------------


def test_seen_in_pg_stat_activity_and_the_server_log(postgres, engine):
    errors: list[BaseException] = []

    def sleeping_query() -> None:
        try:
            current_query(engine, "SELECT pg_sleep(60)")
        except Exception as exc:  # cancelled below, once seen
            errors.append(exc)

    with psycopg.connect(postgres.dsn, autocommit=True) as dba:
        with create_request_context(request_id="slow:query-1") as ctx:
            worker = threading.Thread(target=sleeping_query)
            worker.start()
        rows = wait_until(
            lambda: dba.execute(
                "SELECT pid, query FROM pg_stat_activity"
                " WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(60)%'"
            ).fetchall(),
            20,
            0.02,
        )
        assert len(rows) == 1, rows
        pid, query = rows[0]
        expected = {"request_id": "slow:query-1", "traceparent": f"00-{ctx.trace_id}-{ctx.trace.span_id}-00"}
        assert parse_comment(query) == expected
        dba.execute("SELECT pg_cancel_backend(%s)", (pid,))
        worker.join(20)
    assert not worker.is_alive() and len(errors) == 1 and "canceling statement" in str(errors[0])

    with create_request_context(request_id="logged:1"):
        current_query(engine, "SELECT 'log line marker'")
    lines = wait_until(
        lambda: [line for line in postgres.log().splitlines() if "log line marker" in line], 10, 0.02
    )
    assert len(lines) == 1 and "duration:" in lines[0], lines
    assert parse_comment(lines[0].split(": ", 3)[-1]) == {
        "request_id": "logged:1",
        "traceparent": parse_comment(lines[0])["traceparent"],
    }
    assert "request_id='logged%3A1'" in lines[0]


def test_pg_stat_statements_still_groups_the_requests_statements(postgres, engine):
    """Statistics per statement survive the comment: pg_stat_statements keys a statement by
    its parse tree, so every request's commented text counts as the same statement."""
    sql = "SELECT count(*) FROM pg_class WHERE relname = :name"
    for n in range(3):
        with create_request_context(request_id=f"grouped-{n}"), engine.connect() as conn:
            conn.execute(text(sql), {"name": "pg_class"}).scalar_one()
    with psycopg.connect(postgres.dsn, autocommit=True) as dba:
        rows = dba.execute(
            "SELECT calls, query FROM pg_stat_statements"
            " WHERE query LIKE 'SELECT count(*) FROM pg_class WHERE%'"
        ).fetchall()
    assert len(rows) == 1 and rows[0][0] == 3, rows
    assert parse_comment(rows[0][1])["request_id"] == "grouped-0"  # the first text it saw


# -- 200 requests at once on gunicorn -k gevent ------------------------------------------------


def test_each_concurrent_request_names_itself_in_its_query(postgres):
    env = {"DATABASE_URL": postgres.url}
    with GunicornServer(app="sql_service:app", env=env, worker_connections=300) as server:
        wait = server.get_json("/wait")
        assert wait == {"wait": "wait_poll", "c_wait": False}  # psycopg saw gevent's select
        report = run_load(server, path="/query", requests=200, concurrency=200, detail=True, id_prefix="sql")
        assert report["error_count"] == 0 and report["statuses"] == {"200": 200}, report
        most_at_once = 0
        for result in report["results"]:
            body = result["body"]
            assert body["request_id"] == result["sent"] == result["echoed"]
            assert parse_comment(body["query"])["request_id"] == result["sent"]
            most_at_once = max(most_at_once, body["running"])
        # the queries of one worker overlapped (49 seen here): psycopg did not block the worker
        assert most_at_once > 10, most_at_once
        server.wait_idle()


def test_preloaded_psycopg_blocks_a_gevent_worker(postgres):
    """What the README warns about: with ``--preload`` the app (and psycopg) is imported in the
    master, before the worker's monkey-patching, and psycopg keeps its blocking C wait."""
    env = {"DATABASE_URL": postgres.url}
    with GunicornServer(app="sql_service:app", env=env, extra_args=["--preload"]) as server:
        assert server.get_json("/wait") == {"wait": "wait_c", "c_wait": True}
