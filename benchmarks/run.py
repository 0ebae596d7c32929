"""Run the flask-reqctx benchmark suite and print a table of ratios against baselines.

Usage (from the repository root)::

    python benchmarks/run.py                  # everything: 12 min on a busy 2-vCPU VM
    python benchmarks/run.py --quick          # 6 min there (instruction ratios within 0.01)
    python benchmarks/run.py --only instructions,lookup
    python benchmarks/run.py --markdown out.md   # also write the machine, command and tables

The compared variants (``variants.py``): bare Flask; ReqCtx; flask-log-request-id; the
hand-written ``g.request_id = str(uuid4())`` before/after_request pair; OpenTelemetry's Flask
instrumentation (SDK tracer, in-memory exporter).  App shapes: hello world; a realistic view
(reads the id 5 times, logs one line through ``RequestIdFilter``, returns a 20-key JSON);
a fan-out view spawning 10 greenlets (bare gevent, hand-written ``copy_context().run``,
ReqCtx).

Sections (each a ``bench_*.py`` script run in its own process; each runs alone too, e.g.
``python benchmarks/bench_instructions.py --variant reqctx --shape hello``):

1. ``lookup``: ``get_request_context()`` ns/op vs a bare ``ContextVar.get()``, ``flask.g``,
   ``flask.request.headers`` and OpenTelemetry's ``get_current_span()``, in a request and
   in a greenlet it spawned.
2. ``wsgi``: CPU time per request at the WSGI level, every variant and shape, interleaved
   batches, medians (noisy on a shared machine).
   ``instructions``: the same under ``valgrind --tool=callgrind``: machine instructions per
   request, the noise-free figure the goals are judged on (ReqCtx against bare: hello
   <= 1.04, realistic <= 1.03, fan-out <= 1.20), plus the frames gevent's spawning_stack
   capture records for ReqCtx's class and gevent's own (skipped without valgrind).
3. ``server``: req/s and the worker's CPU per request (``/proc/<pid>/schedstat``) of
   ``gunicorn -k gevent -w 1`` per variant, pinned to one CPU, under ``wrk -t1 -c200``
   pinned to another (a gevent client when wrk is missing); hello world and fan-out.
4. ``hooks``: cost per greenlet switch of an enabled before/after hook.
5. ``memory``: bytes per live context, and ``stats()``/RSS after 10k and 100k requests.
6. ``celery``: CPU per task sent and per task run, with/without ``init_celery`` (bench_celery.py).
8. ``integrations``: what each integration adds per call, and per-request SQL text against
   psycopg's prepared statements, on a PostgreSQL started for the run (bench_integrations.py).

Every ratio compares runs made in the same invocation (interleaved where it matters):
absolute times are not comparable across runs or machines.  Exit status is 0 even when
a goal is missed; the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SECTIONS = {
    "instructions": "bench_instructions.py",
    "lookup": "bench_lookup.py",
    "wsgi": "bench_wsgi.py",
    "hooks": "bench_hooks.py",
    "memory": "bench_memory.py",
    "server": "bench_server.py",
    "celery": "bench_celery.py",
    "tracing": "bench_tracing.py",  # 7: execution traces off vs on
    "integrations": "bench_integrations.py",  # 8: httpx, requests, Sentry, SQL comments per call
}
PACKAGES = [
    "flask",
    "werkzeug",
    "gevent",
    "greenlet",
    "gunicorn",
    "blinker",
    "Flask-Log-Request-ID",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-flask",
]


def machine() -> list[str]:
    lines = [f"nproc: {os.cpu_count()}"]
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU(s):", "Thread(s) per core", "Hypervisor vendor", "CPU max MHz")
        lines += [" ".join(line.split()) for line in lscpu.splitlines() if line.startswith(keep)]
    except OSError:
        pass
    lines.append(f"uname: {' '.join(platform.uname()[:3])} {platform.machine()}")
    lines.append(f"python: {sys.version.split()[0]} ({platform.python_implementation()})")
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} (missing)")
    lines.append("packages: " + ", ".join(versions))
    try:
        rev = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "flask_reqctx"], capture_output=True, text=True
        ).stdout.strip()
        lines.append(f"flask_reqctx: git {rev}{' + uncommitted changes' if dirty else ''}")
    except OSError:
        pass
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        lines.append("load tool: " + (wrk.stdout or wrk.stderr).splitlines()[0].strip())
    except (OSError, IndexError):
        lines.append("load tool: gevent client (wrk not found)")
    with open("/proc/loadavg") as f:
        lines.append("load average at start: " + " ".join(f.read().split()[:3]))
    return lines


def run_section(name: str, quick: bool) -> dict:
    cmd = [sys.executable, os.path.join(HERE, SECTIONS[name]), "--json"] + (["--quick"] if quick else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        return {"rows": [], "notes": [f"{name}: FAILED (exit {proc.returncode})"], "seconds": took}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = took
    return result


def fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[dict]) -> list[str]:
    header = ["section", "measurement", "value", "unit", "ratio", "vs", "goal", "verdict"]
    body = []
    for r in rows:
        verdict = "" if r.get("met") is None else ("met" if r["met"] else "MISSED")
        body.append(
            [
                r["section"],
                r["name"],
                fmt(r["value"]),
                r["unit"],
                "" if r.get("ratio") is None else f"{r['ratio']:.3f}",
                r.get("baseline") or "",
                r.get("goal") or "",
                verdict,
            ]
        )
    return [header, *body]


def comparison(rows: list[dict]) -> list[list[str]] | None:
    """One line per variant, one column per measurement tagged with a ``column``: bare's
    absolute value, the others' ratio to it (``*`` marks a missed goal)."""
    tagged = [r for r in rows if r.get("column")]
    if not tagged:
        return None
    columns = list(dict.fromkeys(r["column"] for r in tagged))
    variants = list(dict.fromkeys(r["variant"] for r in tagged))
    cells = {(r["variant"], r["column"]): r for r in tagged}
    units = {r["column"]: r["unit"] for r in tagged if r["variant"] == "bare"}
    out = [["variant", *columns]]
    for variant in variants:
        line = [variant]
        for column in columns:
            r = cells.get((variant, column))
            if r is None:
                line.append("")
            elif r.get("ratio") is None:
                line.append(f"{fmt(r['value'])} {units.get(column, r['unit'])}")
            else:
                line.append(f"{r['ratio']:.3f}x" + (" *" if r.get("met") is False else ""))
        out.append(line)
    return out


def render_text(rows: list[list[str]], right: set[int] | None = None) -> str:
    """Aligned columns; those in ``right`` (default: value and ratio) flush right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {2, 4} if right is None else right
    out = []
    for n, r in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}")
    parser.add_argument(
        "--markdown", metavar="FILE", help="also write machine, command and table as Markdown"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    info = machine()
    print("\n".join(info))
    print(f"command: {command.strip()}\n")
    rows: list[dict] = []
    notes: list[str] = []
    started = time.monotonic()
    for name in names:
        print(f"running {name} ...", end=" ", flush=True)
        result = run_section(name, args.quick)
        print(f"{result['seconds']:.0f} s", flush=True)
        rows += result["rows"]
        notes += result["notes"]
    total = time.monotonic() - started
    cells = table(rows)
    pivot = comparison(rows)
    print()
    if pivot:
        print("Comparison (bare: absolute; others: ratio to bare in this run; * = goal missed)\n")
        print(render_text(pivot, set(range(1, len(pivot[0])))))
        print()
    print(render_text(cells))
    print()
    for note in notes:
        print("-", note)
    goals = [r for r in rows if r.get("met") is not None]
    print(f"\n{sum(r['met'] for r in goals)}/{len(goals)} goals met; total {total:.0f} s")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("## Machine\n\n```text\n" + "\n".join(info) + "\n```\n\n")
            f.write(f"## Command\n\n```sh\n{command.strip()}\n```\n\n(total {total:.0f} s)\n\n")
            if pivot:
                f.write(
                    "## Comparison\n\nbare: absolute; others: ratio to bare in this run; "
                    "* = goal missed.\n\n" + render_markdown(pivot) + "\n\n"
                )
            f.write("## Table\n\n" + render_markdown(cells) + "\n\n")
            f.write("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")


if __name__ == "__main__":
    main()
