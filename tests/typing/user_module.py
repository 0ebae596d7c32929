"""A user's module, type-checked with ``mypy --strict`` by the tox env ``lint`` after a plain
``pip install .``: the package's own types must reach its users (``py.typed``)."""

from __future__ import annotations

from flask import Flask

from flask_reqctx import ReqCtx, RequestContext, create_request_context, get_request_context, stats

app = Flask(__name__)
ReqCtx(app)


def current_id() -> str | None:
    ctx: RequestContext | None = get_request_context()
    return ctx.request_id if ctx is not None else None


def job() -> int:
    with create_request_context({"job": 1}, "job-1") as ctx:
        assert ctx.request_id == "job-1"
    return stats()["live"]
