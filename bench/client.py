"""The Python load generator, used when wrk is missing (and to fill backlogs, and for paced load).

``python -m bench.client URL --connections 32 (--seconds S | --count N) [--rate R]`` keeps
``connections`` HTTP/1.1 keep-alive connections busy with the same GET request and prints one
JSON line: requests, ok (the body holds ``<Code>200</Code>``), errors, wall-clock start and end,
and latency percentiles in milliseconds. It runs in its own process (asyncio, one thread), so
its GIL is not the server's nor the benchmark's. With ``--rate`` the requests follow a fixed
schedule (at most ``connections`` in flight) instead of back-to-back. With ``--shape`` (a
shape of bench.payload, or ``mix``) it POSTs that shape's SendEmail form to URL's path
instead, the mix's shapes in turn; ``--voicemail`` is the WAV the voicemail shape attaches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import payload

OK_MARK = b"<Code>200</Code>"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class Tally:
    """What every connection adds to, and the shared request budget or schedule."""

    stop_at: float
    budget: int | None
    interval: float | None
    next_slot: float = 0.0
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    """Requests taken so far: the next one is ``requests[sent % len(requests)]``."""

    def take(self) -> float | None:
        """The time the next request may start, or None when the run is over."""
        now = time.perf_counter()
        if now >= self.stop_at:
            return None
        if self.budget is not None:
            if self.budget <= 0:
                return None
            self.budget -= 1
        if self.interval is None:
            return now
        slot, self.next_slot = self.next_slot, max(self.next_slot, now - 1) + self.interval
        return slot


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[bytes, bool]:
    """One request and its response body; True when the server will close the connection."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    start = lower.find(b"content-length:")
    if start < 0:
        raise ConnectionError("response without Content-Length")
    length = int(lower[start + 15 : lower.find(b"\r\n", start)])
    body = await reader.readexactly(length)
    return body, b"connection: close" in lower


async def _connection(host: str, port: int, requests: list[bytes], tally: Tally) -> None:
    writer: asyncio.StreamWriter | None = None
    while (slot := tally.take()) is not None:
        request = requests[tally.sent % len(requests)]
        tally.sent += 1
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            body, closing = await _exchange(reader, writer, request)
            tally.latencies.append(time.perf_counter() - started)
            if OK_MARK in body:
                tally.ok += 1
            else:
                tally.errors += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.errors += 1
            closing = True
            await asyncio.sleep(0.01)
        if closing and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def build_requests(url: str, shape: str | None, voicemail: Path | None) -> list[bytes]:
    """The raw requests a connection sends in turn: the GET of ``url``, or one POST per
    shape of ``shape`` to its path."""
    parts = urlsplit(url)
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 80}"
    if shape is None:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return [f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()]
    requests = []
    for one in payload.shapes(shape):
        body = payload.form(one, voicemail).encode()
        head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def drive(
    url: str,
    connections: int,
    seconds: float,
    count: int | None,
    rate: float | None,
    shape: str | None = None,
    voicemail: Path | None = None,
) -> dict[str, object]:
    """Run the load; the JSON-ready summary."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = build_requests(url, shape, voicemail)
    begin = time.perf_counter()
    tally = Tally(begin + seconds, count, 1 / rate if rate else None, next_slot=begin)
    started_at = time.time()
    await asyncio.gather(*(_connection(host, port, requests, tally) for _ in range(connections)))
    elapsed = time.perf_counter() - begin
    ordered = sorted(tally.latencies)
    return {
        "requests": len(ordered),
        "ok": tally.ok,
        "errors": tally.errors,
        "seconds": elapsed,
        "started_at": started_at,
        "ended_at": started_at + elapsed,
        "p50_ms": percentile(ordered, 50) * 1000,
        "p90_ms": percentile(ordered, 90) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="upper bound in any mode")
    parser.add_argument("--count", type=int, help="stop after this many requests")
    parser.add_argument("--rate", type=float, help="requests per second, on a fixed schedule")
    parser.add_argument("--shape", choices=payload.KINDS, help="POST this shape's SendEmail")
    parser.add_argument("--voicemail", type=Path, help="the WAV the voicemail shape attaches")
    args = parser.parse_args()
    summary = asyncio.run(
        drive(
            args.url,
            args.connections,
            args.seconds,
            args.count,
            args.rate,
            args.shape,
            args.voicemail,
        )
    )
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
