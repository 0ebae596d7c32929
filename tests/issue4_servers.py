"""Start a real ``gunicorn -k gevent`` on loopback for the issue-4 tests (ids, tracing, fuzz).

The listening socket is bound here (127.0.0.1, port 0) and handed over as ``fd://N``, so
there is no port race and no log parsing; stderr goes to a file the test can read.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


class Server:
    """A running gunicorn: its base URL, port, and the file its stderr goes to."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def get_json(self, path: str, timeout: float = 10.0) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
            return json.loads(response.read())

    def worker_pid(self) -> int:
        return int(self.get_json("/health")["pid"])

    def boots(self) -> int:
        """How many workers gunicorn booted (1 unless one died and was replaced)."""
        return self.log().count("Booting worker with pid")


def _wait_ready(server: Server, deadline: float) -> None:
    while True:
        if server.proc.poll() is not None:
            rc = server.proc.returncode
            raise RuntimeError(f"gunicorn exited early (rc={rc}):\n{server.log()[-3000:]}")
        try:
            server.worker_pid()
            return
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gunicorn not ready:\n{server.log()[-3000:]}") from None
            time.sleep(0.05)


@contextmanager
def serve(
    app_spec: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    log_level: str = "info",
    timeout: float = 20.0,
) -> Iterator[Server]:
    """Run ``gunicorn -k gevent -w 1 app_spec`` (a ``tests/`` module) until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port, fd = sock.getsockname()[1], sock.fileno()
    child_env = dict(os.environ)
    path = [str(ROOT), str(TESTS), os.environ.get("PYTHONPATH")]
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    child_env.update(env or {})
    cmd = [
        sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1",
        "-b", f"fd://{fd}", "--no-control-socket", "--log-level", log_level,
        "--graceful-timeout", "2", app_spec,
    ]  # fmt: skip
    with open(log_path, "wb") as stderr:
        out = {"stdin": subprocess.DEVNULL, "stdout": stderr, "stderr": stderr}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env, pass_fds=(fd,), **out)
    sock.close()  # gunicorn holds its own copy
    server = Server(proc, port, log_path)
    try:
        _wait_ready(server, time.monotonic() + timeout)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
