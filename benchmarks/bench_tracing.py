"""7. Cost of execution traces (``REQCTX_TRACE``): per request and per fan-out, off vs on.

Two measurements, both at the WSGI level (no network), for a hello-world view and a view
fanning out to 10 greenlets:

* instructions per request under ``valgrind --tool=callgrind`` (bare Flask, ReqCtx with
  tracing off, ReqCtx with tracing on), each variant in its own interpreter, N requests
  minus 0 requests after the same warm-up (skipped without valgrind);
* CPU time per request, the three variants interleaved in one process.  The trace hook is
  process-wide, so it is enabled only around the "on" batches: the "off" batches run
  exactly as an app without ``REQCTX_TRACE`` does (no hook enabled).

"off" must equal ReqCtx as it was before tracing existed: with no app asking, no hook is
enabled and the request path is unchanged.  ``--baseline-rev REV`` also counts ReqCtx as it
is at git revision REV (exported with ``git archive``) in the same run, for that comparison.

    python benchmarks/bench_tracing.py [--baseline-rev REV]   # or: python benchmarks/run.py --only tracing
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import gevent
from _common import QUICK, REPO, clock, compared, emit, export_package, median, row
from flask import Flask
from werkzeug.test import EnvironBuilder

from flask_reqctx import ReqCtx, get_request_context, stats

VARIANTS = ("bare", "off", "on")
BASELINE_REV = sys.argv[sys.argv.index("--baseline-rev") + 1] if "--baseline-rev" in sys.argv else None
FANOUT = 10
REQUESTS = {"/": 300 if QUICK else 1000, "/fanout": 100 if QUICK else 300}
BATCH = {"/": 300 if QUICK else 1000, "/fanout": 60 if QUICK else 200}
ROUNDS = 7 if QUICK else 21


def make_app(variant: str) -> Flask:
    app = Flask(f"bench_tracing_{variant}")
    app.config["REQCTX_TRACE"] = variant == "on"

    @app.get("/")
    def hello() -> str:
        return "Hello, World!"

    # without flask_reqctx on the app, spawn with gevent's own class (as bench_wsgi does)
    spawn = gevent.greenlet.Greenlet.spawn if variant == "bare" else gevent.spawn

    @app.get("/fanout")
    def fanout() -> str:
        gevent.joinall([spawn(get_request_context) for _ in range(FANOUT)])
        return "Hello, World!"

    if variant != "bare":
        ReqCtx(app)
    return app


def environ_for(path: str) -> dict:
    return EnvironBuilder(path=path, headers={"User-Agent": "bench", "Accept": "*/*"}).get_environ()


def start_response(status: str, headers: list, exc_info: object = None) -> None:
    return None


def serve(app: Flask, environ: dict, n: int) -> None:
    for _ in range(n):
        body = app(environ.copy(), start_response)
        for _chunk in body:
            pass
        body.close()


#: The program callgrind measures: one variant, one path, warm-up then ``n`` requests.
WORKLOAD = f"""
import os, sys
import flask_reqctx  # first, from the tree in the working directory (_common puts REPO on sys.path)
assert flask_reqctx.__file__.startswith(os.getcwd()), flask_reqctx.__file__
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from bench_tracing import environ_for, make_app, serve
variant, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
app, environ = make_app(variant), environ_for(path)
serve(app, environ, 100 + n)
"""


def instructions(variant: str, path: str, n: int, tree: str = REPO) -> int:
    """Instructions of the workload process; ``tree`` is where ``flask_reqctx`` is imported from."""
    env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", WORKLOAD]
    out = subprocess.run(
        [*cmd, variant, path, str(n)], capture_output=True, text=True, env=env, cwd=tree, check=True
    )
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def callgrind_rows() -> tuple[list[dict], list[str]]:
    if shutil.which("valgrind") is None:
        return [], ["tracing instructions: skipped, valgrind is not installed"]
    jobs = [(v, p, n, REPO) for p in REQUESTS for v in VARIANTS for n in (0, REQUESTS[p])]
    with tempfile.TemporaryDirectory() as old_tree:
        if BASELINE_REV is not None:
            export_package(BASELINE_REV, old_tree)
            jobs += [("off", p, n, old_tree) for p in REQUESTS for n in (0, REQUESTS[p])]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
    rows, notes = [], []
    delta: dict[str, float] = {}
    for path in REQUESTS:
        section = (
            f"7. tracing, instructions per request (callgrind), {'hello' if path == '/' else 'fan-out 10'}"
        )
        n = REQUESTS[path]
        per = {v: (counts[v, path, n, REPO] - counts[v, path, 0, REPO]) / n for v in VARIANTS}
        rows.append(row(section, "bare Flask", per["bare"], "instr/req"))
        if BASELINE_REV is not None:
            before = (counts["off", path, n, old_tree] - counts["off", path, 0, old_tree]) / n
            name = f"ReqCtx at {BASELINE_REV} (before tracing)"
            rows.append(compared(section, name, before, "instr/req", "bare Flask", per["bare"]))
        rows.append(
            compared(section, "ReqCtx, tracing off", per["off"], "instr/req", "bare Flask", per["bare"])
        )
        rows.append(
            compared(section, "ReqCtx, tracing on", per["on"], "instr/req", "ReqCtx, tracing off", per["off"])
        )
        delta[path] = per["on"] - per["off"]
        extra = f"tracing on adds {delta[path]:+,.0f} instr/req"
        if path == "/fanout":
            extra += f" ({(delta[path] - delta['/']) / FANOUT:+,.0f} per child unit beyond the request's own)"
        notes.append(f"tracing instructions {path}: {n} requests after 100 warm-up, minus 0; {extra}")
    return rows, notes


def timing_rows() -> tuple[list[dict], list[str]]:
    from flask_reqctx import tracing

    apps = {v: make_app(v) for v in VARIANTS}
    tracing._hook.disable()  # enabled only around the "on" batches (see the module docstring)
    rows, notes = [], []
    for path in REQUESTS:
        environ, batch = environ_for(path), BATCH[path]
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(ROUNDS):
            for v in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                if v == "on":
                    tracing._hook.enable()
                gc.collect()
                start = clock()
                serve(apps[v], environ, batch)
                samples[v].append((clock() - start) / batch * 1e6)
                tracing._hook.disable()
        assert stats()["live"] == 0, stats()
        med = {v: median(s) for v, s in samples.items()}
        section = f"7. tracing, CPU time per request, {'hello' if path == '/' else 'fan-out 10'}"
        rows.append(row(section, "bare Flask (median)", med["bare"], "us/req"))
        rows.append(
            compared(
                section, "ReqCtx, tracing off (median)", med["off"], "us/req", "bare (median)", med["bare"]
            )
        )
        rows.append(
            compared(section, "ReqCtx, tracing on (median)", med["on"], "us/req", "off (median)", med["off"])
        )
        notes.append(
            f"tracing timing {path}: {ROUNDS} interleaved rounds x {batch} requests; "
            f"on adds {med['on'] - med['off']:+.1f} us/req over off"
        )
    return rows, notes


def main() -> None:
    rows, notes = callgrind_rows()
    timed_rows, timed_notes = timing_rows()
    emit(rows + timed_rows, notes + timed_notes)


if __name__ == "__main__":
    main()
