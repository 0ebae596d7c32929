"""The optional integrations stay optional: importing the package loads none of their
libraries, and each integration loads only its own (checked in fresh interpreters)."""

from __future__ import annotations

import pytest
from fresh_interpreter import run_in_fresh_interpreter

LIBRARIES = ("httpx", "sqlalchemy", "psycopg", "sentry_sdk", "requests")


@pytest.mark.parametrize(
    ("imported", "own"),
    [
        ("flask_reqctx, flask_reqctx.logging, flask_reqctx.outgoing", set()),
        ("flask_reqctx.integrations.httpx", {"httpx"}),
        ("flask_reqctx.integrations.sqlalchemy", {"sqlalchemy"}),
        ("flask_reqctx.integrations.sentry", {"sentry_sdk"}),
    ],
)
def test_only_its_own_library_is_loaded(imported: str, own: set[str]):
    others = sorted(set(LIBRARIES) - own)
    run_in_fresh_interpreter(
        f"""
import sys
import {imported}
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {others!r})
assert not loaded, loaded
"""
    )
