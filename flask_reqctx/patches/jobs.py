"""Pool jobs whose init gets the object their submit returns (a Future, an AsyncResult).

A pool's ``submit`` makes the job's unit before queuing it, but the Future it returns only
exists once the job is queued, when a worker may already have taken it.  So init fires
after queuing (:func:`flask_reqctx.registry.announce`), and while lifecycle hooks are
enabled (only then) the job first waits at a gate its submitter holds until that init has
fired: init still precedes the job's first line and the init of any child it makes.
"""

from __future__ import annotations

from typing import Any

from ..registry import Unit, announce

__all__: list[str] = []  # internal: flask_reqctx.patches.install() applies it


class Gated:
    """``job`` run once ``gate`` (a held lock) is released."""

    __slots__ = ("gate", "job")

    def __init__(self, gate: Any, job: Any) -> None:
        self.gate, self.job = gate, job

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        wait_for(self.gate)
        return self.job(*args, **kwargs)


def wait_for(gate: Any) -> None:
    """Return once the submitter has released ``gate`` (its job's init has fired)."""
    with gate:
        pass


def announce_job(unit: Unit, gate: Any, resource: Any, fn: Any) -> None:
    """Fire the init of a job's ``unit`` with ``resource`` (noting that it runs ``fn``, for
    labels), then release ``gate``: also when a hook raises, or the job would never run."""
    try:
        if fn is not None:
            from ..unitinfo import note_job  # loaded once hooks are on, not by the core

            note_job(resource, fn)
        announce(unit, resource)
    finally:
        gate.release()


def abandon(unit: Unit, gate: Any, fn: Any) -> None:
    """The submit raised: the job's unit ends, after its init (given ``fn``: no Future exists)."""
    if gate is not None:
        announce_job(unit, gate, fn, None)
    unit.end()
