"""Goals 3 and 4: throughput on the real server, with and without ReqCtx.

Two ``gunicorn -k gevent -w 1`` servers run side by side on loopback ports
(``benchmarks/app.py``, ``BENCH_REQCTX=0`` and ``=1``); ``wrk -t1 -c200`` hits one at a time,
alternating (without, with, with, without, ...; short runs, so drift in the
machine's load hits both) for ``/`` (hello world) and ``/fanout``
(10 child greenlets per request).  Ratio = median req/s with / median req/s without.
Alongside, the worker's CPU time per request (``/proc/<pid>/schedstat``, nanoseconds on
CPU) over the same runs: the server shares two cores with wrk and with whatever else the
machine runs, and CPU per request is far less sensitive to that than req/s.
Without wrk, a gevent keep-alive client in a subprocess does the same job (slower, so
its absolute numbers are lower; the ratios still compare like with like).

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

CONNECTIONS = 200
DURATION = 2 if QUICK else 3
ROUNDS = 2 if QUICK else 5
WARMUP = 1 if QUICK else 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(with_reqctx: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, BENCH_REQCTX="1" if with_reqctx else "0", PYTHONPATH=REPO)
    if not with_reqctx:
        env["FLASK_REQCTX_PATCH"] = "0"  # belt and braces: the app never imports it anyway
    cmd = [
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
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError("gunicorn did not become ready in 30 s")


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
            ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--timeout", "10s", url],
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
        [sys.executable, os.path.abspath(__file__), "--client", str(port), path, str(duration)],
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


def main() -> None:
    servers = {}
    try:
        servers["without"] = start_server(False)
        servers["with"] = start_server(True)
        for variant, (_proc, port) in servers.items():
            status, body = get(port, "/fanout")
            assert status == 200, (variant, status, body)
        workers = {variant: worker_pid(proc.pid) for variant, (proc, _port) in servers.items()}
        tool = "wrk" if shutil.which("wrk") else "gevent client"
        rows = []
        notes = []
        for section, path, goal in (
            ("3. gunicorn -k gevent, hello world", "/", 0.97),
            ("4. gunicorn -k gevent, fan-out 10 greenlets/req", "/fanout", 0.95),
        ):
            for _variant, (_proc, port) in servers.items():
                load(port, path, WARMUP)
            rates: dict[str, list[float]] = {"without": [], "with": []}
            cpu: dict[str, list[float]] = {"without": [], "with": []}
            errors = 0
            for i in range(ROUNDS):
                order = ["without", "with"] if i % 2 == 0 else ["with", "without"]
                for variant in order:
                    before = cpu_ns(workers[variant])
                    rate, done, errs = load(servers[variant][1], path, DURATION)
                    cpu[variant].append((cpu_ns(workers[variant]) - before) / max(done, 1) / 1e3)
                    rates[variant].append(rate)
                    errors += errs
            med = {v: median(r) for v, r in rates.items()}
            cpu_med = {v: median(c) for v, c in cpu.items()}
            ratio = med["with"] / med["without"]
            rows.append(row(section, "without ReqCtx (median)", med["without"], "req/s"))
            rows.append(
                compared(
                    section,
                    "with ReqCtx (median)",
                    med["with"],
                    "req/s",
                    "without",
                    med["without"],
                    goal=f">= {goal}",
                    met=ratio >= goal,
                )
            )
            rows.append(row(section, "worker CPU/request, without (median)", cpu_med["without"], "us/req"))
            cpu_with, cpu_without = cpu_med["with"], cpu_med["without"]
            rows.append(
                compared(
                    section, "worker CPU/request, with (median)", cpu_with, "us/req", "without", cpu_without
                )
            )
            rows.append(
                row(
                    section,
                    "=> CPU-bound req/s ratio (without CPU / with CPU)",
                    cpu_med["without"] / cpu_med["with"],
                    "x",
                    goal=f">= {goal}",
                    met=cpu_med["without"] / cpu_med["with"] >= goal,
                )
            )
            paired = [w / wo for w, wo in zip(rates["with"], rates["without"], strict=True)]
            notes.append(
                f"{path}: {tool} -t1 -c{CONNECTIONS}, {ROUNDS} rounds x {DURATION} s, alternating; "
                f"without {[round(r) for r in rates['without']]}, with {[round(r) for r in rates['with']]} "
                f"req/s; per-round ratios {[round(p, 3) for p in paired]}; errors {errors}"
            )
        # After the load drains, every unit must be gone from the ReqCtx server.
        time.sleep(0.5)
        status, body = get(servers["with"][1], "/stats")
        server_stats = json.loads(body)
        server_stats["live"] -= 1  # the /stats request itself holds a context while it runs
        notes.append(
            "ReqCtx server after the runs (live excludes the /stats request): "
            + ", ".join(f"{k}={v}" for k, v in server_stats.items() if k != "rss")
            + f", RSS {server_stats['rss'] / 2**20:.1f} MiB (without: "
            + f"{json.loads(get(servers['without'][1], '/stats')[1])['rss'] / 2**20:.1f} MiB)"
        )
        emit(rows, notes)
    finally:
        for proc, _port in servers.values():
            stop_server(proc)


if __name__ == "__main__":
    if "--client" in sys.argv:
        i = sys.argv.index("--client")
        gevent_client(int(sys.argv[i + 1]), sys.argv[i + 2], float(sys.argv[i + 3]))
    else:
        main()
