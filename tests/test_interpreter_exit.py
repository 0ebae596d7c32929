"""An interpreter that ends with units alive in greenlets, threads and pools ends cleanly.

The units' finalizers (a never-started greenlet's, a context never closed) must not run
hooks or receivers while the interpreter shuts down, and nothing may crash: many runs, with
and without gevent's monkey-patching, leaving by ``sys.exit`` or by the end of the script.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

from fresh_interpreter import PACKAGE_PARENT

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ends_with_units_alive.py")
RUNS = 12
AT_ONCE = 4
DEADLINE = 240.0


def test_interpreters_end_cleanly_with_units_alive_everywhere() -> None:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, PYTHONFAULTHANDLER="1")
    env.pop("FLASK_REQCTX_PATCH", None)
    ways = itertools.islice(itertools.cycle(itertools.product(("plain", "monkey"), ("return", "exit"))), RUNS)
    pending = list(ways)
    running: list[tuple[tuple[str, str], subprocess.Popen[str]]] = []
    finished = 0
    give_up = time.monotonic() + DEADLINE
    while pending or running:
        while pending and len(running) < AT_ONCE:
            way = pending.pop()
            args = [sys.executable, SCRIPT, *way]
            running.append(
                (
                    way,
                    subprocess.Popen(
                        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    ),
                )
            )
        way, proc = running.pop(0)
        out, err = proc.communicate(timeout=max(1.0, give_up - time.monotonic()))
        assert proc.returncode == 0 and err == "", (way, proc.returncode, err)
        assert out.startswith("live units at exit: ") and int(out.split(":")[1]) > 0, (way, out)
        finished += 1
    assert finished == RUNS
