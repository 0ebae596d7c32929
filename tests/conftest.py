"""Shared fixtures.  The gevent tox env runs this same suite under ``gevent.monkey``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from flask import Flask
from servers import GunicornServer

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gunicorn(**options): the module's `server`, GunicornServer(**options); allowed_errors=(...):"
        " at teardown every line the extension logged contains one of these (unset: not checked)",
    )


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[GunicornServer]:
    """One gunicorn serving a module's tests (default: ``server_app`` under one gevent worker).

    Its options are the module's ``gunicorn`` mark, updated by ``request.param`` when the
    module parametrises ``server`` indirectly (a run per worker class).
    """
    mark = request.node.get_closest_marker("gunicorn")
    options = {**(mark.kwargs if mark else {}), **getattr(request, "param", {})}
    allowed = options.pop("allowed_errors", None)
    with GunicornServer(**options) as srv:
        yield srv
        if allowed is not None:
            assert [line for line in srv.extension_errors() if not any(a in line for a in allowed)] == []
