"""``flask_reqctx.state.reset_all()`` returns tracing, the Celery hookup and the ``requests``
integration to their state right after import (in a fresh interpreter: it resets the process)."""

from __future__ import annotations

from fresh_interpreter import run_in_fresh_interpreter


def test_reset_all_undoes_tracing_celery_and_requests():
    run_in_fresh_interpreter(
        """
import celery, gevent, requests
from celery import signals
from flask import Flask
import flask_reqctx
from flask_reqctx import ReqCtx, state, tracing
from flask_reqctx.celery import init_celery
from flask_reqctx.integrations import requests as reqctx_requests

original_send = requests.Session.send
app = Flask("traced"); app.config["REQCTX_TRACE"] = True; ReqCtx(app)
app.add_url_rule("/", "v", lambda: str(gevent.spawn(int).get()))
app.test_client().get("/")
assert len(tracing.finished()) == 1 and flask_reqctx.hooks.enabled.lifecycle
init_celery(celery.Celery("tasks"))
reqctx_requests.install()
assert signals.task_prerun.receivers and requests.Session.send is not original_send

state.reset_all()
assert tracing.finished() == [] and tracing.live() == [] and not flask_reqctx.hooks.enabled.lifecycle
assert not signals.task_prerun.receivers and not signals.before_task_publish.receivers
assert requests.Session.send is original_send and not reqctx_requests.installed()

# and each works again from scratch
app2 = Flask("again"); app2.config["REQCTX_TRACE"] = True; ReqCtx(app2)
app2.test_client().get("/nothing-here")
assert [t["path"] for t in tracing.finished()] == ["/nothing-here"]
init_celery(celery.Celery("tasks2"))
assert signals.task_prerun.receivers
"""
    )
