"""``asyncio``: each task created in a context gets a unit of its own.

Tasks copy their creator's ``contextvars`` already, so the request context reaches them
without help; what ``BaseEventLoop.create_task`` adds is the task's own unit (its
``execution_id()``, init and destroy); its destroy is the Task's done callback.

Init fires before any of the task's code.  Without a task factory (and without 3.14's
``eager_start=True``) a task cannot run before ``create_task`` returns, so init gets the
Task.  An eager task (3.12+: ``loop.set_task_factory(asyncio.eager_task_factory)``, or any
factory, which may start it) runs its first step *inside* ``create_task``: there init fires
before the call and gets the coroutine the task will run (the Task does not exist yet).

The patch takes and forwards exactly what the running Python's ``create_task`` takes
(``name=``, ``context=``, 3.14's ``eager_start=``, 3.13.3+'s ``**kwargs``), unchanged; a
task factory is called exactly as asyncio calls it (``context=`` only when the caller
passed one, so old-style two-argument factories keep working).
"""

from __future__ import annotations

import asyncio
import functools
from contextvars import copy_context
from typing import Any

from ..context import current_context, current_unit
from ..registry import announce, current, open_unit

__all__: list[str] = []  # internal: flask_reqctx.patches.install() applies it


def install() -> None:
    Loop = asyncio.BaseEventLoop
    original_create_task = Loop.create_task

    @functools.wraps(original_create_task)
    def create_task(self: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
        context = kwargs.get("context")
        request_context = current_context.get() if context is None else context.get(current_context)
        if request_context is None:
            return original_create_task(self, coro, *args, **kwargs)
        task_vars = copy_context() if context is None else context  # a given context is the task's own
        parent = task_vars.run(current)
        unit = open_unit("task", request_context, None, parent.eid, init=False)
        may_run_now = kwargs.get("eager_start") or self.get_task_factory() is not None
        try:
            if may_run_now:  # its first step may run inside the call: init first
                announce(unit, coro)
            task_vars.run(current_unit.set, unit)
            if context is None:  # the task (or the factory) copies the context current now
                task = task_vars.run(original_create_task, self, coro, *args, **kwargs)
            else:
                task = original_create_task(self, coro, *args, **kwargs)
        except BaseException:
            if not may_run_now:
                announce(unit, coro)  # no Task was made: init gets what it would have run
            unit.end()
            raise
        if not may_run_now:  # the Task's first step is only scheduled: init gets the Task
            announce(unit, task)
        task.add_done_callback(unit.end)  # a task already done (eagerly) gets it called soon
        return task

    Loop.create_task = create_task  # type: ignore[method-assign]

