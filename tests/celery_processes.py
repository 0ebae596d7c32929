"""A real ``redis-server`` and real ``celery worker`` processes for the Celery tests.

Not a test module.  Both listen or connect on 127.0.0.1 only, keep their files in a
temporary directory, and are stopped by pid with bounded waits (``servers.stop_process``):
a worker gets SIGTERM, Celery's warm shutdown, which lets running tasks finish.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
from typing import Any

from fresh_interpreter import TESTS_DIR, fresh_env
from servers import ServerError, free_port, stop_process
from waiting import wait_until

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """``redis-server`` on a free loopback port, no persistence, in its own directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> RedisServer:
        if REDIS_SERVER is None:
            raise ServerError("redis-server is not on PATH")
        for _ in range(attempts):  # the free port may be taken before redis binds it
            self.port = free_port()
            cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
            cmd += ["--save", "", "--appendonly", "no", "--dir", self.directory, "--daemonize", "no"]
            with open(os.path.join(self.directory, "redis.log"), "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_ready():
                return self
        raise ServerError(f"redis-server did not start:\n{self.log()}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        """True once redis answers PING, False if it exited first (its port was taken)."""
        outcome = wait_until(
            self._ready_or_exited, timeout, 0.05, message=lambda: f"redis-server silent:\n{self.log()}"
        )
        return outcome == "ready"

    def _ready_or_exited(self) -> str | None:
        if self.proc is None or self.proc.poll() is not None:
            return "exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                return "ready" if conn.recv(64).startswith(b"+PONG") else None
        except OSError:
            return None

    def log(self) -> str:
        with open(os.path.join(self.directory, "redis.log"), "rb") as log:
            return log.read().decode("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5.0)


class CeleryWorker:
    """``celery -A celery_app worker -P <pool>`` consuming the queue named after its pool."""

    def __init__(self, pool: str, concurrency: int, redis_url: str, directory: str) -> None:
        self.pool = pool
        self.concurrency = concurrency
        self.directory = directory
        self.env = fresh_env(
            [TESTS_DIR],
            {"REQCTX_TEST_REDIS": redis_url, "REQCTX_TEST_REPORTS": directory, "REQCTX_TEST_POOL": pool},
        )
        self.proc: subprocess.Popen | None = None

    @property
    def logfile(self) -> str:
        return os.path.join(self.directory, f"{self.pool}-worker.log")

    def start(self) -> CeleryWorker:
        cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", self.pool]
        cmd += ["-c", str(self.concurrency), "-Q", self.pool, "-n", f"{self.pool}@reqctx-test"]
        cmd += [
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "warning",
            "-f",
            self.logfile,
        ]
        with open(os.path.join(self.directory, f"{self.pool}-worker.out"), "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=TESTS_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        ready = os.path.join(self.directory, f"{self.pool}-ready.json")

        def started() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"celery worker -P {self.pool} exited early:\n{self.output()}")
            return os.path.exists(ready)

        wait_until(started, timeout, 0.05, lambda: f"celery -P {self.pool} not ready:\n{self.output()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        """The pool processes of a prefork worker (from ``/proc``)."""
        with open(f"/proc/{self.pid}/task/{self.pid}/children") as listing:
            return [int(pid) for pid in listing.read().split()]

    def output(self) -> str:
        text = ""
        for name in (f"{self.pool}-worker.out", f"{self.pool}-worker.log"):
            path = os.path.join(self.directory, name)
            if os.path.exists(path):
                with open(path, "rb") as log:
                    text += log.read().decode("utf-8", "replace")[-4000:]
        return text

    def log_lines(self) -> list[str]:
        with open(self.logfile, encoding="utf-8", errors="replace") as log:
            return log.read().splitlines()

    def request_shutdown(self) -> None:
        """Send SIGTERM (warm shutdown) without waiting, so several workers stop at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def shutdown(self, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM: running tasks finish); SIGKILL after ``timeout``."""
        return stop_process(self.proc, timeout) if self.proc is not None else 0

    def reports(self) -> list[dict[str, Any]]:
        """The per-process reports written at shutdown (``celery_app``)."""
        reports = []
        for path in sorted(glob.glob(os.path.join(self.directory, f"{self.pool}-report-*.json"))):
            with open(path) as report:
                reports.append(json.load(report))
        return reports
