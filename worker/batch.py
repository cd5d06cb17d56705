"""The delivery task's fast path: a Celery task strategy that hands each message to a pool of
delivery threads, instead of Celery's per-task request, trace and pool machinery.

Still one broker message per e-mail (``mailgate.deliver``, task id = EmailId, argument = the
EmailId only), still a late ack: a message is acknowledged only after ``Delivery.deliver`` has
returned, so after the outcome is in Redis (or the e-mail was found final, busy or missing).
A worker that dies first leaves the message unacknowledged, and the broker redelivers it. Flower
keeps seeing every e-mail: the strategy sends the task-received, task-started and
task-succeeded (or task-failed) events Celery's own request would send, through the worker's
event dispatcher (which buffers them and publishes them in groups).

What it gains (``bench/README.md``): the threads share Redis round trips through
:class:`mailgate.status.batched.BatchedStatusStore`, each keeps its SMTP session, and there
can be many more of them (``MAILGATE_WORKER_CONCURRENCY``, SMTP sessions in flight) than
Celery's pool threads, for relays that answer slowly.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery.utils.saferepr import saferepr

from worker.delivery import Delivery

log = logging.getLogger(__name__)

Ack = Callable[[], Any]
RawAck = Callable[..., Any]


class DeliveryPool:
    """``size`` threads running ``delivery.deliver``; each message is acked after its run."""

    def __init__(self, delivery: Delivery, size: int) -> None:
        self.delivery = delivery
        self.size = size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.send_event: Callable[..., Any] | None = None
        """The worker's event dispatcher's ``send`` (None: task events are off)."""

    def submit(self, task_id: str, email_id: str, ack: Ack) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="deliver")
            executor = self._executor
        executor.submit(self._run, task_id, email_id, ack)

    def stop(self) -> None:
        """Finish the deliveries under way; drop the queued ones unacknowledged (the broker
        gives them back: ``kombu`` restores a closing worker's unacked messages)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, task_id: str, email_id: str, ack: Ack) -> None:
        send = self.send_event
        started = time.monotonic()
        if send:
            send("task-started", uuid=task_id)
        try:
            outcome = self.delivery.deliver(email_id)
        except Exception as exc:
            # As Celery does for a task that raised under acks_late: ack and report the
            # failure. The e-mail's due-set entry stays, so the watchdog publishes it again.
            log.error("delivery of %s raised %s", email_id, type(exc).__name__, exc_info=True)
            if send:
                send("task-failed", uuid=task_id, exception=saferepr(exc),
                     traceback=traceback.format_exc())  # fmt: skip
            ack()
            return
        if send:
            send("task-succeeded", uuid=task_id, result=repr(outcome.value),
                 runtime=time.monotonic() - started)  # fmt: skip
        ack()


def strategy(task: Any, app: Any, consumer: Any, **_: Any) -> Callable[..., None]:
    """The Celery strategy of ``mailgate.deliver`` (``Task.Strategy``): see the module."""
    pool: DeliveryPool = task.delivery_pool
    # The worker's --concurrency: how many e-mails (SMTP sessions) are in flight at once.
    pool.size = int(getattr(consumer.controller, "concurrency", None) or pool.size)
    eventer = consumer.event_dispatcher
    send = eventer.send if eventer is not None and eventer.enabled and task.send_events else None
    pool.send_event = send
    revoked = consumer.controller.state.revoked
    errors = consumer.connection_errors

    def on_message(message: Any, body: Any, ack: RawAck, reject: Any, callbacks: Any,
                   **__: Any) -> None:  # fmt: skip
        headers = message.headers
        task_id = headers["id"]
        if task_id in revoked:
            log.info("discarding revoked task %s", task_id)
            ack(log, errors)
            return
        args, _kwargs, _embed = message.decode()
        if send:
            send("task-received", uuid=task_id, name=task.name, args=headers.get("argsrepr"),
                 kwargs=headers.get("kwargsrepr"), root_id=headers.get("root_id"),
                 parent_id=headers.get("parent_id"), retries=headers.get("retries", 0),
                 eta=None, expires=None)  # fmt: skip
        pool.submit(task_id, str(args[0]), lambda: ack(log, errors))

    return on_message
