"""The harness that runs the runtimes' own suites in a request's state really sets it up.

``tests/runtime_suites`` makes every process it reaches import flask_reqctx first and bind
a context; if it silently did nothing, the py3XX-gevent-suite tox envs would pass for nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fresh_interpreter import run_in_fresh_interpreter

# The runners are scripts run from their own folder: import them the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime_suites"))
from request_state import SITE_DIR, read_records, report, run_in_request_state
from run_gevent_suite import check_records

#: Run in a child process: what a gevent test module sees when it starts.
STATE_PROBE = """
import gevent
import flask_reqctx
ctx = flask_reqctx.get_request_context()
assert ctx is not None and ctx.request_id == "runtime-suite", ctx
assert gevent.spawn(flask_reqctx.get_request_context).get() is ctx
assert flask_reqctx.stats()["live"] >= 1
"""


def _run(records: Path, *, with_site: bool, **program: str) -> subprocess.CompletedProcess[str]:
    return run_in_fresh_interpreter(
        **program,
        pythonpath=[str(SITE_DIR)] if with_site else [],
        env={"REQCTX_SUITE_RECORDS": str(records)},
        timeout=120,
        check=False,
    )


def test_a_process_starts_with_flask_reqctx_imported_and_a_context_bound(tmp_path: Path) -> None:
    out = _run(tmp_path, with_site=True, code=STATE_PROBE)
    assert out.returncode == 0, out.stderr
    (record_file,) = tmp_path.glob("*.json")
    record = json.loads(record_file.read_text(encoding="utf-8"))
    assert record["installed"] and record["bound"]
    assert record["created"] >= 2  # the bound context's unit and the spawned greenlet's


def test_the_records_prove_each_module_ran_in_the_state(tmp_path: Path) -> None:
    for module in ("test__joinall", "test__GreenletExit"):  # the second spawns nothing
        out = _run(tmp_path, with_site=True, module=f"gevent.tests.{module}")
        assert out.returncode == 0, out.stderr
    assert check_records(["test__joinall"], read_records(str(tmp_path)), must_create={"test__joinall"}) == []
    # A module that created nothing from the context, or never ran, is reported.
    records = read_records(str(tmp_path))
    assert check_records(["test__GreenletExit"], records, must_create={"test__GreenletExit"}) == [
        "test__GreenletExit: created no unit from the bound context"
    ]
    assert check_records(["test__api"], records) == [
        "test__api: no record (flask_reqctx not loaded, or the process died)"
    ]


def test_a_process_outside_the_harness_leaves_no_record(tmp_path: Path) -> None:
    """Without the site folder nothing is loaded, and the check says so: no silent pass."""
    out = _run(tmp_path, with_site=False, module="gevent.tests.test__joinall")
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.glob("*.json")) == []
    assert check_records(["test__joinall"], read_records(str(tmp_path))) != []


#: A runner that re-runs a crashed test and then reports success, as gevent's does with
#: ``--second-chance``: the first run dies of a real segmentation fault after passing.
CRASH_THEN_PASS = """
import subprocess, sys
crash = "print('Ran 4 tests OK', flush=True); import faulthandler; faulthandler._sigsegv()"
first = subprocess.run([sys.executable, "-X", "faulthandler", "-c", crash])
print(f"! crashing-test [code {first.returncode}]", flush=True)
print("re-run: Ran 4 tests OK", flush=True)
"""


def test_a_crash_fails_the_suite_even_when_its_rerun_passed(capsys: pytest.CaptureFixture[str]) -> None:
    status, _records, crashes = run_in_request_state([sys.executable, "-c", CRASH_THEN_PASS], timeout=120)
    assert status == 0  # the runner itself says all is well
    assert any("Fatal Python error: Segmentation fault" in line for line in crashes), crashes
    assert report("suite", "1 test module", status, [], crashes) == 1
    out = capsys.readouterr().out
    assert "Ran 4 tests OK" in out  # the runner's output is passed through
    assert out.rstrip().endswith(
        "suite: 1 test module in a request's state: FAILED (test runner exit 0, 0 state problems, 2 crashes)"
    )


def test_a_clean_run_passes(capsys: pytest.CaptureFixture[str]) -> None:
    status, _records, crashes = run_in_request_state([sys.executable, "-c", "print('Ran 1 test OK')"], 120)
    assert (status, crashes) == (0, [])
    assert report("suite", "1 test module", status, [], crashes) == 0
