"""Shared helpers for the benchmark scripts: timing, JSON hand-off, process stats.

Each ``bench_*.py`` script runs in its own process (started by ``run.py``) and prints one
JSON object on its last stdout line, ``{"rows": [...], "notes": [...]}``; a row is
``{"section", "name", "value", "unit", "baseline", "ratio", "goal", "met", "variant",
"column"}`` (only the first four are required).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

QUICK = "--quick" in sys.argv
#: The interpreter the benchmark runs on, as every result names it.
RUNNING_PYTHON = f"{platform.python_implementation()} {platform.python_version()}"

#: CPU time of this thread: on a shared, noisy machine it leaves out the time other
#: processes hold the CPU, which wall-clock timers would charge to whichever variant
#: happened to be running (nanosecond resolution on Linux).
clock = time.thread_time


def calibrate(stmt: str, ns: dict[str, Any], target_s: float = 0.05) -> int:
    """A loop count making one repeat of ``stmt`` last about ``target_s`` seconds."""
    timer = timeit.Timer(stmt, globals=ns, timer=clock)
    number = 1000
    while True:
        took = timer.timeit(number)
        if took >= target_s / 5:
            return max(1000, int(number * target_s / took))
        number *= 10


def ns_per_op(stmt: str, ns: dict[str, Any], repeat: int, number: int | None = None) -> float:
    """Best-of-``repeat`` nanoseconds per execution of ``stmt`` (empty-loop cost included)."""
    timer = timeit.Timer(stmt, globals=ns, timer=clock)
    if number is None:
        number = calibrate(stmt, ns, 0.02 if QUICK else 0.06)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def net_ns(stmts: dict[str, str], ns: dict[str, Any], repeat: int, rounds: int) -> dict[str, float]:
    """Net ns/op of each statement: best over interleaved rounds, minus the empty loop's best.

    The rounds interleave all statements (A B C ... A B C ...), so a noisy stretch of time
    hits every statement rather than one of them.
    """
    stmts = {"<empty>": "pass", **stmts}
    numbers = {name: calibrate(stmt, ns, 0.02 if QUICK else 0.05) for name, stmt in stmts.items()}
    best: dict[str, float] = {name: float("inf") for name in stmts}
    for _ in range(rounds):
        for name, stmt in stmts.items():
            best[name] = min(best[name], ns_per_op(stmt, ns, repeat, numbers[name]))
    empty = best.pop("<empty>")
    return {name: max(value - empty, 0.0) for name, value in best.items()} | {"<empty>": empty}


def median(values: list[float]) -> float:
    return statistics.median(values)


def rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def row(
    section: str,
    name: str,
    value: float,
    unit: str,
    *,
    baseline: str | None = None,
    ratio: float | None = None,
    goal: str | None = None,
    met: bool | None = None,
    variant: str | None = None,
    column: str | None = None,
) -> dict[str, Any]:
    """One table row; ``variant`` and ``column`` also place it in ``run.py``'s comparison
    table (one line per variant, one column per measurement)."""
    return {
        "section": section,
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
        "met": met,
        "variant": variant,
        "column": column,
    }


def compared(
    section: str, name: str, value: float, unit: str, baseline: str, baseline_value: float, **extra: Any
) -> dict[str, Any]:
    """A :func:`row` measured against the row named ``baseline`` (whose value is
    ``baseline_value``): its ratio is ``value / baseline_value``; ``extra`` as for :func:`row`."""
    return row(section, name, value, unit, baseline=baseline, ratio=value / baseline_value, **extra)


def emit(rows: list[dict[str, Any]], notes: list[str] | None = None) -> None:
    """Print the hand-off line for ``run.py`` (``--json``), else a readable dump; both say
    which Python the figures are for (they differ between versions)."""
    if "--json" not in sys.argv:
        print(f"on {RUNNING_PYTHON}")
        for r in rows:
            extra = ""
            if r.get("ratio") is not None:
                extra = f"  ratio {r['ratio']:.3f} vs {r['baseline']}"
            if r.get("goal"):
                extra += f"  goal {r['goal']}: {'met' if r['met'] else 'MISSED'}"
            print(f"[{r['section']}] {r['name']}: {r['value']:,.2f} {r['unit']}{extra}")
        for note in notes or []:
            print("note:", note)
    else:
        print(json.dumps({"rows": rows, "notes": notes or [], "python": RUNNING_PYTHON}))
    sys.stdout.flush()


def timed(fn: Callable[[], Any]) -> float:
    """CPU seconds one call of ``fn`` takes (see :data:`clock`)."""
    start = clock()
    fn()
    return clock() - start


def export_package(rev: str, into: str) -> str:
    """The package as it is at git revision ``rev`` (``git archive``), extracted into ``into``
    (a folder to put on ``PYTHONPATH``): for a before/after in one run."""
    command = ["git", "-C", REPO, "archive", rev, "flask_reqctx"]
    archive = subprocess.run(command, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
    return into
