"""flask_reqctx: a context per request, readable anywhere the request reaches.

The Python counterpart of Node's ``async_hooks``/``AsyncLocalStorage`` for Flask: a store
keyed by execution identity (greenlet, thread or asyncio task), filled when a unit is
created from its trigger's context and emptied when the unit ends.
"""

from __future__ import annotations

import os

from . import patches
from .context import RequestContext, get_request_context
from .data import default_data
from .extension import ReqCtx
from .hooks import AsyncHook, create_hook
from .ids import is_valid_request_id, new_request_id
from .outgoing import outgoing_headers
from .registry import (
    bind,
    close_request_context,
    create_request_context,
    execution_id,
    exit_context,
    stats,
    trigger_id,
)
from .tracecontext import TraceContext

__all__ = [
    "AsyncHook",
    "ReqCtx",
    "RequestContext",
    "TraceContext",
    "bind",
    "close_request_context",
    "create_hook",
    "create_request_context",
    "default_data",
    "execution_id",
    "exit_context",
    "get_request_context",
    "is_valid_request_id",
    "new_request_id",
    "outgoing_headers",
    "stats",
    "trigger_id",
]

#: The distribution's name on PyPI, whose metadata holds the version.
_DISTRIBUTION = "flask-reqctx"


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed package's metadata on first use (importing
    ``importlib.metadata`` costs milliseconds that ``import flask_reqctx`` need not pay)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version(_DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that is not installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found


if os.environ.get("FLASK_REQCTX_PATCH", "1") != "0":
    patches.install()
