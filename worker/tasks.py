"""The Celery tasks, thin like web views: the logic is in worker.delivery and worker.reports."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup

from mailgate.errors import EmailFailed
from mailgate.jobs import QUEUE, REPORT_TASK_NAME, TASK_NAME
from worker.delivery import Delivery
from worker.pool import DeliveryPool
from worker.reports import Reporter

log = logging.getLogger(__name__)


def register_tasks(
    app: Celery, delivery: Delivery, reporter: Reporter, pool: DeliveryPool | None = None
) -> None:
    """Register the delivery and report tasks on ``app``; each takes only the EmailId.

    With ``pool``, the worker runs delivery tasks on it (worker.pool) rather than through
    Celery's own pool; the task body below is what both run.
    """
    options: dict[str, Any] = {}
    if pool is not None:
        options = {"Strategy": "worker.pool:strategy", "delivery_pool": pool}

    @celeryd_after_setup.connect(weak=False)  # type: ignore[untyped-decorator]
    def _size_report_slots(sender: Any, instance: Any, **_: Any) -> None:
        # The pool's real size (--concurrency), known once the worker is set up.
        if isinstance(instance.concurrency, int):
            size = reporter.size_slots(instance.concurrency)
            log.info("delivery reports use at most %d of %d threads", size, instance.concurrency)

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        **options,
    )
    def deliver(email_id: str) -> str:
        result = delivery.run(email_id)
        if result.failure is not None:
            raise EmailFailed(result.failure)  # FAILURE in Flower, as worker.pool reports it
        return result.outcome.value

    # No Celery retries: the Reporter schedules each next try on the report due set.
    @app.task(  # type: ignore[untyped-decorator]
        name=REPORT_TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True
    )
    def report(email_id: str, deferred: int = 0) -> str:
        # ``deferred`` is ignored: tasks published before the due set carried it.
        return reporter.run(email_id).value


def publish_report(app: Celery, email_id: str) -> None:
    """Publish the report task for an e-mail that just became final (raises what the broker
    raises; the caller swallows it)."""
    app.send_task(
        REPORT_TASK_NAME,
        args=[email_id],
        # Not the bare EmailId (Flower would merge it with the delivery task), but one that
        # carries it, so Celery's own log lines are filed under the EmailId (mailgate.logs).
        task_id=f"report-{email_id}",
        queue=QUEUE,
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
    )
