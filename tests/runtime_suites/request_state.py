"""Run a runtime's own test command in a request's state and collect what each process saw.

The command runs with this folder first on ``PYTHONPATH``, so every Python process it
starts loads ``sitecustomize.py`` (flask_reqctx imported first, a context bound) and, at
exit, writes a record (see there).  The suites check those records: a run whose processes
did not have the state proves nothing, whatever its tests said.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SITE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SITE_DIR.parent.parent

Record = dict[str, Any]


def package_parent() -> str:
    """The folder holding the ``flask_reqctx`` to test: the installed one (tox), else this
    checkout's, so that the test processes import the very package this run is about."""
    sys.path.append(str(REPO_ROOT))
    spec = importlib.util.find_spec("flask_reqctx")
    if spec is None or spec.origin is None:
        raise SystemExit("runtime suites: flask_reqctx is not importable")
    return str(Path(spec.origin).resolve().parent.parent)


def request_state_env(records: str) -> dict[str, str]:
    """This process's environment, plus what makes a child start in a request's state."""
    env = dict(os.environ)
    env.pop("FLASK_REQCTX_PATCH", None)  # the patches must be in force
    paths = (str(SITE_DIR), package_parent(), env.get("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["REQCTX_SUITE_RECORDS"] = records
    return env


def read_records(folder: str) -> list[Record]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(folder).glob("*.json"))]


def run_in_request_state(cmd: list[str], timeout: float) -> tuple[int, list[Record]]:
    """Run ``cmd`` (bounded by ``timeout``); its exit status and its processes' records."""
    with tempfile.TemporaryDirectory(prefix="reqctx-suite-") as records:
        print("+", " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, env=request_state_env(records), start_new_session=True)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"runtime suites: {cmd[2]} did not finish in {timeout} s", flush=True)
            status = 1
        return status, read_records(records)


def state_problems(name: str, runs: list[Record], *, must_create: bool) -> list[str]:
    """What was wrong with the state the processes of one test unit ran in."""
    if not runs:
        return [f"{name}: no record (flask_reqctx not loaded, or the process died)"]
    problems = []
    for record in runs:
        if not (record["installed"] and record["bound"]):
            problems.append(f"{name}: patches installed={record['installed']}, bound={record['bound']}")
        if must_create and record["created"] < 2:
            problems.append(f"{name}: created no unit from the bound context")
    return problems


def report(suite: str, count: str, status: int, problems: list[str]) -> int:
    """Print the problems and one closing verdict line; the exit status for the suite."""
    for problem in problems:
        print(f"{suite}: state not in force: {problem}", flush=True)
    verdict = "passed" if status == 0 and not problems else "FAILED"
    print(
        f"{suite}: {count} in a request's state: {verdict}"
        f" (test runner exit {status}, {len(problems)} state problems)",
        flush=True,
    )
    return 0 if verdict == "passed" else 1
