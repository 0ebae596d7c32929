"""2c. Instructions per request (callgrind): the WSGI comparison, without the noise.

Timings on a shared 2-vCPU VM wander by +-10 % from minute to minute; machine
instructions counted by ``valgrind --tool=callgrind`` do not.  Each (variant, shape) of
``variants.py`` runs in a fresh interpreter under callgrind: build the app, 200 warm-up
requests, then N requests between two marker calls (``os.getppid()`` zeroes the counters,
``os.getpgrp()`` dumps them), so the count is the requests' alone.  The whole process is
instrumented: turning instrumentation on late with ``callgrind_control`` is faster but races
with the marker when the machine is busy (and then counts a few warm-up requests too).
Without the interpreter's symbols (the markers never match) it falls back to whole-process
counts of two runs, with 0 and N requests, and their difference.

A count is exact for one process layout, but the layout moves it: the same tree measured
from another directory, or with another environment size, differs by up to ~4,000
instructions a request (some layouts pay for misaligned copies and type-cache collisions
that others do not).  So each (variant, shape) runs under ``--layouts`` layouts and the
median is reported, with the spread in the notes.  A layout shifts both the stack (an
environment variable of a different size) and the heap (``measured_process.py`` allocates a
different amount in every size class before importing anything): shifting the stack alone
left the type-cache collisions where they were, so three such layouts were one sample.
Ratios are against the bare app of the same shape, measured in the same invocation.
Skipped (with a note) when valgrind is not installed.

Also printed for the fan-out shape: the frames gevent's ``spawning_stack`` capture records
when ReqCtx's patched class and gevent's own class spawn from the same call site.

    python benchmarks/bench_instructions.py                          # every variant and shape
    python benchmarks/bench_instructions.py --variant reqctx --shape hello   # one-shot, < 1 min
    python benchmarks/bench_instructions.py --shape fanout --keep /tmp/cg    # keep the profiles
      (then: callgrind_annotate /tmp/cg/reqctx-fanout-layout0.out.1)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from _common import QUICK, REPO, compared, emit, row
from variants import FANOUT, SHAPES, spawning_stack_frames, variant_env, variants_for

HERE = os.path.dirname(os.path.abspath(__file__))
#: The issue's per-request goals, ReqCtx against bare Flask.
GOALS = {"hello": 1.04, "realistic": 1.03, "fanout": 1.20}
SECTION = "2c. instructions per request (callgrind), {shape}"


def requests_for(shape: str, quick: bool) -> int:
    """Enough requests that per-request noise (GC, allocator) averages out."""
    if shape == "fanout":
        return 100 if quick else 300
    return 300 if quick else 1000


def callgrind(variant: str, shape: str, n: int, out: str, layout: int) -> int:
    """Instructions of the ``n`` marked requests, else (the markers matched nothing) of the
    whole process, negative; in process layout number ``layout``."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONHASHSEED="0", **variant_env(variant))
    env["REQCTX_BENCH_LAYOUT"] = "x" * (1000 * layout)  # only its size matters
    options = ["--zero-before=os_getppid", "--dump-before=os_getpgrp"]
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            *options,
            f"--callgrind-out-file={out}",
            sys.executable,
            os.path.join(HERE, "measured_process.py"),
            str(layout),
            variant,
            shape,
            str(n),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant}/{shape} under callgrind failed:\n{proc.stderr[-3000:]}")
    if os.path.exists(out + ".1"):  # the marker dump: the n requests only
        with open(out + ".1") as f:
            return int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))
    return -int(re.search(r"Collected : (\d+)", proc.stderr).group(1))


def per_request(variant: str, shape: str, n: int, outdir: str, layout: int) -> float:
    """Instructions one request of ``variant``/``shape`` costs in process layout ``layout``."""
    out = os.path.join(outdir, f"{variant}-{shape}-layout{layout}.out")
    count = callgrind(variant, shape, n, out, layout)
    if count > 0:
        return count / n
    # No symbols for the markers: whole processes, n requests minus none.
    empty = callgrind(variant, shape, 0, out + "-empty", layout)
    return (empty - count) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="all", help="comma-separated variants (bare is always run)")
    parser.add_argument("--shape", default="all", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--requests", type=int, help="requests measured per variant")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind profiles in DIR")
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--layouts", type=int, default=5, help="process layouts per figure (median shown)")
    parser.add_argument("--json", action="store_true", help="a JSON line for run.py")
    args = parser.parse_args()
    shapes = SHAPES if args.shape == "all" else tuple(args.shape.split(","))
    if shutil.which("valgrind") is None:
        emit([], ["instructions: skipped, valgrind is not installed (apt-get install -y valgrind)"])
        return
    jobs = []
    for shape in shapes:
        allowed = variants_for(shape)
        wanted = (
            allowed if args.variant == "all" else tuple(v for v in allowed if v in args.variant.split(","))
        )
        jobs += [(v, shape) for v in allowed if v == "bare" or v in wanted]
    n = {shape: args.requests or requests_for(shape, QUICK) for shape in shapes}
    outdir = args.keep or tempfile.mkdtemp(prefix="bench-callgrind-")
    os.makedirs(outdir, exist_ok=True)
    runs = [(variant, shape, layout) for variant, shape in jobs for layout in range(max(1, args.layouts))]
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            counts = list(pool.map(lambda run: per_request(run[0], run[1], n[run[1]], outdir, run[2]), runs))
    finally:
        if not args.keep:
            shutil.rmtree(outdir, ignore_errors=True)
    by_job: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
    for (variant, shape, _layout), count in zip(runs, counts, strict=True):
        by_job[variant, shape].append(count)
    result = {job: statistics.median(values) for job, values in by_job.items()}
    rows, notes = [], []
    for shape in shapes:
        section = SECTION.format(shape=shape)
        bare = result["bare", shape]
        column = f"instr {shape}"
        rows.append(row(section, "bare", bare, "instr/req", variant="bare", column=column))
        for variant in (v for v, s in jobs if s == shape and v != "bare"):
            value = result[variant, shape]
            extra: dict = {"variant": variant, "column": column}
            if variant == "reqctx":
                extra.update(goal=f"<= {GOALS[shape]:.2f}", met=value / bare <= GOALS[shape])
            rows.append(compared(section, variant, value, "instr/req", "bare", bare, **extra))
        notes.append(
            f"instructions, {shape}: {n[shape]} requests after 200 warm-up; added per request: "
            + ", ".join(f"{v} {result[v, shape] - bare:+,.0f}" for v, s in jobs if s == shape and v != "bare")
        )
        spreads = (f"{v} {min(by_job[v, s]):,.0f}-{max(by_job[v, s]):,.0f}" for v, s in jobs if s == shape)
        layouts = len(by_job["bare", shape])
        notes.append(f"instructions, {shape}: median of {layouts} layouts; range: " + ", ".join(spreads))
        if shape == "fanout" and ("reqctx", shape) in result:
            # ReqCtx's fan-out includes its per-request cost: take the hello figure off when known.
            request = 0.0
            if ("reqctx", "hello") in result:
                request = result["reqctx", "hello"] - result["bare", "hello"]
            per_child = (result["reqctx", shape] - bare - request) / FANOUT
            notes.append(
                f"fan-out: ReqCtx adds {per_child:+,.0f} instructions per child over gevent's own class"
                + (" beyond its hello-world request overhead" if request else " (request overhead included)")
            )
    if "fanout" in shapes:
        section = "2d. gevent spawning_stack frames, one call site"
        for name, (total, above) in spawning_stack_frames().items():
            rows.append(row(section, f"{name}: frames captured (gevent's limit)", total, "frames"))
            met = {"goal": "0 extra", "met": not above} if name == "ReqCtx" else {}
            rows.append(row(section, f"{name}: frames above the call site", len(above), "frames", **met))
            if above:
                notes.append(f"spawning_stack, {name}: frames above the call site: {', '.join(above)}")
    if args.keep:
        notes.append(f"callgrind profiles kept in {outdir} (the .1 files hold the measured requests)")
    emit(rows, notes)


if __name__ == "__main__":
    main()
