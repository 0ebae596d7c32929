"""The README's samples run as shown: the quickstart under ``gunicorn -k gevent`` (its run
command), the Celery sample's module as written (its task called eagerly in a request)."""

from __future__ import annotations

import os
import re
import textwrap

from servers import PACKAGE_PARENT, TESTS_DIR, GunicornServer
from waiting import wait_until

REPO = os.path.dirname(TESTS_DIR)


def readme_sample(heading: str) -> str:
    """The first ``python`` code block after ``heading`` in the README."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read().split(heading, 1)[1]
    return textwrap.dedent(re.search(r"```python\n(.*?)```", text, re.S).group(1))


def test_the_quickstart_runs_under_gunicorn_gevent_and_both_children_print_its_id(tmp_path):
    # The sample verbatim, plus the probe views the server fixture waits on.
    (tmp_path / "quickstart.py").write_text(
        readme_sample("## Quickstart") + "\nfrom probe_views import add_probe_views\nadd_probe_views(app)\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), TESTS_DIR, PACKAGE_PARENT])}
    with GunicornServer("gevent", app="quickstart:app", env=env, log_level="info") as server:
        body = server.get_json("/")
        assert set(body) == {"request_id", "trace_id", "data"}
        lines = {f"{body['request_id']} spawned", f"{body['request_id']} thread"}
        wait_until(lambda: lines <= set(server.log(None).splitlines()), 10, 0.05, lambda: server.log())
        assert lines <= set(server.log(None).splitlines()), server.log()


def test_the_celery_sample_defines_what_it_uses(tmp_path):
    namespace: dict = {"__name__": "tasks"}
    exec(compile(readme_sample("## Using Celery"), "readme_celery_sample.py", "exec"), namespace)
    from flask_reqctx import create_request_context

    with create_request_context(request_id="readme-celery") as ctx:
        namespace["send_receipt"].apply(args=(7,)).get()  # eager: runs here, in this context
    assert ctx.request_id == "readme-celery"
