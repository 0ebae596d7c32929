"""Shared fixtures.  The gevent tox env runs this same suite under ``gevent.monkey``."""

from __future__ import annotations

import gc

import pytest
from flask import Flask

import flask_reqctx
from flask_reqctx import ReqCtx, stats

try:
    from gevent import monkey

    MONKEY_PATCHED = monkey.is_module_patched("threading")
except ImportError:  # pragma: no cover - gevent is a test dependency
    MONKEY_PATCHED = False


@pytest.fixture
def app() -> Flask:
    app = Flask("test_app")
    app.config["TESTING"] = True
    ReqCtx(app)
    return app


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture(autouse=True)
def no_leaked_contexts():
    """Every test must leave no live context behind (and none bound to the test's unit)."""
    yield
    gc.collect()
    assert flask_reqctx.get_request_context() is None
    assert stats()["live"] == 0, stats()
