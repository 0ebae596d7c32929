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

from .context import current_context, current_unit

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
#: True while an enabled hook has init or destroy: the registry checks it before calling.
lifecycle_hooks = False
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
        if self.before is not None or self.after is not None:
            try:
                import greenlet  # noqa: F401
            except ImportError:
                raise RuntimeError(
                    "before/after hooks watch greenlet switches and need gevent: "
                    "pip install 'flask-reqctx[gevent]' (init/destroy hooks work without it)"
                ) from None
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
    global _init_hooks, _destroy_hooks, _before_hooks, _after_hooks, lifecycle_hooks
    _init_hooks = tuple(h.init for h in _enabled if h.init is not None)
    _destroy_hooks = tuple(h.destroy for h in _enabled if h.destroy is not None)
    _before_hooks = tuple(h.before for h in _enabled if h.before is not None)
    _after_hooks = tuple(h.after for h in _enabled if h.after is not None)
    lifecycle_hooks = bool(_init_hooks or _destroy_hooks or _before_hooks or _after_hooks)
    _switch_tracer.update(bool(_before_hooks or _after_hooks))


def _call(callbacks: tuple[Callable[..., Any], ...], *args: Any) -> None:
    for cb in callbacks:
        try:
            cb(*args)
        except Exception:
            log.exception("hook callback %r raised; ignored", cb)


def emit_init(eid: int, kind: str, trigger_eid: int, resource: Any) -> None:
    if _init_hooks:
        _call(_init_hooks, eid, kind, trigger_eid, resource)


def emit_destroy(eid: int) -> None:
    if _switch_tracer.active:
        _switch_tracer.leave(eid)
    if _destroy_hooks:
        _call(_destroy_hooks, eid)


class _ThreadTracer:
    """The ``greenlet.settrace`` callback of one thread, chained to the one it replaced.

    It runs in the target greenlet after the switch, so ``current_unit.get()`` is the unit
    switched in; the unit switched out is the one the last ``before`` was for (so the
    final switch out of a dying greenlet still gets its ``after``).  State lives on this
    object, not in a ``threading.local``, which monkey-patching turns greenlet-local.
    """

    def __init__(self, previous: Callable[[Any, Any], object] | None) -> None:
        self.previous = previous
        self.inside: int | None = None

    def __call__(self, event: str, args: tuple[Any, Any]) -> None:
        if self.previous is not None:
            try:
                self.previous(event, args)
            except Exception:
                log.exception("chained greenlet tracer raised; ignored")
        if not _switch_tracer.active:
            return
        try:
            left = self.inside
            if left is not None:
                self.inside = None
                _call(_after_hooks, left)
            context = current_context.get()
            if context is not None:
                unit = current_unit.get()
                if unit is None or unit.context is not context:
                    unit = context._unit  # a request's own unit (made at its start while hooked)
                if unit is not None:
                    self.inside = unit.eid
                    _call(_before_hooks, unit.eid)
        except Exception:
            log.exception("switch tracer failed; ignored")


class _SwitchTracer:
    """Installs a :class:`_ThreadTracer` in each thread that enables before/after hooks."""

    def __init__(self) -> None:
        self.active = False

    @staticmethod
    def _ours() -> _ThreadTracer | None:
        import greenlet

        tracer = greenlet.gettrace()
        return tracer if isinstance(tracer, _ThreadTracer) else None

    def leave(self, eid: int) -> None:
        """A unit ends while switched in (a request returning, a greenlet's ``run``
        finishing): its ``after`` fires now, before its destroy, and not again later."""
        tracer = self._ours()
        if tracer is not None and tracer.inside == eid:
            tracer.inside = None
            _call(_after_hooks, eid)

    def update(self, active: bool) -> None:
        if not active and not self.active:  # nothing installed: greenlet may not even exist
            return
        import greenlet

        self.active = active
        tracer = self._ours()
        if active and tracer is None:
            greenlet.settrace(_ThreadTracer(greenlet.gettrace()))
        elif not active and tracer is not None:
            greenlet.settrace(tracer.previous)


_switch_tracer = _SwitchTracer()
