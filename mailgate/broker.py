"""The Celery application both sides share: broker settings and publishing by task name.

The API only publishes (by :data:`~mailgate.jobs.TASK_NAME`); the worker adds the task and
its boot steps on top. Neither imports the other.
"""

from __future__ import annotations

from celery import Celery

from mailgate.config import Settings
from mailgate.jobs import QUEUE, TASK_NAME


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the Redis broker, set up for late acks and fast redelivery."""
    # kombu restores a dead worker's unacknowledged messages once they are older than the
    # visibility timeout, checking every restore interval: together they stay within
    # MAILGATE_REDELIVERY_SECONDS. Retries never use ETA messages (see worker.scheduler), so a
    # short visibility timeout cannot cause the repeated redelivery of long countdowns.
    interval = max(1, min(10, int(settings.redelivery_seconds / 10)))
    visibility = max(2, int(settings.redelivery_seconds) - 2 * interval)
    app = Celery("mailgate", broker=settings.broker_url, set_as_current=False)
    redis_broker = settings.broker_url.startswith(("redis", "rediss", "unix"))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        # RabbitMQ redelivers a dead consumer's unacked messages at once; these options are
        # the Redis transport's emulation of that.
        broker_transport_options={
            "visibility_timeout": visibility,
            "unacked_restore_interval": interval,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(interval * 2, 5),
            "socket_timeout": 10,
            "socket_connect_timeout": 3,
            "health_check_interval": 15,
        }
        if redis_broker
        else {"confirm_publish": True},
        enable_utc=True,
    )
    return app


def publish(app: Celery, email_id: str) -> None:
    """Publish the delivery task for one e-mail; the task id is the EmailId.

    Raises whatever the broker raises when it cannot take the message; callers translate it.
    """
    app.send_task(
        TASK_NAME,
        args=[email_id],
        task_id=email_id,
        queue=QUEUE,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
    )
