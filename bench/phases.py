"""What every phase shares (the context, wiping Redis between runs) and the accept phase.

The other phases are :mod:`bench.drain` and :mod:`bench.e2e`. Between runs Redis is wiped
except Celery's queue bindings (``_kombu.binding.*``): kombu declares a queue once per process,
so a running publisher would otherwise route into a table that no longer names the queue.
Every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import payload
from bench.load import Generator, LoadResult
from bench.machine import cpu_seconds
from bench.plan import Plan
from bench.servers import Stack

MAILGATE_QUEUE = "mailgate"
NAIVE_QUEUE = "celery"


@dataclass
class Context:
    """What every phase needs: the running parts and the plan."""

    plan: Plan
    stack: Stack
    redis: redis.Redis
    sinks: dict[str, Any]
    """``local``: Postfix's smtp-sink (bench.postfix_sink) or, without it, bench.sink;
    ``relay``: bench.slow_sink, 20 ms before each reply. Each has ``smtp_port``, ``count()``,
    ``unique()``, ``times()`` and ``reset()``."""
    generator: Generator
    gateway_env: dict[str, str]
    naive_env: dict[str, str]
    voicemail: Path
    """The WAV the voicemail shape attaches (bench.payload), under the gateway's attachment
    root."""

    def sink_env(self, where: str) -> dict[str, str]:
        """The gateway's environment with the worker pointed at sink ``where``."""
        port = self.sinks[where].smtp_port
        return {**self.gateway_env, "MAILGATE_SMTP_URL": f"smtp://127.0.0.1:{port}"}

    def naive_sink_env(self, where: str) -> dict[str, str]:
        return {**self.naive_env, "NAIVE_SMTP_PORT": str(self.sinks[where].smtp_port)}


@dataclass(frozen=True)
class AcceptRun:
    """One closed-loop run against one endpoint."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    recorded: int | None
    """E-mails the server really queued during the run (None for the bare endpoint)."""
    cpu_ms: float | None = None
    """CPU time (user + system) of the server's processes per request, in ms: unlike req/s,
    hardly moved by whatever else runs on the machine."""


def settle(client: redis.Redis, quiet: float = 0.5, timeout: float = 15.0) -> None:
    """Wait until Redis's key count stops moving: requests in flight when a load ended land."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        size = int(client.dbsize())
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def wipe(client: redis.Redis) -> None:
    """Once in-flight requests have landed, delete every key but Celery's queue bindings."""
    settle(client)
    keys = [k for k in client.scan_iter(count=2000) if not str(k).startswith("_kombu.binding.")]
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


ACCEPT_SHAPES = ("accented", "html", "voicemail")
"""The shapes whose accept is measured as well as the plain GET's (issue 23): each POSTs its
form, as real clients send a receipt with accented text, an HTML receipt and a voicemail
attached by path."""


def api_url(base: str) -> str:
    return f"{base}/api?{payload.query()}"


def accept(
    ctx: Context,
    base: str,
    recorded: Callable[[], int] | None,
    server: int | None = None,
    shape: str | None = None,
) -> list[AcceptRun]:
    """Closed-loop SendEmail load at ``connections``, after a warm-up, ``runs`` times: the
    plain request's GET, or with ``shape`` that shape's form POSTed (:data:`ACCEPT_SHAPES`).

    ``server``: the server's process id, to measure its CPU time per request."""
    url = api_url(base) if shape is None else f"{base}/api"
    runs: list[AcceptRun] = []

    def load_for(seconds: float) -> LoadResult:
        return ctx.generator.run(url, ctx.plan.connections, seconds, shape, ctx.voicemail)

    for _ in range(ctx.plan.runs):
        load_for(ctx.plan.warmup_seconds)
        wipe(ctx.redis)
        cpu_before = cpu_seconds(server) if server else 0.0
        load = load_for(ctx.plan.accept_seconds)
        cpu_ms = (cpu_seconds(server) - cpu_before) * 1000 / load.requests if server else None
        settle(ctx.redis)
        queued = recorded() if recorded else None
        if load.ok is not None:  # the Python client read every <Code>
            errors = load.errors + load.requests - load.ok
        else:  # wrk: answers that queued nothing (a few may still be in flight at the end)
            errors = load.errors + max(0, load.requests - (queued or load.requests))
        runs.append(AcceptRun(load.rps, load.p50_ms, load.p99_ms, load.requests, errors, queued,
                              cpu_ms if load.requests else None))  # fmt: skip
        wipe(ctx.redis)
    return runs
