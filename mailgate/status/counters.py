"""Delivery counters kept in Redis (``mailgate:metrics``) for the API's /metrics."""

from __future__ import annotations

import time
from typing import Any

from mailgate.status.keys import METRICS_KEY

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
"""Upper bounds (seconds) of the accept-to-250 latency histogram."""


LAST_OUTCOME = "last_outcome_at"
"""Field of the counters hash: when a worker last recorded an outcome (a delivery's progress)."""

_OUTCOMES = {"Sent": "sent", "Retrying": "retried", "Failed": "failed"}


def count(pipe: Any, status: str, smtp_response: str | None, latency: float | None) -> None:
    """Add one outcome to the counters: ``outcome:<name>``, ``reply:<class>`` and, for Sent,
    the ``latency:<le>`` bucket it falls in plus ``latency_sum`` and ``latency_count``."""
    pipe.hincrby(METRICS_KEY, f"outcome:{_OUTCOMES.get(status, status.lower())}", 1)
    reply = smtp_response[:1] + "xx" if smtp_response and smtp_response[:1].isdigit() else "none"
    pipe.hincrby(METRICS_KEY, f"reply:{reply}", 1)
    pipe.hset(METRICS_KEY, LAST_OUTCOME, time.time())
    if latency is not None:
        bucket = next((b for b in LATENCY_BUCKETS if latency <= b), float("inf"))
        pipe.hincrby(METRICS_KEY, f"latency:{bucket}", 1)
        pipe.hincrbyfloat(METRICS_KEY, "latency_sum", latency)
        pipe.hincrby(METRICS_KEY, "latency_count", 1)
