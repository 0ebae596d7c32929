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
from .state import holds_state

__all__ = ["AsyncHook", "create_hook"]

log = logging.getLogger("flask_reqctx")

InitCallback = Callable[[int, str, int, Any], Any]
IdCallback = Callable[[int], Any]



class EnabledHooks:
    """The process's enabled hooks and their callbacks, by event.

    The callback tuples are replaced (never mutated) so dispatch can iterate without a lock.
    ``lifecycle`` is True while any hook is enabled: the registry, the patches and the WSGI
    wrapper test it before calling anything here.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hooks: list[AsyncHook] = []
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the callbacks from :attr:`hooks` (under :attr:`lock`)."""
        hooks = self.hooks
        self.init: tuple[InitCallback, ...] = tuple(h.init for h in hooks if h.init is not None)
        self.destroy: tuple[IdCallback, ...] = tuple(h.destroy for h in hooks if h.destroy is not None)
        self.before: tuple[IdCallback, ...] = tuple(h.before for h in hooks if h.before is not None)
        self.after: tuple[IdCallback, ...] = tuple(h.after for h in hooks if h.after is not None)
        self.lifecycle = bool(self.init or self.destroy or self.before or self.after)
        _switch_tracer.update(bool(self.before or self.after))

    def reset(self) -> None:
        """Disable every hook (for tests)."""
        with self.lock:
            self.hooks.clear()
            self.rebuild()


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
        with enabled.lock:
            if self not in enabled.hooks:
                enabled.hooks.append(self)
                enabled.rebuild()
        return self

    def disable(self) -> AsyncHook:
        with enabled.lock:
            if self in enabled.hooks:
                enabled.hooks.remove(self)
                enabled.rebuild()
        return self

    @property
    def enabled(self) -> bool:
        return self in enabled.hooks


def create_hook(
    init: InitCallback | None = None,
    before: IdCallback | None = None,
    after: IdCallback | None = None,
    destroy: IdCallback | None = None,
) -> AsyncHook:
    """Return a disabled :class:`AsyncHook`; call ``.enable()`` to start receiving events."""
    return AsyncHook(init=init, before=before, after=after, destroy=destroy)


def _call(callbacks: tuple[Callable[..., Any], ...], *args: Any) -> None:
    for cb in callbacks:
        try:
            cb(*args)
        except Exception:
            log.exception("hook callback %r raised; ignored", cb)


def emit_init(eid: int, kind: str, trigger_eid: int, resource: Any) -> None:
    if enabled.init:
        _call(enabled.init, eid, kind, trigger_eid, resource)


def emit_destroy(eid: int) -> None:
    if _switch_tracer.active:
        _switch_tracer.leave(eid)
    if enabled.destroy:
        _call(enabled.destroy, eid)


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
                _call(enabled.after, left)
            context = current_context.get()
            if context is not None:
                unit = current_unit.get()
                if unit is None or unit.context is not context:
                    unit = context.unit  # a request's own unit (made at its start while hooked)
                # eid 0: a greenlet's pending unit (created while no hook was enabled, and
                # never asked for its id): no before/after for it.
                if unit is not None and unit.eid:
                    self.inside = unit.eid
                    _call(enabled.before, unit.eid)
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
            _call(enabled.after, eid)

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
#: The enabled hooks of this process (``state.reset_all()`` disables them all).
enabled = holds_state(EnabledHooks())
