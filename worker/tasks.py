"""The ``mailgate.deliver`` task: thin, like a web view. The logic is in worker.delivery."""

from __future__ import annotations

from celery import Celery

from mailgate.jobs import TASK_NAME
from worker.delivery import Delivery


def register_tasks(app: Celery, delivery: Delivery) -> None:
    """Register the delivery task on ``app``; its only argument is the EmailId."""

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True
    )
    def deliver(email_id: str) -> str:
        return delivery.deliver(email_id).value
