"""What ``import flask_reqctx`` costs on top of ``import flask`` (``python -X importtime``).

Each measurement is a fresh interpreter running ``python -X importtime -c "import X"``; its
cost is the sum of the cumulative times of the top-level imports it reports (everything the
statement loaded, interpreter start-up left out).  Best of 5 for ``import flask`` and for
``import flask_reqctx``; the figure is their difference.  On a busy machine that difference
is noisy (wall-clock times count whatever else the machine runs: on a busy one the difference
can even come out negative), so a second figure is read off the ``import flask_reqctx`` runs
alone: the self times of the modules that ``import flask`` does not load (best of 5), and the
notes name those modules.  ``--baseline-rev REV``
also measures the package as it is at git revision REV (exported with ``git archive``).

    python benchmarks/bench_import.py [--baseline-rev REV] [--rounds N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from _common import QUICK, REPO, emit, export_package, row

GOAL_MS = 60.0
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 5
BASELINE_REV = sys.argv[sys.argv.index("--baseline-rev") + 1] if "--baseline-rev" in sys.argv else None


def import_times(module: str, tree: str) -> tuple[float, dict[str, int]]:
    """Milliseconds ``import module`` takes in a fresh interpreter, by ``-X importtime``, and
    the self time (µs) of each module it loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FLASK_REQCTX"))}
    env["PYTHONPATH"] = tree
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=True,
    )
    total_us = 0
    own: dict[str, int] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|")
        if not cumulative.strip().isdigit():  # the header line
            continue
        own[name.strip()] = int(self_us)
        if not name.startswith("  "):  # a top-level import: its cumulative time holds the rest
            total_us += int(cumulative)
    return total_us / 1000, own


def main() -> None:
    rounds = 2 if QUICK else ROUNDS
    section = f"import cost over `import flask` (-X importtime, best of {rounds})"
    trees = {"now": REPO}
    with tempfile.TemporaryDirectory() as old_tree:
        if BASELINE_REV is not None:
            trees = {f"at {BASELINE_REV}": export_package(BASELINE_REV, old_tree), **trees}
        # Interleaved, so a noisy stretch of time hits every measurement rather than one.
        flask_ms = float("inf")
        flask_modules: set[str] = set()
        ours = dict.fromkeys(trees, float("inf"))
        extra = dict.fromkeys(trees, float("inf"))
        runs: dict[str, list[dict[str, int]]] = {label: [] for label in trees}
        for _ in range(rounds):
            ms, modules = import_times("flask", REPO)
            flask_ms = min(flask_ms, ms)
            flask_modules |= set(modules)
            for label, tree in trees.items():
                ms, modules = import_times("flask_reqctx", tree)
                ours[label] = min(ours[label], ms)
                runs[label].append(modules)
        for label, modules_runs in runs.items():
            for modules in modules_runs:
                beyond = sum(us for name, us in modules.items() if name not in flask_modules)
                extra[label] = min(extra[label], beyond / 1000)
    rows = [row(section, "import flask", flask_ms, "ms")]
    notes = [f"python {sys.version.split()[0]}"]
    for label, ms in ours.items():
        goal: dict[str, object] = {}
        if label == "now":
            goal = {"goal": f"<= {GOAL_MS:g} ms", "met": ms - flask_ms <= GOAL_MS}
        rows += [
            row(section, f"import flask_reqctx ({label})", ms, "ms"),
            row(section, f"flask_reqctx over flask ({label})", ms - flask_ms, "ms", **goal),
            row(section, f"modules flask does not load, self time ({label})", extra[label], "ms"),
        ]
        loaded = sorted({name for run in runs[label] for name in run} - flask_modules)
        notes.append(f"{label}: {len(loaded)} modules beyond flask's: {', '.join(loaded)}")
    emit(rows, notes)


if __name__ == "__main__":
    main()
