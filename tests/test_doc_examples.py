"""Every ```python example in README.md and docs/ runs, each in a fresh interpreter.

The convention (documented in docs/contributing.md): an HTML comment on the line right before
a block says how it is treated —

* ``<!-- not run: why -->``: skipped (a reason is required: a fragment, a sample that needs a
  broker or a server, ...);
* ``<!-- continues -->``: run after the block before it, in the same interpreter (a sample
  split by prose);
* nothing: run as it is.  When it leaves a Flask ``app`` behind, ``GET /`` is sent to it with
  the test client and must not answer a 5xx, so its views run too; each Celery task it
  defines is run eagerly (``task.apply``) with ``1`` for each parameter and must not raise.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

import flask_reqctx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(flask_reqctx.__file__)))
DOCS = glob.glob(f"{ROOT}/docs/**/*.md", recursive=True)
SOURCES = ["README.md", *sorted(os.path.relpath(path, ROOT) for path in DOCS)]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
MARK = re.compile(r"<!--\s*(not run:\s*(?P<why>\S.*?)|(?P<continues>continues))\s*-->$")

#: runs after the example: exercise the Flask app and the Celery tasks it left behind, if any
CALL_APP = """
import inspect as _inspect
import sys as _sys

import flask as _flask

_app = globals().get("app")
if isinstance(_app, _flask.Flask):
    _response = _app.test_client().get("/")
    assert _response.status_code < 500, (_response.status_code, _response.get_data(as_text=True)[:2000])
if "celery" in _sys.modules:  # each task run eagerly, 1 for each parameter; .get() re-raises
    _tasks = [v for v in list(globals().values()) if isinstance(v, _sys.modules["celery"].Task)]
    for _task in _tasks:
        _required = [p for p in _inspect.signature(_task.run).parameters.values() if p.default is p.empty]
        _task.apply(args=[1] * len(_required)).get()
"""


@dataclass
class Example:
    where: str
    code: str
    skip: str | None


def examples() -> list[Example]:
    found: list[Example] = []
    for source in SOURCES:
        with open(os.path.join(ROOT, source), encoding="utf-8") as file:
            text = file.read()
        previous: Example | None = None
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
            mark = MARK.fullmatch(before)
            code = textwrap.dedent(match.group("body"))
            where = f"{source}:{line}"
            if mark and mark.group("why"):
                example = Example(where, code, mark.group("why"))
            elif mark and mark.group("continues"):
                assert previous is not None and previous.skip is None, f"{where} continues nothing runnable"
                example = Example(where, previous.code + "\n" + code, None)
            else:
                example = Example(where, code, None)
            found.append(example)
            previous = example
    return found


EXAMPLES = examples()


def test_the_examples_are_found():
    assert len(EXAMPLES) >= 10 and any(e.skip for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_example_runs(example: Example, tmp_path):
    if example.skip is not None:
        pytest.skip(f"marked not run: {example.skip}")
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    env.pop("REQCTX_EXPECT_MONKEY", None)
    env.pop("SENTRY_DSN", None)  # the Sentry sample then sends nothing anywhere (loopback only)
    done = subprocess.run(
        [sys.executable, "-c", example.code + "\n" + CALL_APP],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{example.where} failed:\n{done.stderr[-3000:]}"
