"""End to end: sustained SendEmail load with a worker delivering at the same time.

The accept time is the status record's ``created_at`` (the API's clock), the 250 time its
``sent_at`` (the worker's clock, taken right after the relay's 250; a few hundred microseconds
late at most): both ``time.time()`` on this machine, and no sink has to note Message-IDs.
The load is paced (``rate``) or a closed loop, of the mix of bench.payload's shapes (POSTed
by bench.client) unless told otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from bench import payload
from bench.client import percentile
from bench.load import LoadResult, run_python
from bench.phases import Context, api_url, wipe
from bench.servers import BenchError, Process, mailgate_worker_args
from mailgate.status import DUE_KEY


@dataclass(frozen=True)
class E2ERun:
    """One sustained-load run; rates are per second of the load window."""

    target_rate: float | None
    accepted_per_s: float
    delivered_per_s: float
    """250s at the sink inside the load window, per second of it."""
    accept_p50_ms: float
    accept_p99_ms: float
    p50_ms: float
    """Accept (the status record's created_at) to the sink's 250."""
    p99_ms: float
    max_ms: float
    backlog_at_end: int
    """E-mails not yet final when the load stopped (those in flight included)."""
    cleared_after_s: float
    """From the end of the load until no e-mail was pending."""
    undelivered: int


def count_records(client: redis.Redis) -> int:
    """Status records in Redis (one per accepted e-mail)."""
    found = client.scan_iter(match="mailgate:email:*", count=2000)
    return sum(1 for key in found if str(key).count(":") == 2)  # not :history and the like


def e2e(ctx: Context, base: str, rate: float | None, kind: str = payload.MIX) -> list[E2ERun]:
    """Sustained SendEmail load of ``kind`` with one worker delivering, ``runs`` times."""
    url, runs = api_url(base), []
    worker = ctx.stack.start("worker-e2e", mailgate_worker_args(), ctx.sink_env("local"))
    worker.wait_output(r"ready\.", 60)
    try:
        for _ in range(ctx.plan.runs):
            run_python(
                url,
                ctx.plan.connections,
                ctx.plan.warmup_seconds,
                rate=rate,
                shape=kind,
                voicemail=ctx.voicemail,
            )
            _wait_final(ctx, worker, 120)
            wipe(ctx.redis)
            runs.append(_e2e_run(ctx, url, rate, worker, kind))
    finally:
        ctx.stack.stop(worker)
    wipe(ctx.redis)
    return runs


def _wait_final(ctx: Context, worker: Process, timeout: float) -> None:
    """Wait until no e-mail is pending (the due set is empty), with stall detection."""
    deadline, last, moved = time.monotonic() + timeout, -1, time.monotonic()
    while (pending := int(ctx.redis.zcard(DUE_KEY))) > 0:
        worker.check_alive()
        if pending != last:
            last, moved = pending, time.monotonic()
        if time.monotonic() - moved > ctx.plan.stall_seconds or time.monotonic() > deadline:
            raise BenchError(f"{pending} e-mails still pending after the load")
        time.sleep(0.05)


def _e2e_run(ctx: Context, url: str, rate: float | None, worker: Process, kind: str) -> E2ERun:
    seconds, connections = ctx.plan.e2e_seconds, ctx.plan.connections
    load: LoadResult = run_python(
        url, connections, seconds, rate=rate, shape=kind, voicemail=ctx.voicemail
    )
    backlog = int(ctx.redis.zcard(DUE_KEY))
    _wait_final(ctx, worker, 5 * seconds + 60)
    cleared = max(0.0, time.time() - load.ended_at) if backlog else 0.0
    window = load.ended_at - load.started_at
    keys = [k for k in ctx.redis.scan_iter(match="mailgate:email:*", count=2000)
            if str(k).count(":") == 2]  # fmt: skip
    pipe = ctx.redis.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "created_at", "sent_at")
    stamps = [(float(c), float(t)) for c, t in pipe.execute() if c and t]
    latencies = sorted(sent - created for created, sent in stamps)
    records = len(keys)
    inside = sum(1 for _, sent in stamps if load.started_at <= sent <= load.ended_at)
    return E2ERun(
        target_rate=rate,
        accepted_per_s=records / window,
        delivered_per_s=inside / window,
        accept_p50_ms=load.p50_ms,
        accept_p99_ms=load.p99_ms,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        backlog_at_end=backlog,
        cleared_after_s=cleared,
        undelivered=records - len(latencies),
    )
