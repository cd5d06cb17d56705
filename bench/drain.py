"""Drain: a backlog already queued, then the workers; mails per second to the sink's 250.

mailgate's backlog goes through the real accept path (HTTP, with no worker running); the naive
baseline's is published with ``apply_async``; the smtplib ceiling has no queue at all. Each
drain runs against one of the context's sinks: ``local`` (Postfix's smtp-sink on loopback) or
``relay`` (bench.slow_sink: 20 ms before each reply to MAIL, RCPT and DATA), and on one kind
of e-mail (bench.payload): the mix of the five shapes, or one shape alone. Besides the rate,
a run notes the CPU time (user + system) the worker's whole process tree spent from the first
250 to the last, per e-mail: a figure the other load on the machine moves far less.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import payload
from bench.load import run_python
from bench.machine import rss_mb
from bench.phases import MAILGATE_QUEUE, NAIVE_QUEUE, Context, api_url, wipe
from bench.servers import (
    BenchError,
    Process,
    mailgate_worker_args,
    naive_worker_args,
    wait_for,
)
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
    cpu_ms_per_mail: float = 0.0
    """CPU time of the worker's process tree from the first to the last 250, per e-mail."""
    rss_max_mb: float = 0.0
    """The largest single worker process (the goal: under 150 MiB each)."""


def backlog(ctx: Context, where: str, kind: str) -> int:
    """E-mails queued before a drain: the relay's backlog, the full one for the mix and the
    plain shape, a smaller one for each other shape alone."""
    if where == "relay":
        return ctx.plan.relay_backlog
    return ctx.plan.backlog if kind in (payload.MIX, "plain") else ctx.plan.shape_backlog


def fill_mailgate(ctx: Context, base: str, count: int, kind: str = payload.MIX) -> None:
    """Queue ``count`` e-mails of ``kind`` through the real accept path, with no worker
    running."""
    for _ in range(3):
        missing = count - int(ctx.redis.llen(MAILGATE_QUEUE))
        if missing <= 0:
            break
        run_python(
            api_url(base),
            ctx.plan.connections,
            600,
            count=missing,
            shape=kind,
            voicemail=ctx.voicemail,
        )
    queued = int(ctx.redis.llen(MAILGATE_QUEUE))
    if queued != count:
        raise BenchError(f"backlog: wanted {count} queued e-mails, the queue holds {queued}")


def tree_cpu(process: Process) -> float:
    """User + system CPU seconds of a process and its descendants (0 for those gone)."""
    try:
        leader = psutil.Process(process.pid)
        members = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def wait_drained(ctx: Context, sink: Any, count: int, workers: list[Process]) -> float:
    """Wait until ``sink`` has seen ``count`` mails; fail on a stall or a dead worker. The
    workers' CPU seconds from the first 250 to the last."""
    last, moved, cpu_start = -1, time.monotonic(), None
    deadline = time.monotonic() + max(600, count / 10)  # 10 mails/s: something is broken
    while (seen := sink.unique()) < count:
        for worker in workers:
            worker.check_alive()
        if cpu_start is None and seen > 0:
            cpu_start = sum(tree_cpu(w) for w in workers)
        if seen != last:
            last, moved = seen, time.monotonic()
        elif time.monotonic() - moved > ctx.plan.stall_seconds:
            raise BenchError(f"drain stalled at {seen} of {count} mails")
        if time.monotonic() > deadline:
            raise BenchError(f"drain too slow: {seen} of {count} mails")
        time.sleep(0.05)
    return sum(tree_cpu(w) for w in workers) - (cpu_start or 0.0)


def _drain_run(
    ctx: Context, sink: Any, count: int, workers: list[Process], launched: float
) -> DrainRun:
    try:
        cpu = wait_drained(ctx, sink, count, workers)
        memory = [size for w in workers for size in rss_mb(w.pid)]
    finally:
        for worker in workers:
            ctx.stack.stop(worker)
    seen = sink.count()
    seconds = seen["last"] - seen["first"]
    return DrainRun(
        rate=(count - 1) / seconds if seconds > 0 else 0.0,
        mails=count,
        seconds=seconds,
        startup_s=seen["first"] - launched,
        duplicates=int(seen["total"] - seen["unique"]),
        rss_mb=memory,
        cpu_ms_per_mail=cpu / count * 1000,
        rss_max_mb=max(memory, default=0.0),
    )


def drain_mailgate(
    ctx: Context,
    base: str,
    where: str = "local",
    processes: int | None = None,
    kind: str = payload.MIX,
) -> list[DrainRun]:
    """A backlog of ``kind`` through the API, then ``mailgate worker`` as the Procfile starts
    it (with ``processes``: that many worker processes instead of one per core)."""
    sink, env = ctx.sinks[where], ctx.sink_env(where)
    count = backlog(ctx, where, kind)
    if processes is not None:
        env = {**env, "MAILGATE_WORKER_PROCESSES": str(processes)}
    runs = []
    for _ in range(ctx.plan.runs):
        wipe(ctx.redis)
        fill_mailgate(ctx, base, count, kind)
        sink.reset()
        launched = time.time()
        worker = ctx.stack.start("worker", mailgate_worker_args(), env)
        runs.append(_drain_run(ctx, sink, count, [worker], launched))
        if int(ctx.redis.zcard(DUE_KEY)):  # every Sent e-mail leaves the due set
            time.sleep(2)
            pending = int(ctx.redis.zcard(DUE_KEY))
            if pending:
                raise BenchError(f"{pending} e-mails reached the sink but are not marked Sent")
    wipe(ctx.redis)
    return runs


def drain_naive(
    ctx: Context, broker_url: str, where: str = "local", kind: str = payload.MIX
) -> list[DrainRun]:
    """The same backlog as naive tasks published with apply_async (the mail in the task's
    arguments, the WAV by path), then a default worker."""
    from bench.baselines import naive_celery

    sink, env = ctx.sinks[where], ctx.naive_sink_env(where)
    count = backlog(ctx, where, kind)
    shapes = payload.shapes(kind)
    naive_celery.app.conf.broker_url = broker_url
    task: Any = naive_celery.send_mail
    runs = []
    try:
        for _ in range(ctx.plan.runs):
            wipe(ctx.redis)
            for n in range(count):
                task.apply_async(
                    args=naive_celery.task_args(
                        str(uuid.uuid4()), shapes[n % len(shapes)], ctx.voicemail
                    )
                )
            queued = int(ctx.redis.llen(NAIVE_QUEUE))
            if queued != count:
                raise BenchError(f"naive backlog: {queued} of {count} queued")
            sink.reset()
            launched = time.time()
            worker = ctx.stack.start("naive-worker", naive_worker_args(), env)
            runs.append(_drain_run(ctx, sink, count, [worker], launched))
    finally:
        naive_celery.app.close()
    wipe(ctx.redis)
    return runs


def ceiling(ctx: Context, kind: str = payload.MIX) -> list[DrainRun]:
    """smtplib over one connection, in a process of its own, the messages of ``kind``."""
    runs = []
    for _ in range(ctx.plan.runs):
        ctx.sinks["local"].reset()
        args = [
            sys.executable,
            "-m",
            "bench.baselines.ceiling",
            "--port",
            str(ctx.sinks["local"].smtp_port),
            "--count",
            str(ctx.plan.backlog),
            "--shape",
            kind,
            "--voicemail",
            str(ctx.voicemail),
        ]
        launched = time.time()
        done = subprocess.run(args, capture_output=True, text=True, timeout=900,
                              env=ctx.stack.env, cwd=ctx.stack.workdir)  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"smtplib ceiling failed: {done.stderr[-2000:]}")
        sink = ctx.sinks["local"]
        with contextlib.suppress(BenchError):  # smtp-sink's count reaches its log a bit later
            wait_for(lambda: sink.unique() >= ctx.plan.backlog, 5, "the sink's count")  # noqa: B023
        seen = sink.count()
        if seen["unique"] != ctx.plan.backlog:
            raise BenchError(f"smtplib ceiling: the sink saw {seen['unique']} mails")
        seconds = seen["last"] - seen["first"]
        runs.append(DrainRun((ctx.plan.backlog - 1) / seconds, ctx.plan.backlog, seconds,
                             seen["first"] - launched, 0, []))  # fmt: skip
    return runs
