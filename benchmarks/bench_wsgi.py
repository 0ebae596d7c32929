"""2. Per-request time at the WSGI level, no network: every variant of ``variants.py``.

For each shape (hello, realistic, fan-out), the variants' apps live in this one process
and are called directly with a prebuilt environ (copied per call) and a no-op
``start_response``; the body is consumed and closed as a server would.  Batches run
interleaved (A B C ... then ... C B A), so a noisy stretch of time hits every variant; per
variant we keep the median batch and report its ratio to the bare app of the same shape.
Times are this thread's CPU time (see ``_common.clock``), and still noisy on a shared
machine: the instruction counts (``bench_instructions.py``) are the figures to trust.
"""

from __future__ import annotations

import gc
import resource

from _common import QUICK, clock, compared, emit, median, row
from variants import FANOUT, SHAPES, environ, make_app, run_requests, variants_for

from flask_reqctx import stats

ROUNDS = 7 if QUICK else 21
#: Requests per batch, by shape (a batch lasts roughly 20-100 ms).
BATCH = {"hello": 1000, "realistic": 500, "fanout": 150}


def batch(app: object, env: dict, n: int) -> tuple[float, int]:
    """CPU seconds per request over ``n`` requests, and the page faults they took (the
    kernel's share of the time, which instruction counts do not see)."""
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    start = clock()
    run_requests(app, env, n)
    took = clock() - start
    return took / n, resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults


def measure(shape: str) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per variant: the batches' seconds per request, and page faults per request."""
    variants = variants_for(shape)
    apps = {v: make_app(v, shape) for v in variants}
    env = environ()
    n = BATCH[shape] // (2 if QUICK else 1)
    for app in apps.values():  # warm-up
        run_requests(app, env, n // 5)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    faults = dict.fromkeys(variants, 0)
    for i in range(ROUNDS):
        for v in variants if i % 2 == 0 else variants[::-1]:  # no variant always runs first
            gc.collect()
            seconds, batch_faults = batch(apps[v], env, n)
            samples[v].append(seconds)
            faults[v] += batch_faults
    return samples, {v: count / (ROUNDS * n) for v, count in faults.items()}


def main() -> None:
    rows, notes = [], []
    for shape in SHAPES:
        samples, faults = measure(shape)
        section = f"2. WSGI time per request, {shape} (noisy)"
        med = {v: median(s) * 1e6 for v, s in samples.items()}
        column = f"time {shape}"
        rows.append(row(section, "bare (median)", med["bare"], "us/req", variant="bare", column=column))
        for v in list(med)[1:]:
            rows.append(
                compared(
                    section, f"{v} (median)", med[v], "us/req", "bare", med["bare"], variant=v, column=column
                )
            )
        spread = {v: (min(s) * 1e6, max(s) * 1e6) for v, s in samples.items()}
        notes.append(
            f"time, {shape}: {ROUNDS} interleaved rounds; min-max batch us/req: "
            + ", ".join(f"{v} {lo:.0f}-{hi:.0f}" for v, (lo, hi) in spread.items())
            + "; page faults/req: "
            + ", ".join(f"{v} {f:.1f}" for v, f in faults.items())
            + (f"; {FANOUT} greenlets per request" if shape == "fanout" else "")
        )
    if stats()["live"] != 0:
        raise RuntimeError(f"contexts leaked: {stats()}")
    emit(rows, notes)


if __name__ == "__main__":
    main()
