"""The README's gunicorn access-log recipe, on a real gunicorn: each access line carries the
id the response echoed, also for a 500 that escaped the Flask app."""

from __future__ import annotations

import os
import re

import pytest
from servers import GunicornServer
from waiting import wait_until

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def readme_access_logformat() -> str:
    """The ``--access-logformat '...'`` the README recommends, as written there."""
    with open(README, encoding="utf-8") as readme:
        match = re.search(r"--access-logformat '([^']+)'", readme.read())
    assert match is not None, "the README no longer shows an --access-logformat recipe"
    return match.group(1)


pytestmark = pytest.mark.gunicorn(
    app="server_app:app",
    extra_args=["--access-logfile", "-", "--access-logformat", readme_access_logformat()],
)


def access_line(server: GunicornServer, path: str, timeout: float = 10.0) -> str:
    """The one access-log line for ``GET path`` (polled: gunicorn writes it after the response)."""
    pattern = re.compile(rf'^127\.0\.0\.1 "GET {re.escape(path)} HTTP/1\.1" .*$', re.M)
    lines = wait_until(lambda: pattern.findall(server.log(None)), timeout, 0.02, lambda: server.log())
    assert len(lines) == 1, (path, lines, server.log())
    return str(lines[0])


@pytest.mark.parametrize(
    ("path", "status", "sent"),
    [
        ("/context?n=1", 200, "access:1.ok"),
        ("/context?n=2", 200, None),  # a fresh id, made by the extension
        ("/raise?n=3", 500, "access-500"),  # Flask's own 500
        ("/teardown-raises?n=4", 500, "escaped-1"),  # escaped the app: the extension's 500
        ("/stream-raises?n=5", 500, None),  # a streamed body that raised before its first chunk
        ("/no-such-page?n=6", 404, "access-404"),
    ],
)
def test_access_line_carries_the_echoed_id(server, path, status, sent):
    got, headers, _body = server.request(path, {"X-Request-ID": sent} if sent else {})
    assert got == status
    echoed = headers["X-Request-ID"]
    assert echoed == sent if sent else re.fullmatch(r"[0-9a-f-]{36}", echoed)
    assert access_line(server, path) == f'127.0.0.1 "GET {path} HTTP/1.1" {status} {echoed}'
