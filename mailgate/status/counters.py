"""Delivery counters kept in Redis (``mailgate:metrics``) for the API's /metrics."""

from __future__ import annotations

import time

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
"""Upper bounds (seconds) of the accept-to-250 latency histogram."""


LAST_OUTCOME = "last_outcome_at"
"""Field of the counters hash: when a worker last recorded an outcome (a delivery's progress)."""

_OUTCOMES = {"Sent": "sent", "Retrying": "retried", "Failed": "failed"}


def counter_writes(
    status: str, smtp_response: str | None, latency: float | None
) -> list[list[str]]:
    """What one outcome adds to the counters hash, as (command, field, value) for the OUTCOMES
    script: ``outcome:<name>``, ``reply:<class>``, the time of this outcome and, for Sent, the
    ``latency:<le>`` bucket it falls in plus ``latency_sum`` and ``latency_count``."""
    reply = smtp_response[:1] + "xx" if smtp_response and smtp_response[:1].isdigit() else "none"
    writes = [
        ["HINCRBY", f"outcome:{_OUTCOMES.get(status, status.lower())}", "1"],
        ["HINCRBY", f"reply:{reply}", "1"],
        ["HSET", LAST_OUTCOME, repr(time.time())],
    ]
    if latency is not None:
        bucket = next((b for b in LATENCY_BUCKETS if latency <= b), float("inf"))
        writes += [
            ["HINCRBY", f"latency:{bucket}", "1"],
            ["HINCRBYFLOAT", "latency_sum", repr(latency)],
            ["HINCRBY", "latency_count", "1"],
        ]
    return writes
