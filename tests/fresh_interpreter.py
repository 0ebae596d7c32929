"""Run a snippet in a new interpreter importing this worktree's ``flask_reqctx`` (not a test module).

For what a process-wide state must show from scratch: which modules an import loads, whether
a hook is enabled, a ring sized by the only app that asked.
"""

from __future__ import annotations

import os
import subprocess
import sys

import flask_reqctx

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(flask_reqctx.__file__)))


def run_in_fresh_interpreter(script: str, timeout: float = 60) -> None:
    """Run ``script`` with ``python -c``; raises ``CalledProcessError`` when it fails (an assert)."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=timeout)
