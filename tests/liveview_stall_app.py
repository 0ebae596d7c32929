"""The live-view app (``liveview_app``) with a stall meter, for ``gunicorn -k gevent``
(``liveview_stall_app:app``): how long the worker's hub was kept from running.  Not a test module.

A greenlet of the worker sleeps 5 ms at a time; how late it wakes is how long something held
the worker's only thread.  On a busy machine the worker may also wake late because the OS ran
another process, so the stall counted is the CPU time the worker's thread used while the meter
slept (work that kept the hub from it), besides the wall-clock lateness.  ``GET /stall``
returns the worst of each since the last call (ms).
"""

from __future__ import annotations

import time

import gevent
from flask import jsonify
from liveview_app import app

__all__ = ["app"]

TICK_S = 0.005


class StallMeter:
    """The worst CPU time spent by others during one 5 ms sleep, and the worst lateness of one,
    since :meth:`read`."""

    def __init__(self) -> None:
        self.worst_cpu_s = self.worst_late_s = 0.0

    def run(self) -> None:
        while True:
            start, cpu = time.perf_counter(), time.thread_time()
            gevent.sleep(TICK_S)
            self.worst_cpu_s = max(self.worst_cpu_s, time.thread_time() - cpu)
            self.worst_late_s = max(self.worst_late_s, time.perf_counter() - start - TICK_S)

    def read(self) -> dict[str, float]:
        worst = {"worst_ms": self.worst_cpu_s * 1000, "worst_late_ms": self.worst_late_s * 1000}
        self.worst_cpu_s = self.worst_late_s = 0.0
        return worst


meter = StallMeter()
gevent.spawn(meter.run)  # at import: in the worker (no --preload), holding no context


@app.get("/stall")
def stall():
    return jsonify(meter.read())
