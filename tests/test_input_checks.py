"""Checked input at every door, and an app freed like a plain Flask app."""

from __future__ import annotations

import gc
import subprocess
import textwrap
import weakref

import pytest
from flask import Flask
from fresh_interpreter import run_in_fresh_interpreter

from flask_reqctx import ReqCtx, create_request_context, outgoing_headers


@pytest.mark.parametrize("bad", ["", "has space", "cr\rlf\n", "x" * 129, "ünïcode", 42])
def test_create_request_context_applies_the_id_rule(bad):
    with pytest.raises(ValueError, match="A-Za-z0-9"):
        create_request_context(request_id=bad)
    assert outgoing_headers() == {}


@pytest.mark.parametrize("bad", [["not", "a", "dict"], "text", 3])
def test_create_request_context_data_must_be_a_dict(bad):
    with pytest.raises(TypeError, match="dict"):
        create_request_context(bad)


def test_create_request_context_accepts_a_valid_id_and_dict():
    with create_request_context({"job": 1}, "job-1:a.b_c") as ctx:
        assert ctx.request_id == "job-1:a.b_c" and ctx.data == {"job": 1}


def _run_without_greenlet(code: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in which ``greenlet`` (and so gevent) cannot be imported, as
    after a plain ``pip install .``."""
    prelude = "import sys; sys.modules['greenlet'] = None; sys.modules['gevent'] = None\n"
    return run_in_fresh_interpreter(prelude + textwrap.dedent(code), check=False)


def test_lifecycle_hooks_work_without_greenlet():
    out = _run_without_greenlet(
        """
        import threading
        import flask_reqctx as r
        events = []
        hook = r.create_hook(init=lambda *a: events.append("init"),
                             destroy=lambda e: events.append("destroy"))
        hook.enable()
        with r.create_request_context():
            t = threading.Thread(target=lambda: None); t.start(); t.join()
        hook.disable()
        print(events)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['init', 'init', 'destroy', 'destroy']"


def test_switch_hooks_without_greenlet_say_what_they_need():
    out = _run_without_greenlet(
        """
        import flask_reqctx as r
        try:
            r.create_hook(before=lambda eid: None).enable()
        except RuntimeError as exc:
            print("error:", exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "error:" in out.stdout and "gevent" in out.stdout


def test_an_app_with_the_extension_is_freed_like_a_plain_app():
    gc.collect()
    gc.disable()
    try:
        for extension in (False, True):
            app = Flask(f"freed_{extension}")
            if extension:
                ReqCtx(app)
            app.get("/")(lambda: "ok")
            assert app.test_client().get("/").status_code == 200
            ref = weakref.ref(app)
            del app
            assert ref() is None, f"app not freed by reference counting (extension={extension})"
    finally:
        gc.enable()


def test_a_request_that_spawned_children_is_freed_without_gc(app, client):
    """The context (and the WSGI environ it holds) is not kept in a reference cycle by the
    child contexts made for its greenlets: it goes when its last unit does."""
    import gevent

    from flask_reqctx import get_request_context

    refs: list[weakref.ref[object]] = []

    @app.get("/fan")
    def fan():
        refs.append(weakref.ref(get_request_context()))
        gevent.joinall([gevent.spawn(lambda: None) for _ in range(3)])
        return "ok"

    gc.collect()
    gc.disable()
    try:
        assert client.get("/fan").status_code == 200
        gevent.sleep(0)  # greenlet keeps the last dead child's context until the next switch
        assert refs[0]() is None, "the request context outlived its request and children"
    finally:
        gc.enable()
