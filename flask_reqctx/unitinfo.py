"""What a trace says about one execution unit: where it was created, what it runs, how it ended.

Everything here is read from the objects the init hook hands over (the greenlet, thread,
an executor job's Future, a gevent thread pool job's AsyncResult or an asyncio Task),
cheaply: the creation site is one frame (the first one outside flask_reqctx, gevent,
threading, concurrent.futures and asyncio), never a stack; outcomes are read at destroy from
a weak reference, so a trace never keeps a finished unit's object alive.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from importlib.util import find_spec
from types import CodeType, FrameType
from typing import Any
from weakref import WeakKeyDictionary

from .patches.internals import private_name
from .state import holds_state

__all__: list[str] = []  # internal: read by flask_reqctx.tracing

#: Attribute a traced thread carries so the excepthook can mark it raised.
_THREAD_RAISED = "_reqctx_trace_raised"


def _skipped_places() -> tuple[tuple[str, ...], frozenset[str]]:
    """Directories and files whose frames are machinery, not the code that created a unit."""
    dirs = [os.path.dirname(os.path.abspath(__file__))]
    for name in ("gevent", "greenlet", "concurrent.futures", "asyncio"):
        try:
            spec = find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs += list(spec.submodule_search_locations)
    files = frozenset({os.path.abspath(threading.__file__)})
    return tuple(os.path.join(os.path.abspath(d), "") for d in dirs), files


class _Knowledge:
    """What this module learns as units are described: which source files are machinery (by
    ``co_filename``: bounded by the number of source files), what each pool job runs (until its
    init reads it; weak keys), and greenlet's raw getters (bound once gevent is loaded)."""

    def __init__(self) -> None:
        self.skip: dict[str, bool] = {}
        #: The machinery's folders and files, found on the first creation site asked for.
        self.places: tuple[tuple[str, ...], frozenset[str]] | None = None
        #: What a pool job runs, where its resource (a Future, an AsyncResult) does not say:
        #: its label, noted at submit while hooks are enabled, taken by describe().
        self.job_labels: WeakKeyDictionary[Any, str | None] = WeakKeyDictionary()
        self.greenlet_state: _GreenletState | None = None

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


class _GreenletState:
    """Whether a greenlet is dead or active, read without gevent's own properties (which
    differ for a greenlet that never ran), and gevent's exit exception."""

    def __init__(self) -> None:
        import greenlet
        from gevent import GreenletExit

        self.dead: Callable[[Any], bool] = greenlet.greenlet.dead.__get__
        self.active: Callable[[Any], bool] = greenlet.greenlet.__bool__
        self.exit: type[BaseException] = GreenletExit


_known = holds_state(_Knowledge())


def creation_site() -> tuple[CodeType, int] | None:
    """``(code, line)`` of the innermost frame outside the propagation machinery, or None."""
    frame: FrameType | None = sys._getframe(2)
    skip = _known.skip
    places = _known.places
    if places is None:
        places = _known.places = _skipped_places()
    skip_dirs, skip_files = places
    while frame is not None:
        filename = frame.f_code.co_filename
        machinery = skip.get(filename)
        if machinery is None:
            path = os.path.abspath(filename)  # a sys.path entry like "tests/.." leaves ".." in it
            machinery = skip[filename] = path in skip_files or path.startswith(skip_dirs)
        if not machinery:
            return frame.f_code, frame.f_lineno
        frame = frame.f_back
    return None


def site_text(site: tuple[CodeType, int] | None) -> tuple[str | None, str | None]:
    """``("file:line", "function")`` for a site from :func:`creation_site`."""
    if site is None:
        return None, None
    code, line = site
    return f"{code.co_filename}:{line}", code.co_qualname


#: Reads a unit's outcome from its resource (None when the object is gone) at destroy.
Probe = Callable[[Any], tuple[str, str | None]]


def _qualname(fn: Any) -> str | None:
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else None


def _greenlet_outcome(greenlet: Any) -> tuple[str, str | None]:
    if greenlet is None:
        return "collected", None
    state = _known.greenlet_state
    if state is None:  # gevent is loaded by now: a greenlet of it is being described
        state = _known.greenlet_state = _GreenletState()
    # Destroy fires as the greenlet's ``run`` returns (still running) or when a greenlet that
    # never ran is freed: never switched to means neither dead nor running.
    if not (state.dead(greenlet) or state.active(greenlet)):
        return "never started", None
    error = greenlet.exception
    if error is not None:
        return "raised", type(error).__name__
    if isinstance(greenlet.value, state.exit):
        return "killed", None
    return "returned", None


def _thread_outcome(thread: Any) -> tuple[str, str | None]:
    if thread is None:
        return "collected", None
    if thread.ident is None:
        return "never started", None
    error = thread.__dict__.get(_THREAD_RAISED)
    return ("raised", error) if error is not None else ("returned", None)


def note_job(resource: Any, fn: Any) -> None:
    """Record that the job whose submit returned ``resource`` runs ``fn`` (for its label)."""
    _known.job_labels[resource] = _qualname(fn) or _qualname(type(fn))


def _future_outcome(future: Any) -> tuple[str, str | None]:
    if future is None:
        return "collected", None
    if future.cancelled():
        return "never started", None
    if not future.done():
        return "ended", None
    error = future.exception()
    return ("raised", type(error).__name__) if error is not None else ("returned", None)


def _task_outcome(task: Any) -> tuple[str, str | None]:
    if task is None:
        return "collected", None
    if task.cancelled():  # whether it had started, a finished task does not say cheaply
        return "killed", None
    if not task.done():
        return "ended", None
    # Not task.exception(): that marks it retrieved and silences asyncio's "never retrieved" log.
    if not _keeps_its_error(task.__class__):
        return "ended", None
    error = task._exception
    return ("raised", type(error).__name__) if error is not None else ("returned", None)


#: What a trace loses when asyncio moves ``Future._exception``.
_TASK_OUTCOME_LOST = "execution traces show a finished task as 'ended', not 'returned' or 'raised'"


@functools.cache
def _keeps_its_error(task_class: Any) -> bool:
    """Whether a task class has asyncio's ``_exception`` (read without marking it retrieved),
    looked up once per class."""
    return private_name(task_class, "_exception", library="Python", lost=_TASK_OUTCOME_LOST) is not None


def _result_outcome(result: Any) -> tuple[str, str | None]:
    """A gevent ``AsyncResult`` (a thread pool job's): read once delivered."""
    if result is None:
        return "collected", None
    if not result.ready():
        return "ended", None
    error = result.exception
    return ("raised", type(error).__name__) if error is not None else ("returned", None)


def describe(kind: str, resource: Any) -> tuple[str | None, weakref.ref[Any] | None, Probe | None]:
    """``(label, weak reference, probe)`` for a child unit's resource, at its init."""
    gevent = sys.modules.get("gevent")
    if gevent is not None and isinstance(resource, gevent.Greenlet):
        # Init fires before gevent's own __init__ (the hub, and so ``name``, is not set yet).
        label = _qualname(getattr(resource, "_run", None)) or type(resource).__name__
        return label, weakref.ref(resource), _greenlet_outcome
    if isinstance(resource, threading.Thread):
        return resource.name, weakref.ref(resource), _thread_outcome
    futures = sys.modules.get("concurrent.futures")
    if futures is not None and isinstance(resource, futures.Future):
        return _known.job_labels.pop(resource, None), weakref.ref(resource), _future_outcome
    aio = sys.modules.get("asyncio")
    if aio is not None and isinstance(resource, aio.Future):  # a Task, or a task factory's future
        get_coro = getattr(resource, "get_coro", None)
        return _qualname(get_coro()) if get_coro is not None else None, weakref.ref(resource), _task_outcome
    event = sys.modules.get("gevent.event")
    if event is not None and isinstance(resource, event.AsyncResult):
        return _known.job_labels.pop(resource, None), weakref.ref(resource), _result_outcome
    if kind == "task":
        return _qualname(resource), None, None
    return _qualname(resource) or _qualname(type(resource)), None, None


def _excepthook(previous: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def excepthook(args: Any) -> Any:
        thread = args.thread
        if thread is not None and args.exc_type is not None:
            thread.__dict__[_THREAD_RAISED] = args.exc_type.__name__
        return previous(args)

    excepthook.__reqctx_trace__ = True  # type: ignore[attr-defined]
    return excepthook


def install_thread_excepthook() -> None:
    """Chain ``threading.excepthook`` so a traced thread that raised is recorded as such."""
    current = threading.excepthook
    if not getattr(current, "__reqctx_trace__", False):
        threading.excepthook = _excepthook(current)
