"""Two services served by gunicorn for the cross-service tests: A calls B over loopback.

Both log through :class:`flask_reqctx.logging.RequestIdFilter` to stderr, one line per
record: ``APPLOG <service> rid=<request id> tid=<trace id> <message>``.
"""

from __future__ import annotations

import logging
import logging.config
import os
import threading

import gevent
import requests
from flask import Flask, jsonify, request

from flask_reqctx import ReqCtx, get_request_context, outgoing_headers
from flask_reqctx.integrations import requests as reqctx_requests

log = logging.getLogger("calling_services")


def _configure_logging(service: str) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": "flask_reqctx.logging.RequestIdFilter"}},
            "formatters": {
                "default": {"format": f"APPLOG {service} rid=%(request_id)s tid=%(trace_id)s %(message)s"}
            },
            "handlers": {
                "console": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "default",
                    "filters": ["request_id"],
                }
            },
            "loggers": {
                "calling_services": {"level": "INFO", "handlers": ["console"], "propagate": False},
                # the extension's own warnings (invalid ids) go through the same filter
                "flask_reqctx": {"level": "INFO", "handlers": ["console"], "propagate": False},
            },
        }
    )


def _ids() -> dict:
    ctx = get_request_context()
    assert ctx is not None
    return {
        "request_id": ctx.request_id,
        "trace_id": ctx.trace_id,
        "parent_id": ctx.trace.parent_id,
        "span_id": ctx.trace.span_id,
        "flags": ctx.trace.flags,
        "tracestate": ctx.trace.tracestate,
    }


def _health():
    return jsonify(pid=os.getpid())


def make_b() -> Flask:
    """Service B: reports the ids it received, logging from the view, a greenlet and a thread."""
    _configure_logging("B")
    app = Flask("service_b")
    ReqCtx(app, header=["X-Request-ID", "X-Correlation-ID"])
    app.get("/health")(_health)

    @app.get("/whoami")
    def whoami():
        log.info("b view")
        gevent.spawn(log.info, "b greenlet").join()
        thread = threading.Thread(target=log.info, args=("b thread",))
        thread.start()
        thread.join()
        received = {name: request.headers.get(name) for name in ("X-Request-ID", "traceparent", "tracestate")}
        return jsonify(ids=_ids(), received=received)

    @app.get("/echo")
    def echo():
        log.info("b echo")
        return jsonify(_ids())

    return app


def make_a() -> Flask:
    """Service A: calls B during its request, from the view and from a child greenlet."""
    _configure_logging("A")
    reqctx_requests.install()
    app = Flask("service_a")
    ReqCtx(app)
    app.get("/health")(_health)
    b_url = os.environ["SERVICE_B_URL"]

    @app.get("/call")
    def call():
        log.info("a calling b")
        direct = requests.get(b_url + "/whoami", timeout=10)
        child = gevent.spawn(lambda: requests.Session().get(b_url + "/whoami", timeout=10)).get()
        explicit = requests.get(
            b_url + "/whoami", headers={"X-Request-ID": "caller-set", "traceparent": _FIXED}, timeout=10
        )
        return jsonify(
            a=_ids(),
            outgoing=outgoing_headers(),
            direct=direct.json(),
            direct_echo=direct.headers.get("X-Request-ID"),
            child=child.json(),
            explicit=explicit.json(),
        )

    return app


_FIXED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
