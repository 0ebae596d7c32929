"""Run a subset of gevent's own test suite in a request's state, and prove the state held.

gevent ships its tests in its wheel (``python -m gevent.tests``, one process per test
module).  With this folder first on ``PYTHONPATH`` each of those processes loads
``sitecustomize.py``: ``flask_reqctx`` imported first, a context bound in the main thread.
gevent's assertions about its own contracts (``has_links()``, ``spawn_later`` type checks,
``unlink`` by identity, pools, locals, thread pools) must hold there as in plain gevent.

Afterwards every test module's process must have left a record showing the patches
installed and the context still bound, and those in :data:`CREATE_UNITS` must have
created units from it; otherwise the run fails even if gevent's runner passed.

Usage: ``python tests/runtime_suites/run_gevent_suite.py [test__name ...]`` (the tox envs
``py3XX-gevent-suite``); names given replace the default subset.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable

from request_state import Record, report, run_in_request_state, state_problems

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


def _module_of(record: Record) -> str | None:
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
    modules: Iterable[str], records: list[Record], must_create: Collection[str] = CREATE_UNITS
) -> list[str]:
    """What is wrong with the state each module ran in; empty when all held."""
    seen: dict[str, list[Record]] = {}
    for record in records:
        module = _module_of(record)
        if module is not None:
            seen.setdefault(module, []).append(record)
    problems = []
    for module in modules:
        problems += state_problems(module, seen.get(module, []), must_create=module in must_create)
    return problems


def main(argv: list[str]) -> int:
    modules = argv or [*CREATE_UNITS, *PATCHES_ONLY]
    cmd = [
        sys.executable, "-m", "gevent.tests",
        "-j2", "--no-combine",  # one process per module: one record per module
        "-u-network",  # no network here; keep only loopback tests
        "--second-chance",  # rerun a failed module once: timing flakes pass; breaks and crashes do not
        *modules,
    ]  # fmt: skip
    status, records, crashes = run_in_request_state(cmd, RUN_TIMEOUT)
    problems = check_records(modules, records)
    return report("gevent-suite", f"{len(modules)} gevent test modules", status, problems, crashes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
