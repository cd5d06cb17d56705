"""The delivery task's fast path: a Celery task strategy that hands each message to a pool of
delivery threads, instead of Celery's per-task request, trace and pool machinery.

Still one broker message per e-mail (``mailgate.deliver``, task id = EmailId, argument = the
EmailId only), still a late ack: a message is acknowledged only after ``Delivery.deliver`` has
returned, so after the outcome is in Redis (or the e-mail was found final, busy or missing).
A worker that dies first leaves the message unacknowledged, and the broker redelivers it. Flower
keeps seeing every e-mail: the strategy sends the task-received, task-started and
task-succeeded events Celery's own request would send (task-failed for an e-mail that is
``Failed``, with its ``LastError`` as the exception, as if the task had raised it), through
the worker's event dispatcher (which buffers them and publishes them in groups).

What it gains (``bench/README.md``): the threads share Redis round trips through
:class:`mailgate.status.group_commit.BatchedStatusStore`, each keeps its SMTP session, and there
can be many more of them (``MAILGATE_WORKER_CONCURRENCY``, SMTP sessions in flight) than
Celery's pool threads, for relays that answer slowly.

A patch on Celery's internals: see :mod:`mailgate.library_fixes` (item 3) for when it can go.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery.utils.saferepr import saferepr

from mailgate.errors import EmailFailed
from worker.delivery import Delivery

log = logging.getLogger(__name__)

RawAck = Callable[..., Any]


ACK_INTERVAL = 0.05
"""Seconds a finished message may wait for the acks that finish after it: one round trip
acknowledges them all."""


class Acks:
    """Acknowledges finished messages in groups, off the deliveries' threads.

    A message is handed over only once its outcome is in Redis, so acking it later changes
    nothing but the round trips: one for all the messages finished within ``interval``, on a
    thread of its own. Should the worker die first, the broker redelivers them and each
    delivery finds its e-mail final. A channel without ``ack_many`` (RabbitMQ, whose acks are
    frames without a reply) acks each message at once.
    """

    def __init__(
        self, errors: tuple[type[BaseException], ...] = (), interval: float = ACK_INTERVAL
    ) -> None:
        self.errors = errors
        """The broker's connection errors: a failed ack is logged, as kombu does."""
        self.interval = interval
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._thread: threading.Thread | None = None

    def ack(self, message: Any) -> None:
        """Acknowledge ``message`` (a kombu message) now or with the next group."""
        # A pyamqp channel has no ``qos`` at all: RabbitMQ's acks go one by one.
        if not hasattr(getattr(message.channel, "qos", None), "ack_many"):
            message.ack_log_error(log, self.errors)
            return
        with self._lock:
            self._pending.append(message)
            self._due.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="acks", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Acknowledge every message handed over so far, one round trip per channel."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._due.clear()
        channels: dict[int, tuple[Any, list[str]]] = {}
        for message in pending:
            channels.setdefault(id(message.channel), (message.channel, []))[1].append(
                message.delivery_tag
            )
        for channel, tags in channels.values():
            try:
                channel.qos.ack_many(tags)
            except self.errors as exc:
                # The connection is gone: the broker gives these messages back later.
                log.critical("Couldn't ack %d messages, reason: %r", len(tags), exc)
            except Exception:
                log.exception("Couldn't ack %d messages", len(tags))

    def _run(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self.interval)  # let the acks of deliveries finishing now join
            self.flush()


class DeliveryPool:
    """``size`` threads running ``delivery.deliver``; each message is acked after its run."""

    def __init__(self, delivery: Delivery, size: int) -> None:
        self.delivery = delivery
        self.size = size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.send_event: Callable[..., Any] | None = None
        """The worker's event dispatcher's ``send`` (None: task events are off)."""
        self.acks = Acks()

    def submit(self, task_id: str, email_id: str, message: Any) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="deliver")
            executor = self._executor
        executor.submit(self._run, task_id, email_id, message).add_done_callback(_log_crash)

    def stop(self) -> None:
        """Finish the deliveries under way and acknowledge them; drop the queued ones
        unacknowledged (the broker gives them back: ``kombu`` restores a closing worker's
        unacked messages)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self.acks.flush()

    def _run(self, task_id: str, email_id: str, message: Any) -> None:
        send = self.send_event
        started = time.monotonic()
        if send:
            send("task-started", uuid=task_id)
        try:
            result = self.delivery.run(email_id)
        except Exception as exc:
            # As Celery does for a task that raised under acks_late: ack and report the
            # failure. The e-mail's due-set entry stays, so the watchdog publishes it again.
            log.error("delivery of %s raised %s", email_id, type(exc).__name__, exc_info=True)
            if send:
                send(
                    "task-failed",
                    uuid=task_id,
                    exception=saferepr(exc),
                    traceback=traceback.format_exc(),
                )
            self.acks.ack(message)
            return
        if send and result.failure is not None:
            # A Failed e-mail's task is a failure in Flower, with LastError as its exception.
            send(
                "task-failed",
                uuid=task_id,
                exception=saferepr(EmailFailed(result.failure)),
                traceback=None,
            )
        elif send:
            send(
                "task-succeeded",
                uuid=task_id,
                result=repr(result.outcome.value),
                runtime=time.monotonic() - started,
            )
        self.acks.ack(message)


def _log_crash(future: Future[None]) -> None:
    # _run reports the delivery's own errors; anything else (an ack, an event) must not vanish
    # into a future nobody reads.
    error = None if future.cancelled() else future.exception()
    if error is not None:
        log.error("a delivery thread failed: %r", error, exc_info=error)


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
    pool.acks.errors = tuple(errors)

    def on_message(
        message: Any, body: Any, ack: RawAck, reject: Any, callbacks: Any, **__: Any
    ) -> None:
        headers = message.headers
        task_id = headers["id"]
        if task_id in revoked:
            log.info("discarding revoked task %s", task_id)
            ack(log, errors)
            return
        args, _kwargs, _embed = message.decode()
        if send:
            send(
                "task-received",
                uuid=task_id,
                name=task.name,
                args=headers.get("argsrepr"),
                kwargs=headers.get("kwargsrepr"),
                root_id=headers.get("root_id"),
                parent_id=headers.get("parent_id"),
                retries=headers.get("retries", 0),
                eta=None,
                expires=None,
            )
        pool.submit(task_id, str(args[0]), message)

    return on_message
