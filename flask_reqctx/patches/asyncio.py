"""``asyncio``: each task created in a context gets a unit of its own.

Tasks copy their creator's ``contextvars`` already, so the request context reaches them
without help; what ``BaseEventLoop.create_task`` adds is the task's own unit (its
``execution_id()``, init and destroy).  Its init gets the Task, once made (the task cannot
run before ``create_task`` returns); its destroy is the Task's done callback.  A task
factory set with ``loop.set_task_factory`` is called exactly as asyncio calls it: with
``context=`` only when the caller passed one, so old-style two-argument factories keep
working.
"""

from __future__ import annotations

import asyncio
import functools
from contextvars import Context, copy_context
from typing import Any

from ..context import current_context, current_unit
from ..registry import announce, current, open_unit

__all__: list[str] = []  # internal: flask_reqctx.patches.install() applies it


def install() -> None:
    Loop = asyncio.BaseEventLoop
    original_create_task = Loop.create_task

    @functools.wraps(original_create_task)
    def create_task(self: Any, coro: Any, *, name: Any = None, context: Context | None = None) -> Any:
        request_context = current_context.get() if context is None else context.get(current_context)
        if request_context is None:
            return original_create_task(self, coro, name=name, context=context)
        task_vars = copy_context() if context is None else context  # a given context is the task's own
        parent = task_vars.run(current)
        unit = open_unit("task", request_context, None, parent.eid, init=False)
        try:
            task_vars.run(current_unit.set, unit)
            if context is None:  # the task (or the factory) copies the context current now
                task = task_vars.run(original_create_task, self, coro, name=name)
            else:
                task = original_create_task(self, coro, name=name, context=task_vars)
        except BaseException:
            announce(unit, coro)  # no Task was made: init gets what it would have run
            unit.end()
            raise
        # Init gets the Task: it cannot have run yet (its first step is only scheduled).
        announce(unit, task)
        task.add_done_callback(unit.end)
        return task

    Loop.create_task = create_task  # type: ignore[method-assign]
