"""The benchmark apps (``benchmarks/variants.py``) still answer, and each does what it claims.

Runs every variant of every shape once at the WSGI level; no timing.  Skipped when the
optional comparison packages (the ``bench`` extra) are missing.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from fresh_interpreter import TESTS_DIR, run_in_fresh_interpreter

pytest.importorskip("flask_log_request_id")
pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.instrumentation.flask")


def load_variants() -> ModuleType:
    """``benchmarks/variants.py`` by path: tox's ``pytest`` does not put the repository root
    on ``sys.path``, and the benchmarks are no package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", "variants.py")
    spec = importlib.util.spec_from_file_location("benchmark_variants", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


variants = load_variants()

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the realistic views log, through the same filter the benchmark's handler uses."""
    variants.configure_logging()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(request_id)s %(trace_id)s %(message)s"))
    for existing in variants.log.handlers[0].filters:
        handler.addFilter(existing)
    variants.log.addHandler(handler)
    yield stream
    variants.log.removeHandler(handler)


def serve_once(variant: str, shape: str) -> tuple[dict[str, str], bytes]:
    respond = variants.Captured()
    body = variants.call(variants.make_app(variant, shape), variants.environ(), respond)
    assert respond.status == "200 OK", (variant, shape, respond.status, body[:200])
    return dict(respond.headers), body


@pytest.mark.parametrize("variant", variants.VARIANTS)
def test_hello(variant: str) -> None:
    headers, body = serve_once(variant, "hello")
    assert body == b"Hello, World!"
    if variant in ("reqctx", "g+uuid4"):  # the two that echo an id
        assert UUID.match(headers[variants.ID_HEADER]), headers


@pytest.mark.parametrize("variant", variants.VARIANTS)
def test_realistic_logs_its_own_id(variant: str, log_lines: io.StringIO) -> None:
    headers, body = serve_once(variant, "realistic")
    payload = json.loads(body)
    assert len(payload) == 20
    request_id = payload["request_id"]
    if variant == "bare":
        assert request_id == "-"
    elif variant == "otel":
        assert re.fullmatch(r"[0-9a-f]{32}", request_id) and int(request_id, 16) != 0
    else:
        assert UUID.match(request_id), request_id
    if variant == "reqctx":
        assert headers[variants.ID_HEADER] == request_id
    (line,) = log_lines.getvalue().splitlines()
    assert line.split()[0] == request_id and line.endswith(" handled"), line


@pytest.mark.parametrize(
    ("variant", "children_with_context"), [("bare", b"0"), ("copy-context", b"10"), ("reqctx", b"10")]
)
def test_fanout_children_see_their_context(variant: str, children_with_context: bytes) -> None:
    _headers, body = serve_once(variant, "fanout")
    assert body == children_with_context


def test_spawning_stack_probe_finds_the_call_site() -> None:
    found = variants.spawning_stack_frames()
    total, above = found["gevent's own class"]
    assert total >= 1 and above == []
    assert found["ReqCtx"][0] >= 1


@pytest.mark.parametrize("variant", ["bare", "reqctx"])
def test_measured_process_runs_the_workload_in_a_padded_heap(variant: str) -> None:
    """What callgrind measures: the padding is made before Flask is imported, then the
    workload runs to its end (the instruction benchmark itself needs valgrind)."""
    script = os.path.join(os.path.dirname(TESTS_DIR), "benchmarks", "measured_process.py")
    probe = (
        "import runpy, sys\n"
        "sys.argv = [sys.argv[0], '2', 'bare', 'hello', '0']\n"
        "sys.modules['variants'] = type(sys)('variants')\n"
        "sys.modules['variants'].workload = lambda *a: print('flask' in sys.modules)\n"
        f"runpy.run_path({script!r}, run_name='__main__')\n"
    )
    assert run_in_fresh_interpreter(probe).stdout.strip() == "False"
    env = variants.variant_env(variant)
    run_in_fresh_interpreter(script=script, args=["2", variant, "hello", "3"], env=env)
