"""A process that ends with units alive everywhere (not a test module; run by test_interpreter_exit).

``python ends_with_units_alive.py plain|monkey return|exit``: a context never closed, greenlets
suspended, never started, in a pool and in another thread's hub, daemon threads blocked, executor
and gevent thread pool jobs, a pending asyncio task, and never-started greenlets and threads in
reference cycles that only the interpreter's final collection frees (so their units' finalizers
run while it shuts down).  A destroy hook that runs while the interpreter is finalizing writes
to stderr; the test wants exit status 0 and nothing on stderr.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
import time

if sys.argv[1] == "monkey":
    from gevent import monkey

    monkey.patch_all()

import gevent
import gevent.pool

import flask_reqctx
from flask_reqctx import create_hook, create_request_context, get_request_context


def report_late(eid: int, _finalizing=sys.is_finalizing, _err=sys.__stderr__) -> None:
    if _finalizing():
        _err.write(f"destroy hook of unit {eid} ran while the interpreter was finalizing\n")


create_hook(init=lambda *_args: None, destroy=report_late).enable()
context = create_request_context(request_id="interpreter-exit")  # never closed
forever = threading.Event()


def sleeper() -> None:
    gevent.sleep(1000)


def hub_in_thread() -> None:
    suspended = [gevent.spawn(sleeper) for _ in range(5)]
    gevent.sleep(0)
    forever.wait()
    del suspended


suspended = [gevent.spawn(sleeper) for _ in range(20)]
never_started = [gevent.Greenlet(sleeper) for _ in range(5)]
pool = gevent.pool.Pool(4)
for _ in range(4):
    pool.spawn(sleeper)
gevent.sleep(0)
for target in (forever.wait, forever.wait, hub_in_thread):
    threading.Thread(target=target, daemon=True).start()
executor = concurrent.futures.ThreadPoolExecutor(2)
jobs = [executor.submit(time.sleep, 0.01) for _ in range(6)]
pooled = [gevent.get_hub().threadpool.spawn(time.sleep, 0.01) for _ in range(4)]
loop = asyncio.new_event_loop()
pending_task = loop.create_task(asyncio.sleep(1000))  # noqa: RUF006 (kept to the end)
loop.run_until_complete(asyncio.sleep(0))
gc.disable()  # the cycles below are freed only by the interpreter's final collection
for _ in range(5):
    cycle: list[object] = [gevent.Greenlet(sleeper), threading.Thread(target=print)]
    cycle.append(cycle)
del cycle
assert get_request_context() is context
print("live units at exit:", flask_reqctx.stats()["live"], flush=True)
if sys.argv[2] == "exit":
    sys.exit(0)
