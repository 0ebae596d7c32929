"""Celery: what ``init_celery`` adds per task sent and per task run.

Each variant (without / with ``init_celery``) runs in processes of its own, because
Celery's signals are process-wide: once ``init_celery`` has run, nothing in that process
publishes or runs a task without our receivers.  The operations, on a task that does
nothing (the worst case for a relative figure):

* send: ``task.apply_async()`` inside a context and outside any (our receiver returns at
  once), to Celery's in-memory transport (the CPU cost of building and publishing a
  message, no I/O); inside a context also to a local ``redis-server`` started for the
  run, when one is on PATH (loopback; CPU time, so the wait for Redis is not counted);
* run: Celery's worker tracer (``build_tracer``: what a worker calls per message) on a
  message carrying our headers, and an eager ``task.apply()`` outside any context.

Two measures, each a ratio against the variant without ``init_celery`` in the same run:

* instructions per task (``valgrind --tool=callgrind``; skipped without valgrind): after
  the same warm-up in fresh interpreters, each operation runs N times, and the difference
  from a run with none, divided by N, is its cost; this VM's timing noise cannot blur it;
* CPU ns per task: rounds alternating the variants, best over rounds and repeats.

    python benchmarks/bench_celery.py       # or: python benchmarks/run.py --only celery
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import QUICK, REPO, clock, compared, emit, row

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
VARIANTS = ("without init_celery", "init_celery")
TIMED = {"memory": 500 if QUICK else 2000, "redis": 200 if QUICK else 500}
REPEAT = 3
ROUNDS = 2 if QUICK else 3
COUNTED = 100 if QUICK else 300
WARM_UP = 30


def noop() -> None:
    """The task: nothing, so what is measured is Celery's cost and ours."""


def operations(variant: str, redis_url: str | None) -> dict[str, tuple[Callable[[], Any], bool]]:
    """name -> (one operation, whether it runs inside a context), for a fresh process."""
    from celery import Celery
    from celery.app.trace import build_tracer

    apps = {"memory": Celery("bench", broker="memory://localhost/")}
    if redis_url is not None:
        apps["redis"] = Celery("bench_redis", broker=redis_url + "/0")
    tasks = {}
    for name, app in apps.items():
        tasks[name] = app.task(name=f"bench.noop.{name}", ignore_result=True)(noop)
        if variant == "init_celery":
            from flask_reqctx.celery import init_celery

            init_celery(app)
    task = tasks["memory"]
    tracer = build_tracer(task.name, task, eager=False, app=apps["memory"])
    message = {
        "lang": "py",
        "task": task.name,
        "id": str(uuid.uuid4()),
        "delivery_info": {"routing_key": "celery", "priority": None, "redelivered": False},
        "X-Request-ID": "bench-sender",
        "traceparent": TRACEPARENT,
    }
    ops: dict[str, tuple[Callable[[], Any], bool]] = {
        "send in a context (memory transport)": (task.apply_async, True),
        "send outside a context (memory transport)": (task.apply_async, False),
        "run by the worker tracer, message with ids": (lambda: tracer(message["id"], (), {}, message), False),
        "run eagerly, apply() outside a context": (task.apply, False),
    }
    if redis_url is not None:
        ops["send in a context (local redis)"] = (tasks["redis"].apply_async, True)
    return ops


def repeat(op: Callable[[], Any], in_context: bool, n: int) -> float:
    """Run ``op`` ``n`` times (in a context if asked); CPU seconds taken."""
    import flask_reqctx

    context = flask_reqctx.create_request_context({"bench": True}, "bench-sender") if in_context else None
    start = clock()
    for _ in range(n):
        op()
    took = clock() - start
    if context is not None:
        flask_reqctx.close_request_context(context)
    return took


def timed_round(variant: str, redis_url: str | None) -> dict[str, float]:
    """One process, one variant: best CPU ns per operation."""
    out = {}
    for name, (op, in_context) in operations(variant, redis_url).items():
        n = TIMED["redis" if "redis" in name else "memory"]
        repeat(op, in_context, WARM_UP)
        out[name] = min(repeat(op, in_context, n) for _ in range(REPEAT)) / n * 1e9
    return out


def counted_workload(variant: str, selected: str, n: int) -> None:
    """What callgrind counts: every operation warmed up, then ``selected`` ``n`` times."""
    ops = operations(variant, None)
    for op, in_context in ops.values():
        repeat(op, in_context, WARM_UP)
    op, in_context = ops[selected]
    repeat(op, in_context, n)


def _child(args: list[str], valgrind: bool = False) -> str:
    cmd = [sys.executable, os.path.abspath(__file__), *args] + (["--quick"] if QUICK else [])
    if valgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=900)
    return proc.stderr if valgrind else proc.stdout


def instructions(variant: str, selected: str, n: int) -> int:
    stderr = _child(["--count", variant, selected, str(n)], valgrind=True)
    match = re.search(r"Collected : (\d+)", stderr)
    assert match is not None, stderr[-2000:]
    return int(match.group(1))


def _compare(section: str, measured: dict[str, dict[str, float]], unit: str) -> list[dict[str, Any]]:
    rows = []
    for name, value in measured["init_celery"].items():
        baseline = measured["without init_celery"][name]
        rows.append(row(section, f"{name}: without init_celery", baseline, unit))
        rows.append(compared(section, f"{name}: init_celery", value, unit, f"{name}: without", baseline))
    return rows


def count_section(notes: list[str]) -> list[dict[str, Any]]:
    if shutil.which("valgrind") is None:
        notes.append("celery instructions: skipped, valgrind is not installed")
        return []
    names = list(operations("without init_celery", None))
    # With n = 0 the workload is the same whichever operation is selected: one baseline each.
    jobs = [(variant, names[0], 0) for variant in VARIANTS]
    jobs += [(variant, name, COUNTED) for variant in VARIANTS for name in names]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs), strict=True))
    per_task: dict[str, dict[str, float]] = {variant: {} for variant in VARIANTS}
    for variant in VARIANTS:
        none = counts[variant, names[0], 0]
        for name in names:
            per_task[variant][name] = (counts[variant, name, COUNTED] - none) / COUNTED
    added = {name: per_task["init_celery"][name] - per_task[VARIANTS[0]][name] for name in names}
    notes.append(
        f"celery instructions: callgrind, {COUNTED} operations after {WARM_UP} warm-up of each, minus the "
        "same run with 0; added per task: " + ", ".join(f"{name} {added[name]:+,.0f}" for name in names)
    )
    return _compare("celery: instructions per task (callgrind)", per_task, "instr/task")


def timing_section(notes: list[str]) -> list[dict[str, Any]]:
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from celery_processes import REDIS_SERVER, RedisServer

    redis_server = None
    if REDIS_SERVER is not None:
        directory = os.path.join("/tmp", f"reqctx-bench-redis-{os.getpid()}")
        os.makedirs(directory, exist_ok=True)
        redis_server = RedisServer(directory).start()
    else:
        notes.append("celery: redis-server not on PATH; the local redis row is left out")
    best: dict[str, dict[str, float]] = {variant: {} for variant in VARIANTS}
    try:
        for _ in range(ROUNDS):
            for variant in VARIANTS:
                args = ["--time", variant]
                if redis_server is not None:
                    args += ["--redis", redis_server.url]
                for name, value in json.loads(_child(args).strip().splitlines()[-1]).items():
                    best[variant][name] = min(best[variant].get(name, float("inf")), value)
    finally:
        if redis_server is not None:
            redis_server.stop()
    notes.append(
        f"celery CPU time: best of {ROUNDS} alternating rounds x {REPEAT} repeats of {TIMED['memory']} "
        f"({TIMED['redis']} to redis) tasks, one process per variant and round"
    )
    return _compare("celery: CPU per task", best, "ns/task")


def main() -> None:
    notes: list[str] = []
    rows = count_section(notes) + timing_section(notes)
    emit(rows, notes)


if __name__ == "__main__":
    argv = [arg for arg in sys.argv[1:] if arg != "--quick"]
    if argv[:1] == ["--count"]:
        counted_workload(argv[1], argv[2], int(argv[3]))
    elif argv[:1] == ["--time"]:
        redis_url = argv[argv.index("--redis") + 1] if "--redis" in argv else None
        print(json.dumps(timed_round(argv[1], redis_url)))
    else:
        main()
