"""The Celery tasks, thin like web views: the logic is in worker.delivery and worker.reports."""

from __future__ import annotations

from typing import Any

from celery import Celery

from mailgate.jobs import QUEUE, REPORT_TASK_NAME, TASK_NAME
from worker.batch import DeliveryPool
from worker.delivery import Delivery
from worker.reports import Reporter


def register_tasks(
    app: Celery, delivery: Delivery, reporter: Reporter, pool: DeliveryPool | None = None
) -> None:
    """Register the delivery and report tasks on ``app``; each takes only the EmailId.

    With ``pool``, the worker runs delivery tasks on it (worker.batch) rather than through
    Celery's own pool; the task body below is what both run.
    """
    options: dict[str, Any] = {}
    if pool is not None:
        options = {"Strategy": "worker.batch:strategy", "delivery_pool": pool}

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
        **options,
    )  # fmt: skip
    def deliver(email_id: str) -> str:
        return delivery.deliver(email_id).value

    # Attempts are counted and bounded by the Reporter (worker.reports.MAX_ATTEMPTS).
    @app.task(  # type: ignore[untyped-decorator]
        name=REPORT_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
        ignore_result=True, max_retries=None,
    )  # fmt: skip
    def report(task: Any, email_id: str) -> str:
        step = reporter.report(email_id, attempt=task.request.retries + 1)
        if step.retry_in is not None:
            raise task.retry(countdown=step.retry_in)
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
