"""Process-wide state, kept in objects that one call resets (as blinker's ``_clear_state``).

A module that must remember something for the whole process (enabled hooks, installed
patches, kept traces, an integration's saved original) keeps it in one object with a
``reset()`` method and registers that object here with :func:`holds_state`.  Tests call
:func:`reset_all` instead of starting a fresh interpreter; nothing else should need it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

__all__ = ["reset_all"]


class Resettable(Protocol):
    def reset(self) -> None:
        """Return to the state the module had right after its import."""


S = TypeVar("S", bound=Resettable)

_holders: list[Resettable] = []


def holds_state(holder: S) -> S:
    """Register ``holder`` for :func:`reset_all`; returns it (usable at module level)."""
    _holders.append(holder)
    return holder


def reset_all() -> None:
    """Reset every registered holder, in registration order (for tests)."""
    for holder in _holders:
        holder.reset()
