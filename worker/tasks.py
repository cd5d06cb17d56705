"""The Celery tasks, thin like web views: the logic is in worker.delivery and worker.reports."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup

from mailgate.jobs import QUEUE, REPORT_TASK_NAME, TASK_NAME
from worker.delivery import Delivery
from worker.reports import Reporter

log = logging.getLogger(__name__)

REPORT_WAIT_SECONDS = 1.0
"""How soon a report that found every report slot taken tries again."""


def report_slots(concurrency: int) -> int:
    """How many of the worker's threads may be POSTing reports at once: a quarter, at least
    one, so a slow or hanging callback endpoint never holds the threads deliveries need."""
    return max(1, concurrency // 4)


def register_tasks(app: Celery, delivery: Delivery, reporter: Reporter) -> None:
    """Register the delivery and report tasks on ``app``; each takes only the EmailId."""
    pool = {"slots": threading.BoundedSemaphore(report_slots(reporter.settings.worker_concurrency))}

    @celeryd_after_setup.connect(weak=False)  # type: ignore[untyped-decorator]
    def _size_report_slots(sender: Any, instance: Any, **_: Any) -> None:
        # The pool's real size (--concurrency), known once the worker is set up.
        if isinstance(instance.concurrency, int):
            size = report_slots(instance.concurrency)
            pool["slots"] = threading.BoundedSemaphore(size)
            log.info("delivery reports use at most %d of %d threads", size, instance.concurrency)

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True
    )
    def deliver(email_id: str) -> str:
        return delivery.deliver(email_id).value

    # Attempts are counted and bounded by the Reporter (worker.reports.MAX_ATTEMPTS).
    @app.task(  # type: ignore[untyped-decorator]
        name=REPORT_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
        ignore_result=True, max_retries=None,
    )  # fmt: skip
    def report(task: Any, email_id: str, deferred: int = 0) -> str:
        # All slots busy: give the thread back and try again soon. ``deferred`` counts these
        # turns, which are Celery retries too but no POST attempts.
        slots = pool["slots"]
        if not slots.acquire(blocking=False):
            raise task.retry(countdown=REPORT_WAIT_SECONDS, kwargs={"deferred": deferred + 1})
        try:
            step = reporter.report(email_id, attempt=task.request.retries + 1 - deferred)
        finally:
            slots.release()
        if step.retry_in is not None:
            raise task.retry(countdown=step.retry_in, kwargs={"deferred": deferred})
        return step.result.value


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
