"""Start a real gunicorn on 127.0.0.1 for the server tests, and talk to it.

Not a test module.  :class:`GunicornServer` binds a listening socket to port 0 itself and
hands it to gunicorn as ``-b fd://N`` (no race for the port, no log parsing), runs gunicorn
with this same interpreter (``sys.executable -m gunicorn``, so tox's venv is used) and with
the environment of ``fresh_interpreter.fresh_env``, so that both ``server_app`` and the very
``flask_reqctx`` this pytest process imported are the ones the workers import.  It waits for
``GET /health`` (bounded) and stops gunicorn at teardown (terminate, then kill).  gunicorn's
output (and the app's stderr) goes to a temporary file, read back with :meth:`GunicornServer.log`.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

# The paths are re-exported: tests that start servers with their own PYTHONPATH read them here.
from fresh_interpreter import PACKAGE_PARENT as PACKAGE_PARENT
from fresh_interpreter import TESTS_DIR, fresh_env, run_in_fresh_interpreter
from waiting import wait_until

import flask_reqctx


class ServerError(RuntimeError):
    pass


class ServerExitedEarly(ServerError):
    """The server's process ended before it was ready (for one that binds a port we chose: most
    likely another process took the port first)."""


def free_port() -> int:
    """A loopback port free at this moment.  For servers that bind a port themselves (redis,
    postgres): another process may take it before they do, so they retry on another one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_start(
    proc: subprocess.Popen,
    ready: Callable[[], bool],
    name: str,
    timeout: float,
    log: Callable[[], str],
    stop: Callable[[], None],
) -> None:
    """Poll ``ready()`` until it holds; fail at once, with the server's ``log()``, when ``proc``
    has exited (it will not come up), or after ``timeout`` seconds: then ``stop()`` first."""

    def started() -> bool:
        if proc.poll() is not None:
            raise ServerExitedEarly(f"{name} exited early (rc={proc.returncode}):\n{log()}")
        return ready()

    try:
        wait_until(started, timeout, 0.05, lambda: f"{name} not ready after {timeout}s:\n{log()}")
    except BaseException:
        stop()
        raise


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Stop ``proc`` by its pid: SIGTERM (a graceful or warm shutdown), SIGKILL after
    ``timeout`` seconds; returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


class GunicornServer:
    """One gunicorn master (+ workers) serving ``app`` on a free loopback port."""

    def __init__(
        self,
        worker_class: str = "gevent",
        workers: int = 1,
        app: str = "server_app:app",
        *,
        threads: int | None = None,
        worker_connections: int | None = None,
        env: dict[str, str] | None = None,
        extra_args: Iterable[str] = (),
        log_level: str = "warning",
        startup_timeout: float = 20.0,
    ) -> None:
        self.worker_class = worker_class
        self.workers = workers
        self.app = app
        self.threads = threads
        self.worker_connections = worker_connections
        self.extra_env = dict(env or {})
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._log = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> GunicornServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        fd = sock.fileno()
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            self.worker_class,
            "-w",
            str(self.workers),
            "-b",
            f"fd://{fd}",
            "--no-control-socket",
            "--log-level",
            self.log_level,
            "--graceful-timeout",
            "3",
        ]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        if self.worker_connections is not None:
            cmd += ["--worker-connections", str(self.worker_connections)]
        cmd += [*self.extra_args, self.app]
        env = fresh_env([TESTS_DIR], self.extra_env)
        # gunicorn's log goes to a file, not a pipe nobody reads (tracebacks could fill it).
        self._log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                cmd,
                cwd=TESTS_DIR,
                env=env,
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        finally:
            sock.close()  # gunicorn holds its own copy of the listening socket
        name = f"gunicorn -k {self.worker_class}"
        wait_for_start(self.proc, self._healthy, name, self.startup_timeout, self.log, self.stop)
        return self

    def _healthy(self) -> bool:
        """``GET /health`` answers 200."""
        try:
            return self.request("/health", timeout=1.0)[0] == 200
        except OSError:
            return False

    def log(self, limit: int | None = 8000) -> str:
        """gunicorn's output so far (its last ``limit`` characters)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace")
        return text if limit is None else text[-limit:]

    def boots(self) -> int:
        """How many workers gunicorn booted (``workers`` unless one died and was replaced);
        needs ``log_level="info"``, the level gunicorn logs each boot at."""
        return self.log(None).count("Booting worker with pid")

    def extension_errors(self) -> list[str]:
        """Lines the ``flask_reqctx`` logger wrote (``server_app`` formats them
        ``flask_reqctx: LEVEL: message``)."""
        return [line for line in self.log(None).splitlines() if "flask_reqctx: " in line]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- small client helpers (one connection per call) ------------------------------------

    def request(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        status, _headers, body = self.request(path, headers)
        if status != 200:
            raise ServerError(f"GET {path} -> {status}: {body[:500]!r}\n{self.log()}")
        return json.loads(body)

    def worker_pid(self) -> int:
        """The pid of the worker answering ``GET /health``, for apps whose ``/health`` returns
        ``{"pid": ...}`` (``calling_services``)."""
        return int(self.get_json("/health")["pid"])

    def wait_idle(self, pids: Iterable[int] = (), timeout: float = 10.0) -> dict[int, dict]:
        """Poll ``/stats`` until every worker seen (and every pid in ``pids``) reports no live
        unit besides the ``/stats`` request itself; returns the last report per pid."""
        wanted = set(pids)
        last: dict[int, dict] = {}

        def all_idle() -> bool:
            report = self.get_json("/stats")
            last[report["pid"]] = report
            idle = {pid for pid, r in last.items() if r["live_besides_this_request"] == 0}
            return len(last) >= max(1, len(wanted)) and wanted <= idle and idle == set(last)

        wait_until(all_idle, timeout, 0.02, lambda: f"workers still hold live contexts: {last}")
        return last


def run_load(server: GunicornServer, timeout: float = 120.0, **spec: Any) -> dict:
    """Run ``load_client.py`` (plain interpreter, asyncio, loopback only) against ``server``."""
    spec = {"host": server.host, "port": server.port, **spec}
    out = run_in_fresh_interpreter(
        script=os.path.join(TESTS_DIR, "load_client.py"), input=json.dumps(spec), timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise ServerError(f"load client failed rc={out.returncode}:\n{out.stderr[-4000:]}\n{server.log()}")
    return json.loads(out.stdout)


def check_fanout(report: dict, children: int, requests: int, *, gevent: bool) -> tuple[dict[int, int], int]:
    """Every ``/fanout`` response of a ``run_load`` report saw only its own request's id.

    With an incoming id: echoed header == sent id == the view's id == every child's id.
    Without one: echoed header == the view's id == every child's id (a fresh, valid id).
    Returns the number of responses per worker pid, and how many requests sent no id.
    """
    assert report["error_count"] == 0, report["errors"]
    assert report["statuses"] == {"200": requests}, report["statuses"]
    results = report["results"]
    assert len(results) == requests
    per_pid: dict[int, int] = {}
    ids = set()
    without = 0
    for result in results:
        body = result["body"]
        assert isinstance(body, dict), result
        request_id = body["request_id"]
        assert flask_reqctx.is_valid_request_id(request_id), result
        if result["sent"] is not None:
            assert request_id == result["sent"], result
        else:
            without += 1
        assert result["echoed"] == request_id, result
        assert body["seen"] == [request_id] * (children + 1), result
        assert body["gevent"] is gevent, result
        ids.add(request_id)
        per_pid[body["pid"]] = per_pid.get(body["pid"], 0) + 1
    assert len(ids) == requests, "request ids were not all distinct"
    return per_pid, without


def get_late(conn: http.client.HTTPConnection, sent: str | None) -> str:
    """``GET /late`` on ``conn`` (kept alive), sending ``sent`` as ``X-Request-ID`` if not
    ``None``; checks the response echoes the view's id (``sent`` when given) and returns it."""
    conn.request("GET", "/late", headers={"X-Request-ID": sent} if sent else {})
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 200
    assert response.headers["X-Request-ID"] == body["request_id"]
    if sent:
        assert body["request_id"] == sent
    return body["request_id"]


def check_late_results(server: GunicornServer, seen_ids: list[str], timeout: float = 5.0) -> list[dict]:
    """Drain ``/late-results`` (each call drains whichever worker answers it) until there is
    one entry per ``/late`` request made; every late child saw its own request's id.
    Returns the entries."""
    expected = len(seen_ids)
    results: list[dict] = []

    def all_drained() -> bool:
        results.extend(server.get_json("/late-results"))
        return len(results) >= expected

    wait_until(all_drained, timeout, 0.02, lambda: f"{len(results)} of {expected} late results: {results}")
    assert len(results) == expected, results
    for entry in results:
        assert entry["child"] == entry["view"], entry
    assert sorted(e["view"] for e in results) == sorted(seen_ids)
    return results
