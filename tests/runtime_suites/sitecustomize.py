"""Put every Python process started with this folder on ``PYTHONPATH`` in a request's state.

Loaded by ``site`` before the process's main module: ``flask_reqctx`` is imported first
(so its patches are in place before the code under test binds any gevent or threading
name) and a context is bound to the main thread, so every greenlet, thread and task the
tests create inherits it, as code running inside a request does.  Used by the
``run_*_suite.py`` runners (via ``request_state.py``) to run the runtimes' own suites in that state.

When ``REQCTX_SUITE_RECORDS`` names a folder, each process writes a record there at exit
(its command line, whether the patches were installed and the context still bound, and
how many units were created) so the runner can prove that the state was really in force:
a harness that silently runs the suites without it would prove nothing.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

import flask_reqctx
from flask_reqctx import patches

SUITE_CONTEXT = flask_reqctx.create_request_context({"suite": "runtime"}, request_id="runtime-suite")
assert flask_reqctx.get_request_context() is SUITE_CONTEXT, "the suite context did not bind"


def _write_record(folder: str) -> None:
    """One JSON file per process, named by pid; written at exit, when the tests have run."""
    record = {
        "pid": os.getpid(),
        "argv": sys.orig_argv,
        "installed": patches.installed(),
        "bound": flask_reqctx.get_request_context() is SUITE_CONTEXT,
        "created": flask_reqctx.stats()["created"],
    }
    path = os.path.join(folder, f"{os.getpid()}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        json.dump(record, out)
    os.replace(path + ".tmp", path)


_records = os.environ.get("REQCTX_SUITE_RECORDS")
if _records:
    atexit.register(_write_record, _records)
