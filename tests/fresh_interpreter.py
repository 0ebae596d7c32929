"""Run Python in a new interpreter that imports this worktree's ``flask_reqctx`` (not a test module).

For what a process-wide state must show from scratch (which modules an import loads,
whether a hook is enabled, a ring sized by the only app that asked), for clients that must
not share pytest's (maybe monkey-patched) process, and for servers: ``servers.py`` and
``celery_processes.py`` build their children's environment with :func:`fresh_env` too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

import flask_reqctx

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(flask_reqctx.__file__)))


def fresh_env(pythonpath: Sequence[str] = (), extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child: ``PYTHONPATH`` is ``pythonpath``, then the
    folder holding this very ``flask_reqctx`` (then what was inherited), the patching switch
    is at its default, output is unbuffered; ``extra`` is added last."""
    env = dict(os.environ)
    env.pop("FLASK_REQCTX_PATCH", None)
    inherited = env.pop("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, PACKAGE_PARENT, *filter(None, [inherited])])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_in_fresh_interpreter(
    code: str | None = None,
    *,
    module: str | None = None,
    script: str | None = None,
    args: Sequence[str] = (),
    pythonpath: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run one program, ``code`` (``python -c``), ``module`` (``-m``) or ``script`` (a file),
    with ``args``, in an environment from :func:`fresh_env`; its output is captured as text.

    With ``check`` a non-zero exit (a failed ``assert`` in ``code``) fails the test with the
    program's output; without it the caller reads ``returncode``, ``stdout`` and ``stderr``.
    """
    choices = (("-c", code), ("-m", module), ("", script))
    given = [(flag, value) for flag, value in choices if value is not None]
    if len(given) != 1:
        raise TypeError("give exactly one of code, module or script")
    flag, value = given[0]
    program = [flag, value] if flag else [os.fspath(value)]
    out = subprocess.run(
        [sys.executable, *program, *args],
        env=fresh_env(pythonpath, env),
        input=input,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and out.returncode != 0:
        output = f"{out.stdout[-3000:]}\n{out.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(program)[:200]} exited with {out.returncode}:\n{output}")
    return out
