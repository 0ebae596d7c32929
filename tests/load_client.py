"""A small concurrent HTTP/1.1 load client for the server tests (asyncio, raw sockets).

Run as a subprocess with the plain interpreter (never monkey-patched, whichever tox env
runs pytest): reads a JSON spec on stdin, prints a JSON report on stdout.  Loopback only;
the number of requests and the total time are both bounded.

Spec keys: ``host`` (must be 127.0.0.1), ``port``, ``path``, ``requests``, ``concurrency``,
``keepalive`` (reuse each worker's connection; default true), ``without_id_every`` (every
k-th request sends no ``X-Request-ID``; 0 = all send one), ``traceparent_without_id``
(those send a fresh W3C ``traceparent`` instead; default false), ``id_prefix``, ``detail``
(return every response; else only status counts and errors), ``timeout`` (total seconds).

Each of ``concurrency`` workers takes the next request number until ``requests`` are done,
so that many requests are in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 1_000


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def send(self, path: str, headers: dict[str, str], keepalive: bool) -> None:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append("Connection: keep-alive" if keepalive else "Connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def get(self, path: str, headers: dict[str, str], keepalive: bool) -> tuple[int, dict, bytes]:
        await self.ensure()
        self.send(path, headers, keepalive)
        await self.writer.drain()
        return await self.receive(keepalive)

    async def receive(self, keepalive: bool) -> tuple[int, dict, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        response_headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
        if "content-length" in response_headers:
            body = await self.reader.readexactly(int(response_headers["content-length"]))
        elif response_headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.read()
            response_headers["connection"] = "close"
        if not keepalive or response_headers.get("connection", "").lower() == "close":
            self.close()
        return status, response_headers, body

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, path = spec["host"], int(spec["port"]), spec["path"]
    if host != "127.0.0.1":
        raise SystemExit("load_client only talks to 127.0.0.1")
    total = min(int(spec["requests"]), MAX_REQUESTS)
    concurrency = max(1, min(int(spec.get("concurrency", 50)), MAX_CONCURRENCY, total))
    keepalive = bool(spec.get("keepalive", True))
    without_every = int(spec.get("without_id_every", 0))
    traceparent_without_id = bool(spec.get("traceparent_without_id", False))
    prefix = spec.get("id_prefix") or f"lc-{uuid.uuid4().hex[:8]}"
    detail = bool(spec.get("detail", True))

    next_index = iter(range(total)).__next__
    results: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    max_in_flight = 0
    in_flight = 0
    start = asyncio.Event()

    async def worker() -> None:
        nonlocal in_flight, max_in_flight
        conn = Connection(host, port)
        await start.wait()
        try:
            while True:
                try:
                    i = next_index()
                except StopIteration:
                    return
                sent = None if without_every and i % without_every == 0 else f"{prefix}-{i}"
                headers = {"X-Request-ID": sent} if sent is not None else {}
                if sent is None and traceparent_without_id:
                    headers["traceparent"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
                try:
                    status, response_headers, body = await conn.get(path, headers, keepalive)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    conn.close()
                    errors.append(f"request {i}: {exc!r}")
                    continue
                finally:
                    in_flight -= 1
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if detail:
                    try:
                        parsed: Any = json.loads(body)
                    except ValueError:
                        parsed = body.decode("utf-8", "replace")
                    results.append(
                        {
                            "i": i,
                            "sent": sent,
                            "traceparent": headers.get("traceparent"),
                            "status": status,
                            "echoed": response_headers.get("x-request-id"),
                            "body": parsed,
                        }
                    )
        finally:
            conn.close()

    t0 = time.monotonic()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0)
    start.set()
    done, pending = await asyncio.wait(tasks, timeout=float(spec.get("timeout", 90)))
    for task in pending:
        task.cancel()
    if pending:
        errors.append(f"timed out: {len(pending)} workers still running")
    for task in done:
        if task.exception() is not None:
            errors.append(f"worker crashed: {task.exception()!r}")
    return {
        "requests": total,
        "concurrency": concurrency,
        "max_in_flight": max_in_flight,
        "elapsed": time.monotonic() - t0,
        "statuses": statuses,
        "errors": errors[:50],
        "error_count": len(errors),
        "results": sorted(results, key=lambda r: r["i"]),
    }


def main() -> None:
    spec = json.load(sys.stdin)
    report = asyncio.run(run(spec))
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
