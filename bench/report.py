"""Turning runs into figures: median and min-max, ratios to the baselines, goals, the table.

A figure is ``{"median": m, "min": a, "max": b}`` over a run's repetitions; the JSON keeps
every repetition as well.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, fields, is_dataclass
from typing import Any

Figure = dict[str, float]
Results = dict[str, Any]


def figure(values: list[float]) -> Figure:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[Any]) -> dict[str, Any]:
    """Every numeric field of the runs (dataclasses) as a figure; lists of sizes are summed."""
    if not runs:
        return {"runs": []}
    summary: dict[str, Any] = {"runs": [asdict(run) for run in runs]}
    assert is_dataclass(runs[0])
    for field in fields(runs[0]):
        values = [getattr(run, field.name) for run in runs]
        if all(isinstance(v, list) for v in values):
            values = [sum(v) for v in values]
        if values and all(isinstance(v, int | float) for v in values):
            summary[field.name] = figure([float(v) for v in values])
    return summary


def median(results: Results, *path: str) -> float | None:
    """The median at ``results[path...]``, or None when that figure was not measured."""
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node["median"]) if isinstance(node, dict) and "median" in node else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


GOALS: list[tuple[str, tuple[str, ...], tuple[str, ...] | None, str, float]] = [
    ("accept req/s >= 0.8x bare Flask", ("accept", "mailgate", "rps"),
     ("accept", "bare_flask", "rps"), ">=", 0.8),
    ("accept req/s >= 2x naive Celery", ("accept", "mailgate", "rps"),
     ("accept", "naive_celery", "rps"), ">=", 2.0),
    ("accept p99 <= 15 ms at 32 connections", ("accept", "mailgate", "p99_ms"), None, "<=", 15.0),
    ("API CPU per request <= 0.5 ms", ("accept", "mailgate", "cpu_ms"), None, "<=", 0.5),
    ("drain, local sink, the mix >= 2x naive Celery", ("drain", "mailgate", "rate"),
     ("drain", "naive_celery", "rate"), ">=", 2.0),
    ("drain, local sink, plain ASCII >= 1.5x naive Celery",
     ("shapes", "plain", "mailgate", "rate"), ("shapes", "plain", "naive_celery", "rate"),
     ">=", 1.5),
    ("drain, 20 ms relay, the mix >= 10x naive Celery", ("relay", "mailgate", "rate"),
     ("relay", "naive_celery", "rate"), ">=", 10.0),
    ("end to end accept->250 p99 <= 1 s", ("e2e", "mailgate", "p99_ms"), None, "<=", 1000.0),
    ("end to end: no backlog 1 s after the load", ("e2e", "mailgate", "cleared_after_s"), None,
     "<=", 1.0),
    ("worker RSS < 150 MiB per process", ("drain", "mailgate", "rss_max_mb"), None, "<=", 150.0),
]  # fmt: skip
"""The goals of issues 5, 12 and 23 (accept, end to end, worker memory) and of issue 16 (the
drains, on the mix of shapes and on the plain one)."""


def judge(results: Results) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """The ratios mailgate/baseline and whether each goal (issues 5, 12 and 16) is met."""
    ratios = {
        "accept_rps_vs_bare_flask": ratio(median(results, "accept", "mailgate", "rps"),
                                          median(results, "accept", "bare_flask", "rps")),
        "accept_rps_vs_naive_celery": ratio(median(results, "accept", "mailgate", "rps"),
                                            median(results, "accept", "naive_celery", "rps")),
        "accept_p99_vs_bare_flask": ratio(median(results, "accept", "mailgate", "p99_ms"),
                                          median(results, "accept", "bare_flask", "p99_ms")),
        "drain_vs_naive_celery": ratio(median(results, "drain", "mailgate", "rate"),
                                       median(results, "drain", "naive_celery", "rate")),
        "drain_cpu_per_mail_vs_naive_celery": ratio(
            median(results, "drain", "mailgate", "cpu_ms_per_mail"),
            median(results, "drain", "naive_celery", "cpu_ms_per_mail")),
        "relay_vs_naive_celery": ratio(median(results, "relay", "mailgate", "rate"),
                                       median(results, "relay", "naive_celery", "rate")),
        "relay_plain_vs_naive_celery": ratio(
            median(results, "relay_plain", "mailgate", "rate"),
            median(results, "relay_plain", "naive_celery", "rate")),
        "drain_vs_smtplib_ceiling": ratio(median(results, "drain", "mailgate", "rate"),
                                          median(results, "drain", "smtplib_ceiling", "rate")),
    }  # fmt: skip
    for shape in results.get("shapes", {}):
        for key, name in (("rate", "drain"), ("cpu_ms_per_mail", "drain_cpu_per_mail")):
            ratios[f"{name}_{shape}_vs_naive_celery"] = ratio(
                median(results, "shapes", shape, "mailgate", key),
                median(results, "shapes", shape, "naive_celery", key),
            )
    goals = []
    for name, path, against, op, bound in GOALS:
        value = median(results, *path)
        if against is not None:
            value = ratio(value, median(results, *against))
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        goals.append({"goal": name, "value": value, "met": met})
    return ratios, goals
