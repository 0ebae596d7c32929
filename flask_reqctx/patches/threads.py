"""``threading`` and ``concurrent.futures``: threads and executor jobs inherit the context.

* ``threading.Thread.start`` captures (the child's unit and context are fixed here, in the
  starter) and ``Thread._bootstrap_inner`` runs the thread in them, then ends its unit.
* ``concurrent.futures.ThreadPoolExecutor.submit``: each job runs in its submitter's
  context; the pooled worker itself holds none between jobs, also when this very submit
  starts it.  The job's init gets its Future, and its destroy is the Future's done callback
  (see :mod:`.jobs`).
"""

from __future__ import annotations

import functools
import threading
from contextvars import Context
from typing import TYPE_CHECKING, Any

from .. import hooks
from ..registry import Unit, open_child
from .internals import private_name
from .jobs import Gated, abandon, announce_job

if TYPE_CHECKING:
    import concurrent.futures

__all__: list[str] = []  # internal: flask_reqctx.patches.install() applies it


_THREADS_LOST = "threads started with threading.Thread no longer inherit the context (executor jobs still do)"


def install_threading() -> None:
    Thread = threading.Thread
    original_start: Any = Thread.start
    original_bootstrap: Any = private_name(Thread, "_bootstrap_inner", library="Python", lost=_THREADS_LOST)
    if original_bootstrap is None:
        return

    @functools.wraps(original_start)
    def start(self: threading.Thread) -> None:
        child = open_child("thread", self)
        if child is None:
            original_start(self)
            return
        self._reqctx_child = child  # type: ignore[attr-defined]
        try:
            original_start(self)
        except BaseException:
            child[0].end()
            raise

    @functools.wraps(original_bootstrap)
    def _bootstrap_inner(self: threading.Thread) -> None:
        child: tuple[Unit, Context] | None = self.__dict__.pop("_reqctx_child", None)
        if child is None:
            original_bootstrap(self)
            return
        unit, child_vars = child
        try:
            child_vars.run(original_bootstrap, self)
        finally:
            unit.end()

    Thread.start = start  # type: ignore[method-assign]
    Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]


def install_executor() -> None:
    import concurrent.futures  # only once the app has imported it (see flask_reqctx.patches)

    Executor = concurrent.futures.ThreadPoolExecutor
    original_submit: Any = Executor.submit

    @functools.wraps(original_submit)
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        child = open_child("thread", None, init=False)  # init gets the Future, once it exists
        if child is None:
            plain: concurrent.futures.Future[Any] = original_submit(self, fn, *args, **kwargs)
            return plain
        unit, child_vars = child
        job: Any = child_vars.run
        gate = None
        if hooks.enabled.lifecycle:  # the worker may start the job at once: it waits for the init
            gate = threading.Lock()
            gate.acquire()
            job = Gated(gate, job)
        try:
            # Submitted from a blank context: a worker thread this submit starts must not
            # inherit the context (it serves later jobs of other requests).
            future: concurrent.futures.Future[Any] = Context().run(
                original_submit, self, job, fn, *args, **kwargs
            )
        except BaseException:
            abandon(unit, gate, fn)
            raise
        if gate is not None:
            announce_job(unit, gate, future, fn)
        future.add_done_callback(unit.end)  # also on cancellation, and on shutdown
        return future

    Executor.submit = submit  # type: ignore[method-assign]
