"""Async-hooks style callbacks: ``create_hook(init=, before=, after=, destroy=)``.

init and destroy are dispatched by the registry when units open and end.  before and
after need to see greenlet switches, which only ``greenlet.settrace`` can show; the tracer
is installed only while an enabled hook asks for them, so nobody else pays per switch.
A callback that raises is logged and swallowed: a hook must never kill a request or a
greenlet (a raising settrace callback would kill the target greenlet and uninstall itself).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .context import current_unit

__all__ = ["AsyncHook", "create_hook"]

log = logging.getLogger("flask_reqctx")

InitCallback = Callable[[int, str, int, Any], Any]
IdCallback = Callable[[int], Any]

#: Enabled hooks, replaced (never mutated) so dispatch can iterate without a lock.
_init_hooks: tuple[InitCallback, ...] = ()
_destroy_hooks: tuple[IdCallback, ...] = ()
_before_hooks: tuple[IdCallback, ...] = ()
_after_hooks: tuple[IdCallback, ...] = ()
_enabled: list[AsyncHook] = []
_lock = threading.Lock()


class AsyncHook:
    """A set of lifecycle callbacks, inert until :meth:`enable` (Node's ``AsyncHook``)."""

    def __init__(
        self,
        init: InitCallback | None = None,
        before: IdCallback | None = None,
        after: IdCallback | None = None,
        destroy: IdCallback | None = None,
    ) -> None:
        for name, cb in (("init", init), ("before", before), ("after", after), ("destroy", destroy)):
            if cb is not None and not callable(cb):
                raise TypeError(f"create_hook: {name} must be callable, got {cb!r}")
        self.init, self.before, self.after, self.destroy = init, before, after, destroy

    def enable(self) -> AsyncHook:
        with _lock:
            if self not in _enabled:
                _enabled.append(self)
                _rebuild()
        return self

    def disable(self) -> AsyncHook:
        with _lock:
            if self in _enabled:
                _enabled.remove(self)
                _rebuild()
        return self

    @property
    def enabled(self) -> bool:
        return self in _enabled


def create_hook(
    init: InitCallback | None = None,
    before: IdCallback | None = None,
    after: IdCallback | None = None,
    destroy: IdCallback | None = None,
) -> AsyncHook:
    """Return a disabled :class:`AsyncHook`; call ``.enable()`` to start receiving events."""
    return AsyncHook(init=init, before=before, after=after, destroy=destroy)


def _rebuild() -> None:
    global _init_hooks, _destroy_hooks, _before_hooks, _after_hooks
    _init_hooks = tuple(h.init for h in _enabled if h.init is not None)
    _destroy_hooks = tuple(h.destroy for h in _enabled if h.destroy is not None)
    _before_hooks = tuple(h.before for h in _enabled if h.before is not None)
    _after_hooks = tuple(h.after for h in _enabled if h.after is not None)
    _switch_tracer.update(bool(_before_hooks or _after_hooks))


def _call(callbacks: tuple[Callable[..., Any], ...], *args: Any) -> None:
    for cb in callbacks:
        try:
            cb(*args)
        except Exception:
            log.exception("flask_reqctx: hook callback %r raised; ignored", cb)


def emit_init(eid: int, kind: str, trigger_eid: int, resource: Any) -> None:
    if _init_hooks:
        _call(_init_hooks, eid, kind, trigger_eid, resource)


def emit_destroy(eid: int) -> None:
    if _destroy_hooks:
        _call(_destroy_hooks, eid)


class _SwitchTracer:
    """One ``greenlet.settrace`` callback per thread, chained to whatever was there before.

    The callback runs in the target greenlet after the switch, so ``current_unit.get()``
    is the unit switched in; the unit switched out is read from the origin's saved context.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._active = False

    def update(self, active: bool) -> None:
        self._active = active
        if active:
            self.install()
        else:
            self.uninstall()

    def install(self) -> None:
        """Install in the calling thread (idempotent); hooks enabled later reuse it."""
        try:
            import greenlet
        except ImportError:  # pragma: no cover - greenlet ships with gevent and Flask deps
            return
        if getattr(self._local, "installed", False):
            return
        previous = greenlet.settrace(self._trace)
        self._local.installed = True
        self._local.previous = previous

    def uninstall(self) -> None:
        """Remove from the calling thread if it is still the outermost tracer there."""
        import greenlet

        if getattr(self._local, "installed", False) and greenlet.gettrace() == self._trace:
            greenlet.settrace(self._local.previous)
            self._local.installed = False

    def _trace(self, event: str, args: tuple[Any, Any]) -> None:
        previous = getattr(self._local, "previous", None)
        if previous is not None:
            try:
                previous(event, args)
            except Exception:
                log.exception("flask_reqctx: chained greenlet tracer raised; ignored")
        if not self._active:
            return
        try:
            origin, _target = args
            if _after_hooks and not origin.dead:
                saved = origin.gr_context
                unit = saved.get(current_unit) if saved is not None else None
                if unit is not None and unit.context is not None:
                    _call(_after_hooks, unit.eid)
            if _before_hooks:
                unit = current_unit.get()
                if unit is not None and unit.context is not None:
                    _call(_before_hooks, unit.eid)
        except Exception:
            log.exception("flask_reqctx: switch tracer failed; ignored")


_switch_tracer = _SwitchTracer()
