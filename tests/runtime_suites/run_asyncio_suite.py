"""Run a subset of CPython's own asyncio tests in a request's state, and prove the state held.

The interpreter's ``test`` package carries asyncio's tests.  Run with ``unittest`` in one
process that loads ``sitecustomize.py`` (flask_reqctx imported first, a context bound),
they check what the extension patches there: ``BaseEventLoop.create_task``, task
factories old and new, contexts of tasks, task groups, ``to_thread`` and executors.
The process's record must show the state held and units created by the tasks.

Usage: ``python tests/runtime_suites/run_asyncio_suite.py [test.test_asyncio.x ...]`` (the
tox envs ``py3XX-asyncio-suite``); names given replace the default subset.
"""

from __future__ import annotations

import importlib.util
import sys

from request_state import Record, report, run_in_request_state, state_problems

#: About 20 s on 2 busy cores.  Left out: ``test_runners`` (its ``interrupt_main`` tests
#: hang now and then under load, also without flask_reqctx) and the rest of
#: ``test_tasks`` (a minute; the same create_task path as the classes kept here).
TESTS = (
    "test.test_asyncio.test_base_events",
    "test.test_asyncio.test_context",
    "test.test_asyncio.test_taskgroups",
    "test.test_asyncio.test_threads",
    "test.test_asyncio.test_tasks.CTask_CFuture_Tests",
    "test.test_asyncio.test_tasks.CoroutineGatherTests",
    "test.test_asyncio.test_tasks.RunCoroutineThreadsafeTests",
)
RUN_TIMEOUT = 600


def _is_the_test_process(record: Record) -> bool:
    argv: list[str] = record["argv"]
    return argv[1:3] == ["-m", "unittest"]


def main(argv: list[str]) -> int:
    if importlib.util.find_spec("test.test_asyncio") is None:
        print("asyncio-suite: this Python has no `test` package (Debian: libpython3-testsuite)", flush=True)
        return 1
    tests = argv or list(TESTS)
    status, records, crashes = run_in_request_state([sys.executable, "-m", "unittest", *tests], RUN_TIMEOUT)
    runs = [r for r in records if _is_the_test_process(r)]
    problems = state_problems("unittest", runs, must_create=True)
    return report(
        "asyncio-suite", f"{len(tests)} CPython asyncio test modules/classes", status, problems, crashes
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
