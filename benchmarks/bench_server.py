"""3, 4. Throughput and CPU per request on the real server, every variant.

One ``gunicorn -k gevent -w 1`` per variant (``benchmarks/app.py``: ``BENCH_VARIANT``,
``BENCH_SHAPE``), all started side by side on loopback ports and pinned with ``taskset`` to
the last CPU; ``wrk -t1 -c200`` (a gevent keep-alive client when wrk is missing) pinned to
the first CPU hits one server at a time, round-robin, direction alternating per round
(short runs, so drift in the machine's load hits every variant).  Shapes: hello world (every
variant) and the fan-out view (10 greenlets per request: bare, copy-context, reqctx).

Reported per variant: median req/s, and the worker's CPU per request from
``/proc/<pid>/schedstat`` (nanoseconds on CPU) over the same runs, each as a ratio to bare.
The machine is shared: CPU per request is far less sensitive to other processes than
req/s, and instruction counts (``bench_instructions.py``) less still.

Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from _common import QUICK, REPO, compared, emit, median, row
from variants import variant_env, variants_for

CONNECTIONS = 200
DURATION = 2 if QUICK else 3
ROUNDS = 2 if QUICK else 5
WARMUP = 1 if QUICK else 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int | None) -> list[str]:
    """``taskset`` prefix pinning a command to ``cpu`` (nothing when it cannot be pinned)."""
    return [] if cpu is None or shutil.which("taskset") is None else ["taskset", "-c", str(cpu)]


#: (server CPU, load-generator CPU): the last and the first, when there are two or more.
SERVER_CPU, CLIENT_CPU = (os.cpu_count() - 1, 0) if (os.cpu_count() or 1) >= 2 else (None, None)


def start_server(variant: str, shape: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, BENCH_VARIANT=variant, BENCH_SHAPE=shape, PYTHONPATH=REPO, **variant_env(variant))
    cmd = [
        *pinned(SERVER_CPU),
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gevent",
        "-w",
        "1",
        "--worker-connections",
        "1000",
        "--backlog",
        "2048",
        "--no-control-socket",
        "--log-level",
        "warning",
        "--chdir",
        REPO,
        "-b",
        f"127.0.0.1:{port}",
        "benchmarks.app:app",
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if get(port, "/")[0] == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn ({variant}, {shape}) exited with {proc.returncode}")
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"gunicorn ({variant}, {shape}) did not become ready in 30 s")


def worker_pid(master: int) -> int:
    """The gunicorn worker: the child process of ``master``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                return int(entry)
    raise RuntimeError(f"no worker process under gunicorn master {master}")


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the session this script started, by its id
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def load(port: int, path: str, duration: float) -> tuple[float, int, int]:
    """(requests/s, completed requests, errors) for ``duration`` seconds of load."""
    url = f"http://127.0.0.1:{port}{path}"
    if shutil.which("wrk"):
        out = subprocess.run(
            [
                *pinned(CLIENT_CPU),
                "wrk",
                "-t1",
                f"-c{CONNECTIONS}",
                f"-d{duration}s",
                "--timeout",
                "10s",
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        done = int(re.search(r"(\d+) requests in", out).group(1))
        errors = 0
        m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        if m:
            errors += int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m:
            errors += sum(int(x) for x in m.groups())
        return rate, done, errors
    out = subprocess.run(
        [
            *pinned(CLIENT_CPU),
            sys.executable,
            os.path.abspath(__file__),
            "--client",
            str(port),
            path,
            str(duration),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["rate"], result["done"], result["errors"]


def gevent_client(port: int, path: str, duration: float) -> None:
    """Fallback load generator: CONNECTIONS keep-alive connections, one greenlet each."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    done = [0]
    errors = [0]
    stop_at = time.monotonic() + duration

    def worker() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        buf = b""
        try:
            while time.monotonic() < stop_at:
                sock.sendall(request)
                while b"\r\n\r\n" not in buf:
                    buf += sock.recv(65536)
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                while len(buf) < length:
                    buf += sock.recv(65536)
                buf = buf[length:]
                if not head.startswith(b"HTTP/1.1 200"):
                    errors[0] += 1
                done[0] += 1
        except OSError:
            errors[0] += 1
        finally:
            sock.close()

    start = time.monotonic()
    gevent.joinall([gevent.spawn(worker) for _ in range(CONNECTIONS)])
    rate = done[0] / (time.monotonic() - start)
    print(json.dumps({"rate": rate, "done": done[0], "errors": errors[0]}))


def measure(shape: str, rows: list[dict], notes: list[str]) -> None:
    """Start one server per variant of ``shape``, load them in turn, add rows and notes."""
    variants = variants_for(shape)
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for variant in variants:
            servers[variant] = start_server(variant, shape)
        workers = {variant: worker_pid(proc.pid) for variant, (proc, _port) in servers.items()}
        for variant in variants:
            load(servers[variant][1], "/", WARMUP)
        rates: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        busy: dict[str, list[float]] = {v: [] for v in variants}
        errors = 0
        for i in range(ROUNDS):
            for variant in variants if i % 2 == 0 else variants[::-1]:
                before, started = cpu_ns(workers[variant]), time.monotonic()
                rate, done, errs = load(servers[variant][1], "/", DURATION)
                used = cpu_ns(workers[variant]) - before
                cpu[variant].append(used / max(done, 1) / 1e3)
                busy[variant].append(used / 1e9 / (time.monotonic() - started))
                rates[variant].append(rate)
                errors += errs
        leaks = ""
        if "reqctx" in servers:
            time.sleep(0.5)  # the load has drained: every unit must be gone
            server_stats = json.loads(get(servers["reqctx"][1], "/stats")[1])
            leaks = (
                f"; ReqCtx server afterwards: live={server_stats['live'] - 1} (the /stats request excluded)"
            )
    finally:
        for proc, _port in servers.values():
            stop_server(proc)
    section = f"3. gunicorn -k gevent -w 1, {shape} (noisy)"
    med = {v: median(r) for v, r in rates.items()}
    cpu_med = {v: median(c) for v, c in cpu.items()}
    rate_column, cpu_column = f"server {shape} req/s", f"server {shape} CPU/req"
    for variant in variants:
        if variant == "bare":
            rows.append(
                row(section, "bare: req/s (median)", med["bare"], "req/s", variant="bare", column=rate_column)
            )
            rows.append(
                row(
                    section,
                    "bare: worker CPU/request (median)",
                    cpu_med["bare"],
                    "us/req",
                    variant="bare",
                    column=cpu_column,
                )
            )
            continue
        extra: dict = {"variant": variant, "column": rate_column}
        if variant == "reqctx":  # the earlier server goals: >= 0.97 hello, >= 0.95 fan-out
            target = 0.97 if shape == "hello" else 0.95
            extra.update(goal=f">= {target} req/s", met=med[variant] / med["bare"] >= target)
        rows.append(
            compared(
                section, f"{variant}: req/s (median)", med[variant], "req/s", "bare", med["bare"], **extra
            )
        )
        rows.append(
            compared(
                section,
                f"{variant}: worker CPU/request (median)",
                cpu_med[variant],
                "us/req",
                "bare",
                cpu_med["bare"],
                variant=variant,
                column=cpu_column,
            )
        )
    tool = "wrk" if shutil.which("wrk") else "gevent client"
    pins = "unpinned" if SERVER_CPU is None else f"server on CPU {SERVER_CPU}, {tool} on CPU {CLIENT_CPU}"
    notes.append(
        f"server, {shape}: {tool} -t1 -c{CONNECTIONS}, {ROUNDS} rounds x {DURATION} s, {pins}; "
        "req/s per round: "
        + "; ".join(f"{v} {[round(r) for r in rates[v]]}" for v in variants)
        + "; worker CPU busy (s/s, median): "
        + ", ".join(f"{v} {median(b):.2f}" for v, b in busy.items())
        + f"; errors {errors}{leaks}"
    )


def main() -> None:
    rows: list[dict] = []
    notes: list[str] = []
    for shape in ("hello", "fanout"):
        measure(shape, rows, notes)
    emit(rows, notes)


if __name__ == "__main__":
    if "--client" in sys.argv:
        i = sys.argv.index("--client")
        gevent_client(int(sys.argv[i + 1]), sys.argv[i + 2], float(sys.argv[i + 3]))
    else:
        main()
