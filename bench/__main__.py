"""``python -m bench [--quick]``: run the whole benchmark, write the results, print the table.

Order: Redis and the sinks (Postfix's smtp-sink on loopback, a relay that waits 20 ms before
each reply); the bare Flask and naive Celery endpoints (accept, the plain request); the
gateway's API (accept); the drain of a backlog of the mix of shapes (bench.payload) to the
local sink by ``mailgate worker`` as shipped and by the naive Celery worker, back to back (and
with --workers, by other process counts); the same two for each shape alone; the mix and the
plain shape against the 20 ms relay; the end-to-end load of the mix at 70 % of its local drain
rate; the smtplib ceiling on the mix. Every process started is stopped on the way out,
including on Ctrl-C or SIGTERM. Results go to ``bench/results/<UTC stamp>.json``,
``latest.json``, ``latest.md`` and ``chart.png`` (``bench/results/quick/`` for ``--quick``,
which git ignores); logs of a failed or ``--keep`` run stay in ``<results>/tmp/<stamp>/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import drain, e2e, payload, phases
from bench.chart import draw
from bench.load import Generator
from bench.machine import describe
from bench.parts import Gateway, start_parts
from bench.plan import Plan
from bench.report import Results, figure, judge, median, summarise
from bench.servers import ROOT, BenchError, Stack, child_env
from bench.table import markdown

RESULTS = ROOT / "bench" / "results"
"""Full runs write here (for bench/README.md); --quick runs write to its quick/ folder."""
_BEGIN = time.monotonic()
E2E_SHARE = 0.7
"""The end-to-end load, as a share of the measured local drain rate (issue 12: 70 %)."""


def say(text: str) -> None:
    print(f"[{time.monotonic() - _BEGIN:6.0f}s] {text}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 run each, backlog 2,000 (500 per shape), 10 s end to end",
    )
    parser.add_argument("--runs", type=int, help="repetitions of each figure (full: 3)")
    parser.add_argument("--backlog", type=int, help="e-mails queued before a drain (full: 20,000)")
    parser.add_argument(
        "--shape-backlog", type=int, help="the same for each shape alone but plain (full: 5,000)"
    )
    parser.add_argument("--relay-backlog", type=int, help="the same for the 20 ms relay (1,500)")
    parser.add_argument("--e2e-seconds", type=float, help="end-to-end load time (full: 60)")
    parser.add_argument("--accept-seconds", type=float, help="each accept run (full: 20)")
    parser.add_argument("--connections", type=int, help="HTTP connections (default 32)")
    parser.add_argument(
        "--accept-only",
        action="store_true",
        help="only the accept figures: the baselines, mailgate's GET and each shape's POST",
    )
    parser.add_argument(
        "--workers",
        default="",
        help="extra drains with this many worker processes, e.g. 1,2,4 (default: none; the "
        "main drain runs `mailgate worker` as shipped, one process per core)",
    )
    parser.add_argument("--e2e-rate", help="auto (0.7x the drain rate, default), max, or req/s")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="accept load generator: wrk if installed (auto), or the Python one",
    )
    parser.add_argument(
        "--results", type=Path, help="where results go (bench/results, or bench/results/quick)"
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and Redis data")
    return parser.parse_args(argv)  # fmt: skip


def make_plan(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan.full()
    workers = tuple(sorted({int(w) for w in args.workers.split(",") if w.strip()}))
    if workers and min(workers) < 1:
        raise SystemExit("--workers: give process counts such as 1,2,4")
    changes: dict[str, Any] = {"workers": workers}
    for name in (
        "runs",
        "backlog",
        "shape_backlog",
        "relay_backlog",
        "e2e_seconds",
        "accept_seconds",
        "connections",
        "e2e_rate",
        "accept_only",
    ):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return replace(plan, **changes)


def e2e_rate(plan: Plan, results: Results) -> float | None:
    """The offered rate of the end-to-end load; None for a closed loop."""
    if plan.e2e_rate == "max":
        return None
    if plan.e2e_rate == "auto":
        drained = median(results, "drain", "mailgate", "rate")
        return E2E_SHARE * drained if drained else None
    return float(plan.e2e_rate)


def measure(ctx: phases.Context, gateway: Gateway, results: Results) -> None:
    """Every figure, in the order the module docstring gives."""
    plan, accepted, drained = ctx.plan, results["accept"], results["drain"]
    relay = results["relay"]
    for name in ("bare_flask", "naive_celery"):
        say(f"accept: {name}")
        server, base = gateway.start_baseline(name)
        queued = gateway.naive_queued if name == "naive_celery" else None
        accepted[name] = summarise(phases.accept(ctx, base, queued, server.pid))
        ctx.stack.stop(server)
        figures = accepted[name]
        _say_accept(figures)
    say("accept: mailgate")
    server, base = gateway.start_api()
    accepted["mailgate"] = summarise(phases.accept(ctx, base, gateway.queued, server.pid))
    results["memory"] = {"api": figure([sum(gateway.api_rss(server))])}
    _say_accept(accepted["mailgate"])
    for shape in phases.ACCEPT_SHAPES:
        say(f"accept: mailgate, {shape} form POSTed")
        runs = phases.accept(ctx, base, gateway.queued, server.pid, shape)
        results["accept_shapes"][shape] = summarise(runs)
        _say_accept(results["accept_shapes"][shape])
    if plan.accept_only:
        ctx.stack.stop(server)
        return
    say(f"drain, local sink, the mix: mailgate worker as shipped, backlog {plan.backlog:,}")
    drained["mailgate"] = summarise(drain.drain_mailgate(ctx, base))
    _say_drain(drained["mailgate"])
    say("drain, local sink, the mix: naive Celery")
    drained["naive_celery"] = summarise(drain.drain_naive(ctx, gateway.redis_url))
    _say_drain(drained["naive_celery"])
    for count in plan.workers:
        key = f"mailgate_x{count}"
        say(f"drain, local sink, the mix: mailgate, {count} worker process(es)")
        drained[key] = summarise(drain.drain_mailgate(ctx, base, processes=count))
        _say_drain(drained[key])
    for shape in payload.SHAPES:
        count = drain.backlog(ctx, "local", shape)
        say(f"drain, local sink, {shape} only: mailgate, then naive Celery, backlog {count:,}")
        results["shapes"][shape] = {
            "mailgate": summarise(drain.drain_mailgate(ctx, base, kind=shape)),
            "naive_celery": summarise(drain.drain_naive(ctx, gateway.redis_url, kind=shape)),
        }
        for summary in results["shapes"][shape].values():
            _say_drain(summary)
    for kind, section in ((payload.MIX, relay), ("plain", results["relay_plain"])):
        say(
            f"drain, {plan.relay_delay_ms:g} ms relay, {kind}: mailgate, then naive Celery, "
            f"backlog {plan.relay_backlog:,}"
        )
        section["mailgate"] = summarise(drain.drain_mailgate(ctx, base, "relay", kind=kind))
        _say_drain(section["mailgate"])
        section["naive_celery"] = summarise(
            drain.drain_naive(ctx, gateway.redis_url, "relay", kind=kind)
        )
        _say_drain(section["naive_celery"])
    rate = e2e_rate(plan, results)
    say(
        f"end to end, the mix: {plan.e2e_seconds:.0f} s at "
        + (f"{rate:,.0f} req/s" if rate else "max")
    )
    sustained = summarise(e2e.e2e(ctx, base, rate))
    results["e2e"] = {"mailgate": sustained}
    say(f"  delivered {_fmt(sustained, 'delivered_per_s', '/s')}, "
        f"accept->250 p99 {_fmt(sustained, 'p99_ms', 'ms')}")  # fmt: skip
    ctx.stack.stop(server)
    say("smtplib over one connection, the mix")
    drained["smtplib_ceiling"] = summarise(drain.ceiling(ctx))
    say(f"  {_fmt(drained['smtplib_ceiling'], 'rate', 'mails/s')}")


def _say_accept(summary: dict[str, Any]) -> None:
    say(f"  {_fmt(summary, 'rps', 'req/s')}, p99 {_fmt(summary, 'p99_ms', 'ms')}, "
        f"CPU {_fmt(summary, 'cpu_ms', 'ms/request', 3)}")  # fmt: skip


def _say_drain(summary: dict[str, Any]) -> None:
    say(f"  {_fmt(summary, 'rate', 'mails/s')}, CPU {_fmt(summary, 'cpu_ms_per_mail', 'ms')}"
        f"/mail, largest process {_fmt(summary, 'rss_max_mb', 'MiB')}")  # fmt: skip


def _fmt(summary: dict[str, Any], key: str, unit: str, digits: int = 1) -> str:
    found = summary.get(key)
    return f"{found['median']:,.{digits}f} {unit}" if found else f"— {unit}"


def write(results: Results, folder: Path, stamp: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    (folder / f"{stamp}.json").write_text(text)
    (folder / "latest.json").write_text(text)
    (folder / "latest.md").write_text(markdown(results) + "\n")
    draw(results, folder / "chart.png")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    plan = make_plan(args)
    args.results = args.results or (RESULTS / "quick" if args.quick else RESULTS)
    generator = Generator.choose(args.generator)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = args.results / "tmp" / stamp
    workdir.mkdir(parents=True)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    # Also when started with SIGINT ignored (a background job of a script): Ctrl-C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results: Results = {
        "timestamp": stamp, "command": " ".join(["python -m bench", *argv]),
        "machine": describe(), "generator": generator.name, "plan": asdict(plan),
        "accept": {}, "accept_shapes": {}, "drain": {}, "shapes": {}, "relay": {},
        "relay_plain": {},
    }  # fmt: skip
    say(f"{plan.mode} run, load generator: {generator.name}; logs in {workdir}")
    stack = Stack(workdir, child_env())
    finished = False
    try:
        ctx, gateway = start_parts(stack, plan, generator)
        measure(ctx, gateway, results)
        finished = True
    except BenchError as exc:
        say(f"FAILED: {exc}")
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        stack.close()
        if finished and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"logs kept in {workdir}")
    if not finished:
        return 1
    results["ratios"], results["goals"] = judge(results)
    write(results, args.results, stamp)
    print("\n" + markdown(results) + "\n")
    say(f"wrote {args.results}/{stamp}.json, latest.json, latest.md and chart.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
