"""Carry the current context into the units a request creates, at the moment it creates them.

Nothing in the runtime does this for us: a new greenlet or thread starts with an empty
``contextvars`` context, executor jobs run in whatever context their pooled worker has,
and gevent's ``spawning_greenlet`` is wrong for reused workers.  So each creation point
is wrapped once per process, one module here per patched library (``gevent``, ``threads``
for ``threading`` and ``concurrent.futures``, ``asyncio``): the child gets its own unit
(init fires there, with the creator as trigger) and a copy of the creator's whole
``contextvars`` context as it is at creation, less Flask's request and app variables (see
:func:`flask_reqctx.registry.child_context`); the child's end destroys the unit.

:func:`install` runs at ``import flask_reqctx``, unless the environment variable
``FLASK_REQCTX_PATCH`` is ``0`` (then call it yourself, or rely on :func:`flask_reqctx.bind`).
It imports none of these libraries: each is patched when the application imports it
(at once when it already has, see :mod:`.on_import`), so an app that never uses asyncio or
gevent never loads them.  Code that bound ``from gevent import spawn`` *before* the install
keeps gevent's own class: import ``flask_reqctx`` first, or use :func:`flask_reqctx.bind`.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import ModuleType

from .on_import import when_imported

__all__ = ["install", "installed", "patched"]


class _Installation:
    """Whether :func:`install` ran, and which libraries are patched by now.  Not reset for
    tests (no ``holds_state``): a patch cannot be taken back, and :func:`install` is
    idempotent, so the state is the process's for good."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installed = False
        self.patched: set[str] = set()


_installation = _Installation()


def _patch_with(patch_module: str, function: str = "install") -> Callable[[ModuleType], None]:
    """The patch for a library: ``function`` of ``flask_reqctx.patches.<patch_module>``,
    imported only now (it imports the library it patches)."""

    def patch(module: ModuleType) -> None:
        getattr(importlib.import_module(f"{__name__}.{patch_module}"), function)()
        with _installation.lock:
            _installation.patched.add(module.__name__)

    return patch


#: Module name -> its patch.  ``concurrent.futures.thread`` is where ThreadPoolExecutor lives
#: (``concurrent.futures`` loads it on first use of the name).
_PATCHES = {
    "threading": _patch_with("threads", "install_threading"),
    "concurrent.futures.thread": _patch_with("threads", "install_executor"),
    "asyncio": _patch_with("asyncio"),
    "gevent": _patch_with("gevent"),
}


def install() -> None:
    """Wrap the creation points of every supported library, now or when it is imported
    (idempotent, once per process)."""
    with _installation.lock:
        if _installation.installed:
            return
        _installation.installed = True
    for name, patch in _PATCHES.items():
        when_imported(name, patch)


def installed() -> bool:
    """True once :func:`install` has run (the libraries are patched as they are imported)."""
    return _installation.installed


def patched() -> frozenset[str]:
    """The modules patched so far (``threading``, ``concurrent.futures.thread``, ``asyncio``,
    ``gevent``): those imported since :func:`install` ran, or before it."""
    with _installation.lock:
        return frozenset(_installation.patched)
