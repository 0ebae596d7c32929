"""Flask ``async def`` views under ``gunicorn -k gevent``, with and without ReqCtx.

Not a benchmark: a reproduction of the README caveat.  For each variant it starts
``gunicorn -k gevent -w 1`` on loopback (``benchmarks/async_views_app.py``), sends
``--requests`` GETs to an ``async def`` view at ``--concurrency`` in flight
(``tests/load_client.py``), and prints how many failed and the errors the tracebacks end
with (asgiref's "You cannot use AsyncToSync in the same thread as an async event loop", and
``asyncio.run()`` refusing to start a loop while another greenlet's loop runs in the thread).

    python benchmarks/async_views_gevent.py [--requests 2000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from servers import GunicornServer, run_load  # noqa: E402


def _settled_errors(server: GunicornServer, limit: float = 5.0) -> Counter[str]:
    """The last line of each traceback in the server's log (``SomeError: message``), counted
    once the worker has written them all (the log stops growing; bounded)."""
    size, deadline = -1, time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.5)
        log = server.log(None)
        if len(log) == size:
            break
        size = len(log)
    return Counter(line for line in log.splitlines() if re.match(r"\w+(Error|Exception): ", line))


def measure(with_reqctx: bool, requests: int, concurrency: int) -> dict[str, object]:
    env = {
        "ASYNC_REQCTX": "1" if with_reqctx else "0",
        "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "benchmarks"), REPO]),
    }
    with GunicornServer(app="async_views_app:app", env=env, worker_connections=1000) as server:
        report = run_load(
            server, path="/async", requests=requests, concurrency=concurrency, detail=False, timeout=300
        )
        errors = _settled_errors(server)
    statuses = report["statuses"]
    return {
        "reqctx": with_reqctx,
        "requests": requests,
        "concurrency": concurrency,
        "max_in_flight": report["max_in_flight"],
        "ok": statuses.get("200", 0),
        "failed": requests - statuses.get("200", 0),
        "statuses": statuses,
        "errors": errors,
        "client_errors": report["error_count"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    for with_reqctx in (False, True):
        result = measure(with_reqctx, args.requests, args.concurrency)
        print(
            f"{'with' if with_reqctx else 'without'} ReqCtx: {result['failed']} of {result['requests']} "
            f"failed at concurrency {result['concurrency']} (max in flight {result['max_in_flight']}); "
            f"statuses {result['statuses']}; client errors {result['client_errors']}"
        )
        for line, count in result["errors"].most_common():  # type: ignore[attr-defined]
            print(f"    {count} x {line}")


if __name__ == "__main__":
    main()
