"""2c. Instructions per request (callgrind): the WSGI comparison, without the noise.

Timings on a shared 2-vCPU VM wander by +-10 % from minute to minute; machine
instructions counted by ``valgrind --tool=callgrind`` do not.  Each variant (bare Flask,
ReqCtx, flask-log-request-id) runs the same hello-world WSGI loop twice in a fresh
interpreter under callgrind, with 0 and with N requests after the same warm-up; the
difference divided by N is the instructions one request costs.  Skipped (with a note)
when valgrind is not installed (``apt-get install -y valgrind``).

    python benchmarks/bench_instructions.py          # or: python benchmarks/run.py --only instructions
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from _common import QUICK, REPO, compared, emit, row

REQUESTS = 300 if QUICK else 1000
VARIANTS = ("bare", "reqctx", "flask-log-request-id")

#: The measured program: warm-up, then ``n`` requests of the hello-world app.
WORKLOAD = """
import sys
from flask import Flask
from werkzeug.test import EnvironBuilder

variant, n = sys.argv[1], int(sys.argv[2])
app = Flask("bench")

@app.get("/")
def hello():
    return "Hello, World!"

if variant == "reqctx":
    from flask_reqctx import ReqCtx
    ReqCtx(app)
elif variant == "flask-log-request-id":
    from flask_log_request_id import RequestID
    RequestID(app)
environ = EnvironBuilder(path="/", headers={"User-Agent": "bench", "Accept": "*/*"}).get_environ()

def start_response(status, headers, exc_info=None):
    return None

for _ in range(200 + n):
    body = app(environ.copy(), start_response)
    for _chunk in body:
        pass
    body.close()
"""


def instructions(variant: str, n: int) -> int:
    """Instructions executed by the whole workload process (callgrind's ``Collected``)."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONHASHSEED="0")
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            WORKLOAD,
            variant,
            str(n),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return int(re.search(r"Collected : (\d+)", out.stderr).group(1))


def main() -> None:
    section = "2c. WSGI instructions per request (callgrind)"
    if shutil.which("valgrind") is None:
        emit([], ["instructions: skipped, valgrind is not installed"])
        return
    jobs = [(v, n) for v in VARIANTS for n in (0, REQUESTS)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
    per_request = {v: (counts[v, REQUESTS] - counts[v, 0]) / REQUESTS for v in VARIANTS}
    bare = per_request["bare"]
    rows = [row(section, "bare", bare, "instr/req")]
    for v in VARIANTS[1:]:
        extra = {}
        if v == "reqctx":
            ok = per_request[v] / bare <= 1.05 and per_request[v] < per_request["flask-log-request-id"]
            extra = {"goal": "<= 1.05 and < peer", "met": ok}
        rows.append(compared(section, v, per_request[v], "instr/req", "bare", bare, **extra))
    notes = [
        f"instructions: callgrind, {REQUESTS} requests after 200 warm-up, minus the same run with 0; "
        + ", ".join(f"{v} +{per_request[v] - bare:,.0f} instr/req" for v in VARIANTS[1:])
    ]
    emit(rows, notes)


if __name__ == "__main__":
    main()
