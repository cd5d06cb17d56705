"""The markdown table of a run: every figure with its min-max, the ratios and the goals."""

from __future__ import annotations

from typing import Any

from bench.report import Results, median, ratio

BASELINE_NAMES = {
    "bare_flask": "bare Flask",
    "naive_celery": "naive Celery",
    "smtplib_ceiling": "smtplib, 1 connection",
}


def cell(results: Results, *path: str, digits: int = 0) -> str:
    """``median (min-max)`` or an em dash when not measured."""
    node: Any = results
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or "median" not in node:
        return "—"
    fmt = f"{{:,.{digits}f}}"
    m, lo, hi = (fmt.format(node[k]) for k in ("median", "min", "max"))
    return m if lo == hi else f"{m} ({lo}-{hi})"


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def goal_cell(results: Results, prefix: str) -> str:
    """The first goal whose name starts with ``prefix``, and whether this run met it."""
    for goal in results.get("goals", []):
        if goal["goal"].startswith(prefix):
            mark = {True: "met", False: "**not met**", None: "not measured"}[goal["met"]]
            return f"{goal['goal']}: {mark}"
    return ""


def markdown(results: Results) -> str:
    """Every figure of ``results`` as one markdown table, the machine and command under it."""
    plan, rows = results["plan"], []
    conns, backlog = plan["connections"], f"{plan['backlog']:,}"
    shape_backlog = f"{plan.get('shape_backlog', plan['backlog']):,}"

    def vs(
        section: str | tuple[str, ...],
        base: str,
        key: str,
        label: str,
        digits: int = 0,
        goal: str = "",
    ) -> None:
        path = (section,) if isinstance(section, str) else section
        rows.append((f"{label}, vs {BASELINE_NAMES[base]}",
                     cell(results, *path, "mailgate", key, digits=digits),
                     cell(results, *path, base, key, digits=digits),
                     times(ratio(median(results, *path, "mailgate", key),
                                 median(results, *path, base, key))),
                     goal_cell(results, goal) if goal else ""))  # fmt: skip

    vs("accept", "bare_flask", "rps", f"accept req/s at {conns} conn.", goal="accept req/s >= 0.8x")
    vs("accept", "naive_celery", "rps", f"accept req/s at {conns} conn.", goal="accept req/s >= 2x")
    vs("accept", "bare_flask", "p50_ms", "accept p50 ms", 1)
    vs("accept", "bare_flask", "p99_ms", "accept p99 ms", 1, goal="accept p99")
    vs("accept", "naive_celery", "p99_ms", "accept p99 ms", 1)
    vs("accept", "bare_flask", "cpu_ms", "API CPU ms per request", 3)
    vs("accept", "naive_celery", "cpu_ms", "API CPU ms per request", 3, goal="API CPU")
    shaped = (("rps", "req/s", 0), ("p99_ms", "p99 ms", 1), ("cpu_ms", "API CPU ms per request", 3))
    for shape in results.get("accept_shapes", {}):
        for key, label, digits in shaped:
            value = cell(results, "accept_shapes", shape, key, digits=digits)
            rows.append((f"accept, {shape} form POSTed: {label}", value, "", "", ""))
    vs(
        "drain",
        "naive_celery",
        "rate",
        f"drain mails/s, local smtp-sink, the mix, backlog {backlog}",
        goal="drain, local sink, the mix",
    )
    vs("drain", "naive_celery", "cpu_ms_per_mail", "drain CPU ms per e-mail, the mix", 2)
    for shape in results.get("shapes", {}):
        size = backlog if shape == "plain" else shape_backlog
        vs(
            ("shapes", shape),
            "naive_celery",
            "rate",
            f"drain mails/s, local smtp-sink, {shape} only, backlog {size}",
            goal="drain, local sink, plain" if shape == "plain" else "",
        )
        vs(
            ("shapes", shape),
            "naive_celery",
            "cpu_ms_per_mail",
            f"drain CPU ms per e-mail, {shape} only",
            2,
        )
    vs("drain", "smtplib_ceiling", "rate", "drain mails/s, local smtp-sink, the mix")
    relay_backlog = f"{plan.get('relay_backlog', 0):,}"
    delay = f"{plan.get('relay_delay_ms', 20):g} ms relay"
    vs(
        "relay",
        "naive_celery",
        "rate",
        f"drain mails/s, {delay}, the mix, backlog {relay_backlog}",
        goal="drain, 20 ms relay, the mix",
    )
    vs("relay", "naive_celery", "cpu_ms_per_mail", "relay drain CPU ms per e-mail, the mix", 2)
    vs(
        "relay_plain",
        "naive_celery",
        "rate",
        f"drain mails/s, {delay}, plain only, backlog {relay_backlog}",
    )
    vs(
        "relay_plain",
        "naive_celery",
        "cpu_ms_per_mail",
        "relay drain CPU ms per e-mail, plain only",
        2,
    )
    for key in sorted(k for k in results.get("drain", {}) if k.startswith("mailgate_x")):
        rows.append(
            (
                f"drain mails/s, the mix, {key.removeprefix('mailgate_x')} worker processes, "
                "vs shipped",
                cell(results, "drain", key, "rate"),
                cell(results, "drain", "mailgate", "rate"),
                times(
                    ratio(
                        median(results, "drain", key, "rate"),
                        median(results, "drain", "mailgate", "rate"),
                    )
                ),
                "",
            )
        )
    e2e = results.get("e2e", {}).get("mailgate", {})
    target = e2e.get("target_rate")
    load = f"{target['median']:,.0f} req/s offered" if target else f"closed loop, {conns} conn."
    for key, label, digits in (
        ("accepted_per_s", "accepted/s", 0), ("delivered_per_s", "delivered/s", 0),
        ("accept_p99_ms", "accept p99 ms", 1), ("p50_ms", "accept→250 p50 ms", 0),
        ("p99_ms", "accept→250 p99 ms", 0), ("backlog_at_end", "backlog when load stopped", 0),
        ("cleared_after_s", "backlog cleared after, s", 2),
    ):  # fmt: skip
        goal = {"p99_ms": "end to end accept", "cleared_after_s": "end to end: no"}.get(key, "")
        label = f"end to end {plan['e2e_seconds']:.0f} s of the mix ({load}): {label}"
        rows.append((label, cell(results, "e2e", "mailgate", key, digits=digits), "", "",
                     goal_cell(results, goal) if goal else ""))  # fmt: skip
    rows.append(
        (
            "worker RSS MiB after drain, all processes (naive: main + pool children)",
            cell(results, "drain", "mailgate", "rss_mb"),
            f"naive Celery: {cell(results, 'drain', 'naive_celery', 'rss_mb')}",
            "",
            "",
        )
    )
    rows.append(
        (
            "worker RSS MiB, largest single process",
            cell(results, "drain", "mailgate", "rss_max_mb"),
            "",
            "",
            goal_cell(results, "worker RSS"),
        )
    )
    rows.append(("API RSS MiB (granian main + one worker per core)", cell(results, "memory", "api"),
                 "", "", ""))  # fmt: skip
    head = ["figure (median, min-max)", "mailgate", "baseline", "mailgate / baseline", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    m = results["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
        f"Python {m['python']} (load average {m['load_average_at_start']} at the start).",
        f"Load generator: {results['generator']}. {plan['runs']} run(s) per figure, "
        f"mode {plan['mode']}, {results['timestamp']}.",
        f"Command: `{results['command']}`",
    ]
    return "\n".join(lines)
