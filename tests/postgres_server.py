"""Start Debian's PostgreSQL on 127.0.0.1 for the SQL-comment tests (not a test module).

:class:`PostgresServer` runs ``initdb`` into a temporary data directory and ``postgres`` on a
free loopback port, with every statement logged (``log_min_duration_statement=0``) to a file
read back by :meth:`PostgresServer.log`.  PostgreSQL refuses to run as root, so as root
(CI) both run as the ``postgres`` user Debian's package creates, through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import psycopg
from servers import ServerError, ServerExitedEarly, free_port, stop_process, wait_for_start

USER = "reqctx"


def postgres_bin_dir() -> str:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise ServerError("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    return os.path.dirname(found[-1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, trust authentication, user ``reqctx``."""

    def __init__(self, settings: dict[str, str] | None = None, startup_timeout: float = 30.0) -> None:
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "log_min_duration_statement": "0",  # every statement, with its text, in the log
            "log_line_prefix": "%m [%p] ",
            "fsync": "off",
            "max_connections": "120",
            **(settings or {}),
        }
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.root = ""
        self._log_path = ""

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for psycopg 3."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> PostgresServer:
        bin_dir = postgres_bin_dir()
        # as root, a directory the postgres user can reach whatever TMPDIR says (/root is 0700)
        self.root = tempfile.mkdtemp(prefix="reqctx-pg-", dir="/tmp" if os.geteuid() == 0 else None)
        data, sockets = os.path.join(self.root, "data"), os.path.join(self.root, "sockets")
        os.mkdir(sockets)
        self._log_path = os.path.join(self.root, "server.log")
        open(self._log_path, "w").close()
        if os.geteuid() == 0:
            for path in (self.root, sockets, self._log_path):
                shutil.chown(path, "postgres", "postgres")
        initdb = [f"{bin_dir}/initdb", "-D", data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
        done = subprocess.run(
            self._as_owner(initdb), cwd=self.root, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise ServerError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        try:
            for attempt in range(3):  # the free port may be taken before postgres binds it
                try:
                    self._launch(bin_dir, data, sockets)
                    break
                except ServerExitedEarly:
                    if attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, bin_dir: str, data: str, sockets: str) -> None:
        self.port = free_port()
        cmd = [f"{bin_dir}/postgres", "-D", data, "-p", str(self.port), "-k", sockets]
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        with open(self._log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._as_owner(cmd),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # On failure wait_for_start stops only the process: the cluster stays for a retry.
        stop = self._stop_process
        wait_for_start(self.proc, self._accepting, "postgres", self.startup_timeout, self.log, stop)

    def _stop_process(self) -> None:
        if self.proc is not None:
            # runuser passes SIGTERM on: postgres' "smart" shutdown, immediate with no clients left
            stop_process(self.proc, timeout=20)
            self.proc = None

    def _accepting(self) -> bool:
        try:
            psycopg.connect(self.dsn, connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def log(self) -> str:
        with open(self._log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def stop(self) -> None:
        self._stop_process()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = ""

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
