"""Drain: a backlog already queued, then the workers; mails per second to the sink's 250.

mailgate's backlog goes through the real accept path (HTTP, with no worker running); the naive
baseline's is published with ``apply_async``; the smtplib ceiling has no queue at all.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench import payload
from bench.load import run_python
from bench.machine import rss_mb
from bench.phases import MAILGATE_QUEUE, NAIVE_QUEUE, Context, api_url, wipe
from bench.servers import BenchError, Process, mailgate_worker_args, naive_worker_args
from mailgate.status import DUE_KEY


@dataclass(frozen=True)
class DrainRun:
    """One drain of the whole backlog (or one smtplib pass over it)."""

    rate: float
    """Mails per second between the first and the last 250 at the sink."""
    mails: int
    seconds: float
    startup_s: float
    """From starting the worker(s) to the first 250."""
    duplicates: int
    rss_mb: list[float]
    """Resident memory of each worker process right after the drain (leader first)."""


def fill_mailgate(ctx: Context, base: str, count: int) -> None:
    """Queue ``count`` e-mails through the real accept path, with no worker running."""
    for _ in range(3):
        missing = count - int(ctx.redis.llen(MAILGATE_QUEUE))
        if missing <= 0:
            break
        run_python(api_url(base), ctx.plan.connections, 600, count=missing)
    queued = int(ctx.redis.llen(MAILGATE_QUEUE))
    if queued != count:
        raise BenchError(f"backlog: wanted {count} queued e-mails, the queue holds {queued}")


def wait_drained(ctx: Context, count: int, workers: list[Process]) -> None:
    """Wait until the sink has seen ``count`` distinct mails; fail on a stall or a dead worker."""
    last, moved = -1, time.monotonic()
    deadline = time.monotonic() + max(600, count / 10)  # 10 mails/s: something is broken
    while (seen := ctx.sink.unique()) < count:
        for worker in workers:
            worker.check_alive()
        if seen != last:
            last, moved = seen, time.monotonic()
        elif time.monotonic() - moved > ctx.plan.stall_seconds:
            raise BenchError(f"drain stalled at {seen} of {count} mails")
        if time.monotonic() > deadline:
            raise BenchError(f"drain too slow: {seen} of {count} mails")
        time.sleep(0.2)


def _drain_run(ctx: Context, count: int, workers: list[Process], launched: float) -> DrainRun:
    try:
        wait_drained(ctx, count, workers)
        memory = [size for w in workers for size in rss_mb(w.pid)]
    finally:
        for worker in workers:
            ctx.stack.stop(worker)
    seen = ctx.sink.count()
    seconds = seen["last"] - seen["first"]
    return DrainRun(
        rate=(count - 1) / seconds if seconds > 0 else 0.0,
        mails=count,
        seconds=seconds,
        startup_s=seen["first"] - launched,
        duplicates=int(seen["total"] - seen["unique"]),
        rss_mb=memory,
    )


def drain_mailgate(ctx: Context, base: str, processes: int) -> list[DrainRun]:
    """A backlog through the API, then ``processes`` workers started as the Procfile starts them."""
    runs = []
    for _ in range(ctx.plan.runs):
        wipe(ctx.redis)
        fill_mailgate(ctx, base, ctx.plan.backlog)
        ctx.sink.reset()
        launched = time.time()
        workers = [
            ctx.stack.start(
                f"worker-{i}", mailgate_worker_args(i, ctx.plan.concurrency), ctx.gateway_env
            )
            for i in range(1, processes + 1)
        ]
        runs.append(_drain_run(ctx, ctx.plan.backlog, workers, launched))
        if int(ctx.redis.zcard(DUE_KEY)):  # every Sent e-mail leaves the due set
            time.sleep(2)
            pending = int(ctx.redis.zcard(DUE_KEY))
            if pending:
                raise BenchError(f"{pending} e-mails reached the sink but are not marked Sent")
    wipe(ctx.redis)
    return runs


def drain_naive(ctx: Context, broker_url: str) -> list[DrainRun]:
    """The same backlog as naive tasks published with apply_async, then a default worker."""
    from bench.baselines import naive_celery

    naive_celery.app.conf.broker_url = broker_url
    task: Any = naive_celery.send_mail
    runs = []
    try:
        for _ in range(ctx.plan.runs):
            wipe(ctx.redis)
            for _ in range(ctx.plan.backlog):
                task.apply_async(args=[str(uuid.uuid4()), payload.RECIPIENT, payload.SUBJECT,
                                       payload.BODY])  # fmt: skip
            queued = int(ctx.redis.llen(NAIVE_QUEUE))
            if queued != ctx.plan.backlog:
                raise BenchError(f"naive backlog: {queued} of {ctx.plan.backlog} queued")
            ctx.sink.reset()
            launched = time.time()
            worker = ctx.stack.start("naive-worker", naive_worker_args(), ctx.naive_env)
            runs.append(_drain_run(ctx, ctx.plan.backlog, [worker], launched))
    finally:
        naive_celery.app.close()
    wipe(ctx.redis)
    return runs


def ceiling(ctx: Context) -> list[DrainRun]:
    """smtplib over one connection, in a process of its own."""
    runs = []
    for _ in range(ctx.plan.runs):
        ctx.sink.reset()
        args = [sys.executable, "-m", "bench.baselines.ceiling", "--port",
                str(ctx.sink.smtp_port), "--count", str(ctx.plan.backlog)]  # fmt: skip
        launched = time.time()
        done = subprocess.run(args, capture_output=True, text=True, timeout=900,
                              env=ctx.stack.env, cwd=ctx.stack.workdir)  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"smtplib ceiling failed: {done.stderr[-2000:]}")
        seen = ctx.sink.count()
        if seen["unique"] != ctx.plan.backlog:
            raise BenchError(f"smtplib ceiling: the sink saw {seen['unique']} mails")
        seconds = seen["last"] - seen["first"]
        runs.append(DrainRun((ctx.plan.backlog - 1) / seconds, ctx.plan.backlog, seconds,
                             seen["first"] - launched, 0, []))  # fmt: skip
    return runs
