"""Other libraries' private names: a release that moves one switches off only what needs it.

Each install runs in a fresh interpreter against a stand-in that lacks the name (the
module or class as a release without it would have it): ``import flask_reqctx`` works,
warns once naming the library, its version and what no longer works; requests, ids and
logging keep working, and so do the other patches.
"""

from __future__ import annotations

import types
import warnings

import pytest
from fresh_interpreter import run_in_fresh_interpreter

from flask_reqctx.patches.internals import private_name
from flask_reqctx.unitinfo import _task_outcome

#: Imports flask_reqctx with warnings recorded; ``LOST`` is the one warning it gave.
IMPORT_RECORDING_WARNINGS = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import flask_reqctx
(LOST,) = [str(w.message) for w in caught if str(w.message).startswith("flask_reqctx:")]
assert issubclass(caught[0].category, RuntimeWarning)
print(LOST)
"""

#: A request through the extension: its id comes back, the view sees it, a log line carries it.
REQUESTS_IDS_AND_LOGGING_WORK = """
import logging
from flask import Flask
from flask_reqctx import ReqCtx, get_request_context, stats
from flask_reqctx.logging import RequestIdFilter

records = []
handler = logging.Handler()
handler.emit = records.append
handler.addFilter(RequestIdFilter())
log = logging.getLogger("standin")
log.addHandler(handler)
log.setLevel(logging.INFO)
app = Flask("standin")
ReqCtx(app)

@app.get("/")
def view():
    log.info("in the view")
    return get_request_context().request_id

response = app.test_client().get("/", headers={"X-Request-ID": "standin-1"})
assert response.status_code == 200 and response.text == "standin-1", response.text
assert response.headers["X-Request-ID"] == "standin-1"
assert [r.request_id for r in records] == ["standin-1"]
assert stats()["live"] == 0
"""


def test_a_python_whose_thread_lacks_bootstrap_inner() -> None:
    run_in_fresh_interpreter(
        """
import threading
bootstrap = threading.Thread._bootstrap_inner
del threading.Thread._bootstrap_inner  # the stand-in: a Thread without the name
"""
        + IMPORT_RECORDING_WARNINGS
        + """
threading.Thread._bootstrap_inner = bootstrap  # back, so that threads can run at all
import platform
PREFIX = f"flask_reqctx: Python {platform.python_version()} has no Thread._bootstrap_inner: "
assert LOST.startswith(PREFIX), LOST
assert "threading.Thread no longer inherit the context" in LOST, LOST
"""
        + REQUESTS_IDS_AND_LOGGING_WORK
        + """
from concurrent.futures import ThreadPoolExecutor
from flask_reqctx import create_request_context
with create_request_context(request_id="standin-2") as ctx:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(get_request_context()))
    thread.start()
    thread.join()
    assert seen == [None], seen  # switched off: the thread starts with no context
    with ThreadPoolExecutor(1) as pool:  # the executor's patch still works
        assert pool.submit(get_request_context).result() is ctx
"""
    )


@pytest.mark.parametrize("name", ["IMap", "IMapUnordered", "Greenlet"])
def test_a_gevent_whose_pool_lacks_a_module_global(name: str) -> None:
    run_in_fresh_interpreter(
        f"""
import gevent.pool
del gevent.pool.{name}  # the stand-in: gevent.pool without the name
"""
        + IMPORT_RECORDING_WARNINGS
        + f"""
from importlib.metadata import version
assert LOST.startswith(f"flask_reqctx: gevent {{version('gevent')}} has no gevent.pool.{name}: "), LOST
assert "imap_unordered" in LOST and "no longer inherit the context" in LOST, LOST
"""
        + REQUESTS_IDS_AND_LOGGING_WORK
        + """
import gevent
from flask_reqctx import create_request_context
with create_request_context(request_id="standin-3") as ctx:
    assert gevent.spawn(get_request_context).get() is ctx  # the other gevent patches still work
    assert gevent.pool.Pool(2).spawn(get_request_context).get() is ctx
"""
    )


class StandInTask:
    """A finished task of an asyncio that moved ``_exception``."""

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True


def test_a_python_whose_tasks_lack_exception_are_traced_as_ended() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _task_outcome(StandInTask()) == ("ended", None)
        assert _task_outcome(StandInTask()) == ("ended", None)
    (lost,) = [str(w.message) for w in caught]  # looked up once: one warning
    assert "has no StandInTask._exception" in lost and "finished task as 'ended'" in lost, lost


def test_the_helper_returns_what_is_there_and_warns_for_what_is_not() -> None:
    module = types.ModuleType("standin")
    module.there = 42  # type: ignore[attr-defined]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert private_name(module, "there", library="no-such-dist", lost="nothing") == 42
        assert private_name(module, "gone", library="no-such-dist", lost="X no longer works") is None
    assert [str(w.message) for w in caught] == [
        "flask_reqctx: no-such-dist (version unknown) has no standin.gone: X no longer works"
    ]
