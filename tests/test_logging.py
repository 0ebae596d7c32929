"""RequestIdFilter, the log-record factory and the structlog processor."""

from __future__ import annotations

import io
import logging
import logging.config
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import gevent
import pytest
from fresh_interpreter import run_in_fresh_interpreter

import flask_reqctx.logging as reqctx_logging
from flask_reqctx import create_request_context, get_request_context
from flask_reqctx.logging import RequestIdFilter, add_request_id

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _listed(
    name: str, *, handler_filter: logging.Filter | None = None, logger_filter: logging.Filter | None = None
) -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """The logger ``name`` (not propagating) with a :class:`ListHandler`, and that handler's
    records; the handler and ``logger_filter`` are removed again at the end."""
    logger = logging.getLogger(name)
    handler = ListHandler()
    if handler_filter is not None:
        handler.addFilter(handler_filter)
    logger.addHandler(handler)
    if logger_filter is not None:
        logger.addFilter(logger_filter)
    logger.propagate = False
    try:
        yield logger, handler.records
    finally:
        logger.removeHandler(handler)
        if logger_filter is not None:
            logger.removeFilter(logger_filter)


@pytest.fixture
def captured():
    """A logger ``logtest.handler`` whose handler carries the filter."""
    with _listed("logtest.handler", handler_filter=RequestIdFilter()) as (logger, records):
        logger.setLevel(logging.INFO)
        yield logger, records


def _fields(records):
    return [(r.getMessage(), r.request_id, r.trace_id) for r in records]


def test_every_unit_of_a_request_logs_its_id(app, client, captured):
    logger, records = captured

    @app.get("/")
    def index():
        logger.info("view")
        gevent.spawn(logger.info, "greenlet").join()
        thread = threading.Thread(target=logger.info, args=("thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(logger.info, "executor").result()
        gevent.spawn(lambda: gevent.spawn(logger.info, "grandchild").join()).join()
        return "ok"

    logger.info("before")
    client.get("/", headers={"X-Request-ID": "rid-1", "traceparent": TRACEPARENT})
    logger.info("after")
    trace = TRACEPARENT[3:35]
    assert _fields(records) == [
        ("before", "-", "-"),
        ("view", "rid-1", trace),
        ("greenlet", "rid-1", trace),
        ("thread", "rid-1", trace),
        ("executor", "rid-1", trace),
        ("grandchild", "rid-1", trace),
        ("after", "-", "-"),
    ]


def test_request_without_traceparent_logs_one_new_trace_id(app, client, captured):
    logger, records = captured

    @app.get("/")
    def index():
        logger.info("one")
        gevent.spawn(logger.info, "two").join()
        return get_request_context().trace_id

    trace_id = client.get("/").get_data(as_text=True)
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert [r.trace_id for r in records] == [trace_id, trace_id]


def test_concurrent_requests_never_mix_ids(app, captured):
    logger, records = captured

    @app.get("/<name>")
    def index(name):
        for i in range(3):
            logger.info("%s %d", name, i)
            time.sleep(0.002)  # a greenlet switch under gevent.monkey
            gevent.spawn(logger.info, "%s child %d", name, i).join()
        return "ok"

    def call(n: int) -> None:
        app.test_client().get(f"/req{n}", headers={"X-Request-ID": f"req{n}"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(16)))
    assert len(records) == 16 * 6
    for record in records:
        assert record.getMessage().split()[0] == record.request_id


def test_filter_on_a_logger_and_the_default(app, client):
    with _listed("logtest.on_logger", logger_filter=RequestIdFilter(default="none")) as (logger, records):

        @app.get("/")
        def index():
            logger.warning("inside")
            return "ok"

        logger.warning("outside")
        client.get("/", headers={"X-Request-ID": "on-logger"})
    outside, inside = records
    assert (outside.request_id, outside.trace_id) == ("none", "none")
    assert inside.request_id == "on-logger" and re.fullmatch(r"[0-9a-f]{32}", inside.trace_id)


def test_values_already_on_the_record_are_kept(app, client, captured):
    logger, records = captured

    @app.get("/")
    def index():
        logger.info("explicit", extra={"request_id": "from-extra"})
        return "ok"

    client.get("/", headers={"X-Request-ID": "real"})
    assert records[0].request_id == "from-extra"
    assert re.fullmatch(r"[0-9a-f]{32}", records[0].trace_id)


def test_documented_dict_config_works(app, client, monkeypatch):
    """The dictConfig example in the module docstring, run as written."""
    doc = reqctx_logging.__doc__
    example = doc[doc.index("    import logging.config") : doc.index("Access logs")]
    example = "\n".join(line[4:] for line in example.splitlines())
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # ext://sys.stderr resolves at configure time
    try:
        exec(compile(example, "docstring-example", "exec"), {})
        log = logging.getLogger("logtest.dictconfig")

        @app.get("/")
        def index():
            log.info("in the view")
            return "ok"

        log.info("at start-up")
        client.get("/", headers={"X-Request-ID": "doc-rid", "traceparent": TRACEPARENT})
    finally:
        for handler in root.handlers[:]:
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("INFO [- -] logtest.dictconfig: at start-up")
    assert lines[1].endswith(f"INFO [doc-rid {TRACEPARENT[3:35]}] logtest.dictconfig: in the view")


def test_log_record_factory(app, client):
    with _listed("logtest.factory") as (logger, records):  # no filter: the factory alone
        reqctx_logging.install_log_record_factory()
        reqctx_logging.install_log_record_factory()  # idempotent
        try:

            @app.get("/")
            def index():
                gevent.spawn(logger.warning, "child").join()
                return "ok"

            logger.warning("outside")
            client.get("/", headers={"X-Request-ID": "fac-rid"})
        finally:
            reqctx_logging.uninstall_log_record_factory()
    assert logging.getLogRecordFactory() is logging.LogRecord
    assert [r.request_id for r in records] == ["-", "fac-rid"]


def test_invalid_id_warning_carries_the_fresh_id_not_the_raw_one(app, client, captured):
    ext_logger = logging.getLogger("flask_reqctx")
    handler = captured[0].handlers[0]
    ext_logger.addHandler(handler)
    try:
        response = client.get("/nowhere", environ_overrides={"HTTP_X_REQUEST_ID": "raw\r\nvalue"})
    finally:
        ext_logger.removeHandler(handler)
    (record,) = captured[1]
    assert record.request_id == response.headers["X-Request-ID"]
    assert "X-Request-Id (10 chars)" in record.getMessage() and "raw" not in record.getMessage()


# -- structlog ---------------------------------------------------------------------------


def test_structlog_processor_without_structlog_calls():
    assert add_request_id(None, "info", {"event": "x"}) == {"event": "x"}  # nothing outside a request
    with create_request_context(request_id="job-7") as ctx:
        event = add_request_id(None, "info", {"event": "x"})
        assert event == {"event": "x", "request_id": "job-7", "trace_id": ctx.trace_id}
        bound = add_request_id(None, "info", {"event": "x", "request_id": "mine"})
        assert bound["request_id"] == "mine"


def test_structlog_end_to_end(app, client):
    structlog = pytest.importorskip("structlog")
    out = io.StringIO()
    structlog.configure(
        processors=[add_request_id, structlog.processors.JSONRenderer(sort_keys=True)],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger()

        @app.get("/")
        def index():
            log.info("view")
            gevent.spawn(log.info, "child").join()
            return "ok"

        client.get("/", headers={"X-Request-ID": "slog-rid", "traceparent": TRACEPARENT})
        log.info("outside")
    finally:
        structlog.reset_defaults()
    trace = TRACEPARENT[3:35]
    assert out.getvalue().splitlines() == [
        f'{{"event": "view", "request_id": "slog-rid", "trace_id": "{trace}"}}',
        f'{{"event": "child", "request_id": "slog-rid", "trace_id": "{trace}"}}',
        '{"event": "outside"}',
    ]


def test_importing_does_not_import_structlog_or_requests():
    code = (
        "import sys, flask_reqctx, flask_reqctx.logging, flask_reqctx.outgoing;"
        "assert 'structlog' not in sys.modules and 'requests' not in sys.modules, sys.modules.keys()"
    )
    run_in_fresh_interpreter(code, timeout=30)
