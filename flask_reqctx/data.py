"""The default request data: the incoming headers, with credentials redacted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_REDACT_HEADERS", "REDACTED", "default_data", "headers_data"]

DEFAULT_REDACT_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key")
REDACTED = "[redacted]"


def redact_set(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names)


def headers_data(environ: Mapping[str, Any], redact: frozenset[str]) -> dict[str, Any]:
    """``{"headers": {Name: value}}`` from a WSGI environ (names as Werkzeug spells them)."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key.replace("_", "-").title()
        else:
            continue
        headers[name] = REDACTED if name.lower() in redact else value
    return {"headers": headers}


def default_data(request: Any) -> dict[str, Any]:
    """The default data for a Flask ``request``, with the current app's redaction list.

    For a data loader that extends rather than replaces it::

        ReqCtx(app, data=lambda request: {**default_data(request), "user": current_user_id()})
    """
    from flask import current_app

    from .extension import settings_for

    return headers_data(request.environ, settings_for(current_app._get_current_object()).redact)
