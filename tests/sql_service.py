"""A service whose requests query PostgreSQL through a commented SQLAlchemy engine, served by
gunicorn -k gevent for the concurrent SQL-comment test (``DATABASE_URL`` names the server).

psycopg is imported by SQLAlchemy when the engine is made, after gunicorn's gevent worker
monkey-patched ``select``: psycopg then waits with a cooperative function (``/wait``).
"""

from __future__ import annotations

import os

import psycopg.waiting
from flask import Flask, jsonify
from sqlalchemy import create_engine, text

from flask_reqctx import ReqCtx, get_request_context, stats
from flask_reqctx.integrations import sqlalchemy as reqctx_sqlalchemy

app = Flask("sql_service")
ReqCtx(app)
engine = create_engine(os.environ["DATABASE_URL"], pool_size=60, max_overflow=0, pool_timeout=60)
reqctx_sqlalchemy.attach(engine)

#: its own text as the server received it, how many pg_sleep queries run at that moment
QUERY = text(
    "SELECT current_query(), pg_sleep(:seconds),"
    " (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep%')"
)


@app.get("/health")
def health():
    return jsonify(pid=os.getpid())


@app.get("/query")
def query():
    with engine.connect() as conn:
        seen, _slept, running = conn.execute(QUERY, {"seconds": 0.05}).one()
    return jsonify(request_id=get_request_context().request_id, query=seen, running=running)


@app.get("/wait")
def wait():
    waiting = psycopg.waiting
    return jsonify(wait=waiting.wait.__name__, c_wait=waiting.wait is getattr(waiting, "wait_c", None))


@app.get("/stats")
def live():
    return jsonify(pid=os.getpid(), live_besides_this_request=stats()["live"] - 1)
