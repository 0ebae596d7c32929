"""What each integration adds to the call it wraps, beside the bare call, in one run.

Every figure is measured inside a request context (``create_request_context``), where the
integration does its work; CPU time of this thread (``_common.clock``), best over rounds that
alternate bare and integrated, so a noisy stretch hits both:

* ``requests``: ``Session.get`` through an adapter that answers at once (no socket), so the
  ratio is against the cheapest possible call;
* ``httpx``: ``Client.get`` and ``AsyncClient.get`` through ``httpx.MockTransport`` (no socket);
* Sentry: ``capture_message`` to a transport that keeps events in memory, without the
  integration (measured before it is ever installed: Sentry's integrations are process-wide)
  and with it; and ``tag_event`` alone;
* SQLAlchemy: ``conn.execute(text("SELECT 1"))`` on a real PostgreSQL (Debian's, started for
  the run) through an attached and a plain engine: the client's CPU per statement; and the
  comment alone.

Then the trade-off of per-request text (CPU time per query, client thread plus the server's
backend process, PostgreSQL on this machine):
psycopg 3 prepares a statement once one text has run ``prepare_threshold`` (5) times on a
connection; with the comment each request's text is new.  A query with a non-trivial plan is
run 2,000 times: without the comment, with it at 10 queries per request, with it at 1 query
per request, and with preparing off (psycopg's ``prepare_threshold=None``).

    python benchmarks/bench_integrations.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from _common import QUICK, REPO, clock, compared, emit, ns_per_op, row

sys.path.insert(0, os.path.join(REPO, "tests"))

import httpx
import requests
import sentry_sdk
from postgres_server import PostgresServer
from requests.adapters import BaseAdapter
from sentry_sdk.transport import Transport
from sqlalchemy import create_engine, event, text

from flask_reqctx import create_request_context, get_request_context
from flask_reqctx.integrations import httpx as reqctx_httpx
from flask_reqctx.integrations import requests as reqctx_requests
from flask_reqctx.integrations import sqlalchemy as reqctx_sqlalchemy
from flask_reqctx.integrations.sentry import ReqCtxIntegration, tag_event

ROUNDS = 3 if QUICK else 7
REPEAT = 3
SECTION = "integrations"
TRACEPARENT_STATE = "congo=t61rcWkgMzE"


class Answering(BaseAdapter):
    """A requests adapter that answers every request at once."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content, response.url = 200, b"{}", request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


class Keep(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def capture_envelope(self, envelope: Any) -> None:
        self.count += 1


def alternate(stmt: str, ns: dict[str, Any], bare: Any, integrated: Any) -> tuple[float, float]:
    """Best ns/op of ``stmt`` after ``bare()`` and after ``integrated()``, rounds alternating."""
    best = [float("inf"), float("inf")]
    for _ in range(ROUNDS):
        for i, setup in enumerate((bare, integrated)):
            setup()
            best[i] = min(best[i], ns_per_op(stmt, ns, REPEAT))
    return best[0], best[1]


def pair(rows: list[dict[str, Any]], name: str, bare: float, integrated: float) -> None:
    rows.append(row(SECTION, f"{name}: bare", bare / 1000, "µs/call"))
    rows.append(
        compared(SECTION, f"{name}: integrated", integrated / 1000, "µs/call", f"{name}: bare", bare / 1000)
    )
    rows.append(row(SECTION, f"{name}: added", (integrated - bare) / 1000, "µs/call"))


def http_clients(rows: list[dict[str, Any]]) -> None:
    session = requests.Session()
    session.mount("http://svc/", Answering())
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})))
    aclient = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})))
    loop = asyncio.new_event_loop()
    ns = {"session": session, "client": client, "aclient": aclient, "loop": loop}
    pair(
        rows,
        "requests Session.get",
        *alternate('session.get("http://svc/x")', ns, reqctx_requests.uninstall, reqctx_requests.install),
    )
    pair(
        rows,
        "httpx Client.get",
        *alternate('client.get("http://svc/x")', ns, reqctx_httpx.uninstall, reqctx_httpx.install),
    )
    pair(
        rows,
        "httpx AsyncClient.get",
        *alternate(
            'loop.run_until_complete(aclient.get("http://svc/x"))',
            ns,
            reqctx_httpx.uninstall,
            reqctx_httpx.install,
        ),
    )
    reqctx_requests.uninstall()
    reqctx_httpx.uninstall()
    loop.close()


def sentry(rows: list[dict[str, Any]]) -> None:
    options = {"dsn": "http://public@127.0.0.1:9/1", "default_integrations": False, "transport": Keep()}
    ns = {"sentry_sdk": sentry_sdk}
    stmt = 'sentry_sdk.capture_message("m")'
    sentry_sdk.init(**options)
    bare = min(ns_per_op(stmt, ns, REPEAT) for _ in range(ROUNDS))
    sentry_sdk.init(**{**options, "integrations": [ReqCtxIntegration()]})
    integrated = min(ns_per_op(stmt, ns, REPEAT) for _ in range(ROUNDS))
    pair(rows, "sentry capture_message", bare, integrated)
    alone = min(ns_per_op("tag_event({}, {})", {"tag_event": tag_event}, REPEAT) for _ in range(ROUNDS))
    rows.append(row(SECTION, "sentry tag_event alone", alone / 1000, "µs/event"))
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def _unchanged(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> Any:
    """A ``before_cursor_execute`` listener that changes nothing: what SQLAlchemy's event
    path costs any listener (ours included)."""
    return statement, parameters


def sql(rows: list[dict[str, Any]], server: PostgresServer, notes: list[str]) -> None:
    plain, listened, commented = (create_engine(server.url, pool_size=1) for _ in range(3))
    event.listen(listened, "before_cursor_execute", _unchanged, retval=True)
    reqctx_sqlalchemy.attach(commented)
    select_1 = text("SELECT 1")
    names = ("bare", "no-op listener", "attached")
    with plain.connect() as bare_conn, listened.connect() as noop_conn, commented.connect() as conn:
        ns = {"c0": bare_conn, "c1": noop_conn, "c2": conn, "select_1": select_1}
        best = [float("inf")] * 3
        for _ in range(ROUNDS):
            for i in range(3):
                best[i] = min(best[i], ns_per_op(f"c{i}.execute(select_1)", ns, REPEAT))
    name = "sqlalchemy execute(SELECT 1), client CPU"
    for label, value in zip(names, best, strict=True):
        rows.append(
            compared(SECTION, f"{name}: {label}", value / 1000, "µs/call", f"{name}: bare", best[0] / 1000)
        )
    rows.append(
        row(
            SECTION,
            f"{name}: added by the comment over a no-op listener",
            (best[2] - best[1]) / 1000,
            "µs/call",
        )
    )
    ctx = get_request_context()
    ns = {"comment": reqctx_sqlalchemy.sqlcommenter_comment, "ctx": ctx}
    alone = min(ns_per_op("comment(ctx)", ns, REPEAT) for _ in range(ROUNDS))
    rows.append(row(SECTION, "sqlalchemy comment alone", alone / 1000, "µs/statement"))
    for engine in (plain, listened, commented):
        engine.dispose()
    prepared_statements(rows, server, notes)


#: parameterised queries: one whose plan is worth keeping (four catalog joins), and a lookup
#: by primary key (the common case: planning is cheap)
QUERIES = {
    "4-table join": text(
        "SELECT count(*) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
        " JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = :name AND n.nspname = 'pg_catalog'"
    ),
    "primary-key lookup": text("SELECT relname FROM pg_class WHERE oid = CAST(:oid AS oid)"),
}
PARAMS = {"4-table join": {"name": "pg_class"}, "primary-key lookup": {"oid": 1259}}
BASE = "no comment (prepared after 5 runs)"


def backend_cpu_ns(pid: int) -> int:
    """Nanoseconds the PostgreSQL backend ``pid`` has spent on a CPU (same machine)."""
    with open(f"/proc/{pid}/schedstat") as stats:
        return int(stats.read().split()[0])


def prepared_statements(rows: list[dict[str, Any]], server: PostgresServer, notes: list[str]) -> None:
    total = 500 if QUICK else 2000
    rounds = min(ROUNDS, 3)
    plain = create_engine(server.url, pool_size=1)
    never = create_engine(server.url, pool_size=1, connect_args={"prepare_threshold": None})
    commented = create_engine(server.url, pool_size=1)
    commented_never = create_engine(server.url, pool_size=1, connect_args={"prepare_threshold": None})
    reqctx_sqlalchemy.attach(commented)
    reqctx_sqlalchemy.attach(commented_never)

    def run(engine: Any, per_request: int, query: Any, params: dict[str, Any]) -> float:
        """CPU µs per query: this thread's plus the server backend's (``/proc/<pid>/schedstat``,
        ns on CPU), so other jobs on the machine do not count."""
        with engine.connect() as conn:
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            conn.execute(query, params).scalar_one()  # warm the caches
            server_start, client_start = backend_cpu_ns(backend), clock()
            for _ in range(total // per_request):
                with create_request_context():
                    for _ in range(per_request):
                        conn.execute(query, params).scalar_one()
            client = clock() - client_start
            server = backend_cpu_ns(backend) - server_start
            return (client * 1e9 + server) / total / 1000

    variants = {
        BASE: (plain, 10),
        "comment, 10 queries per request": (commented, 10),
        "comment, 1 query per request": (commented, 1),
        "no comment, preparing off": (never, 10),
        "comment, 10 per request, preparing off": (commented_never, 10),
    }
    for shape, query in QUERIES.items():
        best = {name: float("inf") for name in variants}
        for _ in range(rounds):
            for name, (engine, per_request) in variants.items():
                best[name] = min(best[name], run(engine, per_request, query, PARAMS[shape]))
        section = f"sql prepared statements, {shape}"
        for name, value in best.items():
            rows.append(compared(section, name, value, "CPU µs/query", BASE, best[BASE]))
    notes.append(f"prepared statements: {total} runs per variant and query, best of {rounds}")
    for engine in (plain, never, commented, commented_never):
        engine.dispose()


def main() -> None:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with create_request_context(request_id="bench:integrations"):
        get_request_context().trace.tracestate = TRACEPARENT_STATE
        http_clients(rows)
        sentry(rows)
        with PostgresServer(settings={"log_min_duration_statement": "-1"}) as server:
            sql(rows, server, notes)
    emit(rows, notes)


if __name__ == "__main__":
    main()
