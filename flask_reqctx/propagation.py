"""Carry the current context into the units a request creates, at the moment it creates them.

Nothing in the runtime does this for us: a new greenlet or thread starts with an empty
``contextvars`` context, executor jobs run in whatever context their pooled worker has,
and gevent's ``spawning_greenlet`` is wrong for reused workers.  So each creation point
is wrapped once per process, one module per patched library in :mod:`flask_reqctx.patches`
(``gevent``, ``threads`` for ``threading`` and ``concurrent.futures``, ``asyncio``): the
child gets its own unit (init fires there, with the creator as trigger) and a fresh
``Context`` holding the creator's ``RequestContext``; the child's end destroys the unit.

Installed by :func:`install`: at ``import flask_reqctx``, unless the environment variable
``FLASK_REQCTX_PATCH`` is ``0`` (then call it yourself, or rely on :func:`flask_reqctx.bind`).
Code that bound ``from gevent import spawn`` *before* the install keeps gevent's own
class: import ``flask_reqctx`` first, or use :func:`flask_reqctx.bind`.
"""

from __future__ import annotations

import threading

from .patches import asyncio as asyncio_patch
from .patches import threads as threads_patch

__all__ = ["install", "installed"]

_installed = False
_lock = threading.Lock()


def installed() -> bool:
    return _installed


def install() -> None:
    """Wrap the creation points (idempotent, once per process)."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        threads_patch.install()
        asyncio_patch.install()
        try:
            from .patches import gevent as gevent_patch
        except ModuleNotFoundError as exc:  # gevent is optional
            if exc.name not in ("gevent", "greenlet"):
                raise
        else:
            gevent_patch.install()
        _installed = True
