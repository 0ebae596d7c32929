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
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

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


#: What a test process that crashed leaves in a runner's output, whatever the runner then
#: reports (gevent's re-runs a failed module once and counts only the second run): a fatal
#: error, or an exit by a signal (gevent's runner: ``! gevent.tests.test__x [code -11]``).
CRASH = re.compile(r"Fatal Python error|\[code -\d+\]")


def run_in_request_state(cmd: list[str], timeout: float) -> tuple[int, list[Record], list[str]]:
    """Run ``cmd`` (bounded by ``timeout``), its output passed through; its exit status, its
    processes' records and the output lines that show a crash."""
    with tempfile.TemporaryDirectory(prefix="reqctx-suite-") as records:
        print("+", " ".join(cmd), flush=True)
        proc = subprocess.Popen(
            cmd, env=request_state_env(records), start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )  # fmt: skip
        crashes: list[str] = []
        reader = threading.Thread(target=_pass_through, args=(proc.stdout, crashes), daemon=True)
        reader.start()
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"runtime suites: {cmd[2]} did not finish in {timeout} s", flush=True)
            status = 1
        reader.join(timeout=60)
        if status < 0:
            crashes.append(f"the runner itself exited by signal {-status}")
        return status, read_records(records), crashes


def _pass_through(output: IO[str], crashes: list[str]) -> None:
    """Print each line of ``output`` as it comes, keeping those that show a crash."""
    for line in output:
        print(line, end="", flush=True)
        if CRASH.search(line):
            crashes.append(line.strip())


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


def report(suite: str, count: str, status: int, problems: list[str], crashes: list[str]) -> int:
    """Print the problems and crashes and one closing verdict line; the exit status for the
    suite.  A crash fails it, also when a re-run of the crashed test then passed."""
    for problem in problems:
        print(f"{suite}: state not in force: {problem}", flush=True)
    for crash in crashes:
        print(f"{suite}: a test process crashed: {crash}", flush=True)
    verdict = "passed" if status == 0 and not problems and not crashes else "FAILED"
    print(
        f"{suite}: {count} in a request's state: {verdict}"
        f" (test runner exit {status}, {len(problems)} state problems, {len(crashes)} crashes)",
        flush=True,
    )
    return 0 if verdict == "passed" else 1
