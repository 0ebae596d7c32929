"""What a live-view hit costs the other requests of a ``gunicorn -k gevent -w 1`` worker.

The worker (``tests/liveview_stall_app.py``: the live view on, ``REQCTX_TRACE_KEEP=2000``) first
serves ``REQUESTS`` requests of ``CHILDREN`` greenlets each, so its ring holds that many large
traces; then each live-view URL is fetched once.  A greenlet in the worker sleeps 5 ms at a
time: the CPU time the worker's thread spent while it slept is how long the hub was kept from
the other requests (the stall; the wall-clock lateness is printed too, but on a busy machine
it also counts time the OS gave to other processes).  ``--baseline-rev REV`` runs the same
against the package as it is at git revision REV (``git archive``), for before/after.

    python benchmarks/bench_liveview.py [--baseline-rev REV] [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from _common import QUICK, REPO, emit, export_package, row

sys.path.insert(0, os.path.join(REPO, "tests"))
from servers import TESTS_DIR, GunicornServer, run_load

GOAL_MS = 50.0
REQUESTS = 40 if QUICK else 200
CHILDREN = 1000
BASELINE_REV = sys.argv[sys.argv.index("--baseline-rev") + 1] if "--baseline-rev" in sys.argv else None
URLS = [
    "/_reqctx/?last=1",
    "/_reqctx/",
    "/_reqctx/json",
    f"/_reqctx/json?last={REQUESTS}",
    f"/_reqctx/chrome-trace.json?last={REQUESTS}",
]


def measure(label: str, tree: str) -> list[dict]:
    env = {"PYTHONPATH": os.pathsep.join([TESTS_DIR, tree])}
    rows = []
    section = f"live view under gunicorn -k gevent -w 1, {REQUESTS} kept traces of {CHILDREN} greenlets"
    with GunicornServer("gevent", app="liveview_stall_app:app", env=env, startup_timeout=60) as server:
        fanout = f"/fanout?children={CHILDREN}&max_ms=2"
        run_load(server, path=fanout, requests=REQUESTS, concurrency=5, timeout=600)
        server.wait_idle(timeout=60)
        for url in URLS:
            server.get_json("/stall")  # reset the meter
            start = time.perf_counter()
            status, _headers, body = server.request(url, timeout=300)
            took = time.perf_counter() - start
            stall = server.get_json("/stall")
            assert status == 200, (url, status)
            met = stall["worst_ms"] <= GOAL_MS
            goal = {"goal": f"<= {GOAL_MS:g} ms", "met": met} if label == "now" else {}
            rows += [
                row(section, f"{url} ({label}): response", len(body) / 1e6, "MB"),
                row(section, f"{url} ({label}): time to answer", took * 1000, "ms"),
                row(section, f"{url} ({label}): worst stall, CPU", stall["worst_ms"], "ms", **goal),
                row(section, f"{url} ({label}): worst stall, wall", stall["worst_late_ms"], "ms"),
            ]
    return rows


def main() -> None:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as old_tree:
        if BASELINE_REV is not None:
            rows += measure(f"at {BASELINE_REV}", export_package(BASELINE_REV, old_tree))
        rows += measure("now", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    emit(rows, [f"python {sys.version.split()[0]}; JSON and Chrome trace show the last 20 unless ?last=N"])


if __name__ == "__main__":
    main()
