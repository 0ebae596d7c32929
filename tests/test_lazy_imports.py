"""``import flask_reqctx`` loads the core only; each runtime is patched when the app imports it.

The checks on what an import loads run in fresh interpreters (this one has everything loaded);
the import watcher's own contract (once, after a failed import, under threads, a raising
patch) is checked in-process on throwaway modules.
"""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
import threading

import pytest
from fresh_interpreter import run_in_fresh_interpreter

from flask_reqctx.patches.on_import import when_imported

#: Loaded by ``import flask_reqctx`` only if the app uses them (or asks for them).
NOT_LOADED = [
    "asyncio",
    "concurrent",
    "concurrent.futures",
    "gevent",
    "greenlet",
    "celery",
    "requests",
    "opentelemetry",
    "flask_reqctx.liveview",
    "flask_reqctx.liveview_render",
    "flask_reqctx.tracing",
    "flask_reqctx.chrometrace",
    "flask_reqctx.unitinfo",
    "flask_reqctx.celery",
    "flask_reqctx.logging",
]


def test_import_loads_no_runtime_and_no_tracing_or_live_view():
    run_in_fresh_interpreter(
        f"""
import sys
import flask
before = set(sys.modules)
import flask_reqctx
from flask import Flask
flask_reqctx.ReqCtx(Flask("plain"))
loaded = set(sys.modules) - before
unwanted = sorted(loaded & set({NOT_LOADED!r}))
assert not unwanted, unwanted
assert flask_reqctx.patches.installed() and flask_reqctx.patches.patched() == {{"threading"}}
"""
    )


def test_tracing_and_the_live_view_load_when_an_app_asks():
    run_in_fresh_interpreter(
        """
import sys
import flask_reqctx
from flask import Flask
flask_reqctx.ReqCtx(Flask("traced"), trace=True)
assert "flask_reqctx.tracing" in sys.modules and "flask_reqctx.liveview" not in sys.modules
flask_reqctx.ReqCtx(Flask("viewed"), live_view=True)
assert "flask_reqctx.liveview" in sys.modules
"""
    )


#: In a context, each runtime's child sees it and gets a unit of its own (its init fires).
_CHILDREN_SEE_THE_CONTEXT = """
import flask_reqctx
from flask_reqctx import create_hook, create_request_context, get_request_context

inits = []
create_hook(init=lambda eid, kind, trigger, resource: inits.append(kind)).enable()
with create_request_context(request_id="outer") as ctx:
    seen = {}
    seen["greenlet"] = gevent.spawn(get_request_context).get()
    seen["from-import spawn"] = spawn(get_request_context).get()
    seen["pool"] = gevent.pool.Pool(2).spawn(get_request_context).get()
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        seen["executor job"] = executor.submit(get_request_context).result()

    async def main():
        return await asyncio.create_task(asyncio.sleep(0, get_request_context()))

    seen["task"] = asyncio.run(main())
    assert all(found is ctx for found in seen.values()), seen
assert inits.count("greenlet") == 3 and inits.count("thread") == 1, inits
assert inits.count("task") >= 2, inits  # asyncio.run's main task, and the one it creates
assert flask_reqctx.patches.patched() == {
    "threading", "asyncio", "gevent", "concurrent.futures.thread"
}, flask_reqctx.patches.patched()
for module in (asyncio, gevent, concurrent.futures.thread):
    # nothing of the watcher stays on the module
    assert module.__loader__ is module.__spec__.loader, module
    assert type(module.__loader__).__name__ == "SourceFileLoader", module.__loader__
"""


def test_runtimes_imported_after_flask_reqctx_are_patched_as_they_are_imported():
    run_in_fresh_interpreter(
        "import sys\nimport flask_reqctx\n"
        "assert 'gevent' not in sys.modules and 'asyncio' not in sys.modules\n"
        "import asyncio, concurrent.futures, gevent, gevent.pool\nfrom gevent import spawn\n"
        + _CHILDREN_SEE_THE_CONTEXT
    )


def test_runtimes_imported_before_flask_reqctx_are_patched_at_its_import():
    run_in_fresh_interpreter(
        "import asyncio, concurrent.futures, gevent, gevent.pool\nimport flask_reqctx\n"
        "from gevent import spawn\n" + _CHILDREN_SEE_THE_CONTEXT
    )


def test_monkey_patching_after_flask_reqctx_keeps_propagation():
    """``import flask_reqctx`` first, ``patch_all()`` later (the order gunicorn's gevent
    worker sees with ``--preload``; the server tests cover the worker itself)."""
    run_in_fresh_interpreter(
        """
import flask_reqctx
from gevent import monkey
monkey.patch_all()
import threading, gevent
from flask_reqctx import create_request_context, get_request_context
with create_request_context() as ctx:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(get_request_context()))
    thread.start()
    thread.join()
    assert seen == [ctx] and gevent.spawn(get_request_context).get() is ctx
assert monkey.is_module_patched("threading")
assert flask_reqctx.stats()["live"] == 0, flask_reqctx.stats()
"""
    )


def test_a_reload_does_not_patch_twice():
    run_in_fresh_interpreter(
        """
import asyncio, concurrent.futures, importlib
import flask_reqctx
from flask_reqctx import create_hook, create_request_context

def units_made():
    inits = []
    hook = create_hook(init=lambda eid, kind, trigger, resource: inits.append(kind)).enable()
    with create_request_context():
        async def main():
            await asyncio.create_task(asyncio.sleep(0))

        asyncio.run(main())
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            executor.submit(int).result()
    hook.disable()
    return inits

before = units_made()
assert before.count("thread") == 1 and before.count("task") >= 2, before
importlib.reload(asyncio)
importlib.reload(concurrent.futures)
after = units_made()
assert after == before, (before, after)
"""
    )


def test_patching_is_off_with_the_environment_switch_until_install():
    run_in_fresh_interpreter(
        """
import os
os.environ["FLASK_REQCTX_PATCH"] = "0"
import threading
import flask_reqctx
from flask_reqctx import create_request_context, get_request_context

def seen_by_a_thread():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(get_request_context()))
    thread.start()
    thread.join()
    return seen[0]

with create_request_context() as ctx:
    assert not flask_reqctx.patches.installed() and seen_by_a_thread() is None
    flask_reqctx.patches.install()
    flask_reqctx.patches.install()  # idempotent
    assert seen_by_a_thread() is ctx
"""
    )


# -- the watcher's contract, on throwaway modules ------------------------------------------------


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for throwaway modules (removed from ``sys.modules`` after)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("reqctx_throwaway"):
            del sys.modules[name]


def _write(folder, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    importlib.invalidate_caches()


def _count_patches(into: list[str]):
    def patch(module) -> None:
        into.append(module.__name__)
        module.PATCHED = True

    return patch


def test_a_module_is_patched_once_before_the_importer_sees_it(module_dir):
    _write(module_dir, "reqctx_throwaway_a", "VALUE = 1\n")
    runs: list[str] = []
    when_imported("reqctx_throwaway_a", _count_patches(runs))
    from reqctx_throwaway_a import PATCHED  # bound by the importing statement: patched already

    module = sys.modules["reqctx_throwaway_a"]
    importlib.reload(module)
    assert PATCHED and runs == ["reqctx_throwaway_a"]
    assert module.__loader__ is module.__spec__.loader
    assert type(module.__loader__).__name__ == "SourceFileLoader"


def test_an_imported_module_is_patched_at_once(module_dir):
    _write(module_dir, "reqctx_throwaway_b", "VALUE = 1\n")
    import reqctx_throwaway_b

    runs: list[str] = []
    when_imported("reqctx_throwaway_b", _count_patches(runs))
    assert runs == ["reqctx_throwaway_b"] and reqctx_throwaway_b.PATCHED


def test_a_failed_import_is_patched_when_an_import_succeeds(module_dir):
    _write(module_dir, "reqctx_throwaway_c", "raise ImportError('not yet')\n")
    runs: list[str] = []
    when_imported("reqctx_throwaway_c", _count_patches(runs))
    with pytest.raises(ImportError, match="not yet"):
        import reqctx_throwaway_c
    assert runs == []
    _write(module_dir, "reqctx_throwaway_c", "VALUE = 2\n")
    import reqctx_throwaway_c

    assert runs == ["reqctx_throwaway_c"] and reqctx_throwaway_c.PATCHED


def test_a_raising_patch_is_logged_and_the_import_succeeds(module_dir, caplog):
    _write(module_dir, "reqctx_throwaway_d", "VALUE = 3\n")

    def broken(module) -> None:
        raise RuntimeError("broken patch")

    when_imported("reqctx_throwaway_d", broken)
    with caplog.at_level(logging.ERROR, logger="flask_reqctx"):
        import reqctx_throwaway_d
    assert reqctx_throwaway_d.VALUE == 3
    assert "patching reqctx_throwaway_d failed" in caplog.text and "broken patch" in caplog.text


def test_threads_importing_at_once_all_get_the_patched_module_patched_once(module_dir):
    # The module's code waits at a gate, so the other threads' imports arrive while it runs.
    gate = threading.Event()
    sys.modules["reqctx_throwaway_gate"] = gate  # type: ignore[assignment]
    _write(module_dir, "reqctx_throwaway_e", "import reqctx_throwaway_gate\nreqctx_throwaway_gate.wait(10)\n")
    runs: list[str] = []
    when_imported("reqctx_throwaway_e", _count_patches(runs))
    seen: list[bool] = []

    def importer() -> None:
        module = importlib.import_module("reqctx_throwaway_e")
        seen.append(getattr(module, "PATCHED", False))

    threads = [threading.Thread(target=importer) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert seen == [True] * 8 and runs == ["reqctx_throwaway_e"]
