"""Prometheus metrics at ``GET /metrics``, safe under the server's several processes.

Request counters and the accept-latency histogram live in each API process (multiprocess
mode when ``mailgate web`` sets PROMETHEUS_MULTIPROC_DIR, see mailgate.cli.server); queue depth
and the workers' delivery counters are read from Redis at scrape time, so one scrape of any API
process shows the whole deployment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import redis
from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from api.services import services
from mailgate.jobs import QUEUE
from mailgate.status import LATENCY_BUCKETS, StatusStore
from mailgate.status.counters import LAST_OUTCOME

REQUESTS = Counter(
    "mailgate_api_requests", "API requests by command and Ozeki code", ["command", "code"]
)
UNKNOWN_PARAMETERS = Counter(
    "mailgate_unknown_parameters",
    "Request parameters (Ozeki) or JSON fields (REST) mailgate does not know, by command; "
    "the names are in the answer's warning (client-chosen, so never a label)",
    ["command"],
)
ACCEPT_SECONDS = Histogram(
    "mailgate_accept_seconds",
    "Time to answer a SendEmail request (parse, auth, validation, record, publish)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

bp = Blueprint("metrics", __name__)


class QueueCollector:
    """Queue depth and due-set size, read from Redis when scraped."""

    def __init__(
        self, store: StatusStore, broker: redis.Redis | None, stall_seconds: float
    ) -> None:
        self.store = store
        self.broker = broker
        """The broker's Redis (it may be another than the store's), None for RabbitMQ."""
        self.stall_seconds = stall_seconds

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mailgate_redis_up", "1 when Redis answered this scrape")
        try:
            # kombu's Redis transport keeps each queue as a list named after it.
            depth = int(self.broker.llen(QUEUE)) if self.broker is not None else None
            due, overdue = self.store.due_counts()
            counters = self.store.metrics()
        except RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        if depth is not None:
            yield GaugeMetricFamily(
                "mailgate_queue_depth", "Delivery tasks waiting in the broker queue", value=depth
            )
        yield GaugeMetricFamily(
            "mailgate_pending_emails", "E-mails not yet Sent or Failed (due-set size)", value=due
        )
        yield GaugeMetricFamily(
            "mailgate_overdue_emails",
            "E-mails whose retry or watchdog time has passed but no worker has published yet",
            value=overdue,
        )
        yield from stall_metrics(counters, bool(depth) or overdue > 0, overdue, self.stall_seconds)
        yield from delivery_metrics(counters)


def stall_metrics(
    counters: dict[str, float], waiting: bool, overdue: int, stall_seconds: float
) -> Iterator[Metric]:
    """How long since any worker recorded an outcome, and whether delivery looks stalled:
    work waiting (queued tasks or overdue e-mails) and no outcome for ``stall_seconds``, or
    never one while e-mails are overdue."""
    last = counters.get(LAST_OUTCOME)
    since = None if last is None else max(0.0, time.time() - last)
    if since is not None:
        yield GaugeMetricFamily(
            "mailgate_seconds_since_last_delivery",
            "Seconds since a worker last recorded a delivery outcome (Sent, retry or Failed)",
            value=since,
        )
    stalled = waiting and (overdue > 0 if since is None else since > stall_seconds)
    yield GaugeMetricFamily(
        "mailgate_delivery_stalled",
        "1 when work is waiting and no worker has recorded an outcome for a while",
        value=int(stalled),
    )


def delivery_metrics(counters: dict[str, float]) -> Iterator[Metric]:
    """The workers' counters (kept in Redis by the status store) as Prometheus families."""
    outcomes = CounterMetricFamily(
        "mailgate_emails", "Delivery attempt outcomes across all workers", labels=["outcome"]
    )
    replies = CounterMetricFamily(
        "mailgate_smtp_replies", "Final SMTP reply class of each attempt", labels=["class"]
    )
    bounces = CounterMetricFamily(
        "mailgate_bounces",
        "Recipients reported bounced (hard: 5.x.x) or delayed and soft (4.x.x), by class",
        labels=["class"],
    )
    reports = CounterMetricFamily(
        "mailgate_bounce_reports",
        "Messages `mailgate bounces` read, by verdict (unknown: no e-mail it still knows)",
        labels=["verdict"],
    )
    families = {"outcome": outcomes, "reply": replies, "bounce": bounces, "bounce_report": reports}
    for name, value in sorted(counters.items()):
        kind, _, label = name.partition(":")
        if kind in families:
            families[kind].add_metric([label], value)
    yield outcomes
    yield replies
    yield bounces
    yield reports
    cumulative, buckets = 0.0, []
    for bound in (*LATENCY_BUCKETS, float("inf")):
        cumulative += counters.get(f"latency:{bound}", 0.0)
        buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
    yield HistogramMetricFamily(
        "mailgate_delivery_seconds",
        "Time from acceptance to the SMTP server's 250",
        buckets=buckets,
        sum_value=counters.get("latency_sum", 0.0),
    )


@bp.route("/metrics")
def metrics() -> Response:
    """The Prometheus exposition of this deployment."""
    svc = services()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        local = CollectorRegistry()
        MultiProcessCollector(local)  # type: ignore[no-untyped-call]
    else:
        local = REGISTRY
    shared = CollectorRegistry()
    # A worker records an outcome at least every redelivery period while it has work: twice
    # that without one, with work waiting, is a stall.
    stall = 2 * svc.settings.redelivery_seconds
    shared.register(QueueCollector(svc.store, svc.broker_redis, stall))
    body = generate_latest(local) + generate_latest(shared)
    return Response(body, 200, content_type=CONTENT_TYPE_LATEST)
