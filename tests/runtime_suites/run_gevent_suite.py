"""Run a subset of gevent's own test suite in a request's state, and prove the state held.

gevent ships its tests in its wheel (``python -m gevent.tests``, one process per test
module).  With this folder first on ``PYTHONPATH`` each of those processes loads
``sitecustomize.py``: ``flask_reqctx`` imported first, a context bound in the main thread.
gevent's assertions about its own contracts (``has_links()``, ``spawn_later`` type checks,
``unlink`` by identity, pools, locals, thread pools) must hold there as in plain gevent.

Afterwards every test module's process must have left a record showing the patches
installed and the context still bound, and those in :data:`CREATE_UNITS` must have
created units from it; otherwise the run fails even if gevent's runner passed.

Usage: ``python tests/runtime_suites/run_gevent_suite.py [test__name ...]`` (the tox env
``gevent-suite``); names given replace the default subset.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

SITE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SITE_DIR.parent.parent

#: gevent test modules whose tests create greenlets, threads or pool jobs while the
#: context is bound: each must show units created from it.  Chosen for what the
#: extension patches: Greenlet/spawn/spawn_later, Group/Pool, links and waiters, locals,
#: threads, concurrent.futures and gevent's thread pool, and the servers gunicorn runs.
CREATE_UNITS = (
    "test__greenlet",
    "test__greenletset",
    "test__pool",
    "test__joinall",
    "test__iwait",
    "test__api",
    "test__local",
    "test__order",
    "test__util",
    "test__exc_info",
    "test__semaphore",
    "test__lock",
    "test__event",
    "test__queue",
    "test__hub",
    "test__hub_join",
    "test__systemerror",
    "test__threading",
    "test__threading_2",
    "test__threading_patched_local",
    "test__threadpool",
    "test__threadpool_executor_patched",
    "test__monkey_hub_in_thread",
    "test__server",
    "test__server_pywsgi",
)
#: Relevant modules that run their tests outside the bound context by design (a fresh
#: ``contextvars.Context``, or no greenlet created): the patches must not break them.
PATCHES_ONLY = (
    "test__contextvars",
    "test__timeout",
    "test__thread",
    "test__monkey",
)
#: Left out: ``test__monkey_fork_atomic`` and ``test__monkey_futures_thread_fork`` start
#: ``python -c pass`` children within gevent's 2 s test timeout, and here each child loads
#: flask_reqctx too: they time out on a busy 2-core machine, whatever the patches do.
#: The whole run is bounded; gevent's runner also times out each test on its own.
RUN_TIMEOUT = 900


def _package_parent() -> str:
    """The folder holding the ``flask_reqctx`` to test: the installed one (tox), else this
    checkout's, so that the test processes import the very package this run is about."""
    sys.path.append(str(REPO_ROOT))
    spec = importlib.util.find_spec("flask_reqctx")
    if spec is None or spec.origin is None:
        raise SystemExit("gevent-suite: flask_reqctx is not importable")
    return str(Path(spec.origin).resolve().parent.parent)


def _run_gevent_tests(modules: list[str], records: str) -> int:
    env = dict(os.environ)
    env.pop("FLASK_REQCTX_PATCH", None)  # the patches must be in force
    paths = (str(SITE_DIR), _package_parent(), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["REQCTX_SUITE_RECORDS"] = records
    cmd = [
        sys.executable, "-m", "gevent.tests",
        "-j2", "--no-combine",  # one process per module: one record per module
        "-u-network",  # no network here; keep only loopback tests
        "--second-chance",  # rerun a failed module once: timing flakes pass, real breaks do not
        *modules,
    ]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"gevent-suite: gevent's runner did not finish in {RUN_TIMEOUT} s", flush=True)
        return 1


def _module_of(record: dict[str, Any]) -> str | None:
    """The ``gevent.tests`` module a test process ran (``-mgevent.tests.test__x``)."""
    argv: list[str] = record["argv"]
    for i, arg in enumerate(argv):
        if not arg.startswith("-m"):
            continue
        name = arg[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
        if name.startswith("gevent.tests.test"):
            return name.rpartition(".")[2]
    return None


def check_records(
    modules: Iterable[str], records: str, must_create: Collection[str] = CREATE_UNITS
) -> list[str]:
    """What is wrong with the state each module ran in; empty when all held."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for path in Path(records).glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        module = _module_of(record)
        if module is not None:
            seen.setdefault(module, []).append(record)
    problems = []
    for module in modules:
        runs = seen.get(module)
        if not runs:
            problems.append(f"{module}: no record (flask_reqctx not loaded, or the process died)")
            continue
        for record in runs:
            if not (record["installed"] and record["bound"]):
                problems.append(f"{module}: patches installed={record['installed']}, bound={record['bound']}")
            if module in must_create and record["created"] < 2:
                problems.append(f"{module}: created no unit from the bound context")
    return problems


def main(argv: list[str]) -> int:
    modules = argv or [*CREATE_UNITS, *PATCHES_ONLY]
    with tempfile.TemporaryDirectory(prefix="reqctx-suite-") as records:
        status = _run_gevent_tests(modules, records)
        problems = check_records(modules, records)
    for problem in problems:
        print(f"gevent-suite: state not in force: {problem}", flush=True)
    verdict = "passed" if status == 0 and not problems else "FAILED"
    print(
        f"gevent-suite: {len(modules)} gevent test modules in a request's state: {verdict}"
        f" (gevent runner exit {status}, {len(problems)} state problems)",
        flush=True,
    )
    return 0 if verdict == "passed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
