"""The views every app served by the real-server tests has: ``/health`` for the start-up
wait, ``/stats`` for :meth:`servers.GunicornServer.wait_idle`.  Not a test module."""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify

from flask_reqctx import stats


def health() -> str:
    return "ok"


def stats_view() -> Response:
    current = stats()
    # This request is itself one live unit while the view runs.
    return jsonify(stats=current, live_besides_this_request=current["live"] - 1, pid=os.getpid())


def add_probe_views(app: Flask) -> None:
    app.get("/health")(health)
    app.get("/stats")(stats_view)
