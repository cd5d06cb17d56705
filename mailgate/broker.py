"""The Celery application both sides share: broker settings and publishing by task name.

The API only publishes (by :data:`~mailgate.jobs.TASK_NAME`); the worker adds the task and
its boot steps on top. Neither imports the other.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from dataclasses import dataclass

import redis
from celery import Celery
from kombu import serialization
from kombu.entity import Queue
from kombu.utils import json as kombu_json

from mailgate import broker_events, broker_transport
from mailgate.config import Settings
from mailgate.jobs import QUEUE, TASK_NAME
from mailgate.redisconn import SentinelTarget, is_redis, is_sentinel, redis_client, same_redis


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the Redis broker, set up for late acks and fast redelivery."""
    broker_transport.install()  # redis:// and sentinel:// use kombu's transports, fixed
    # kombu restores a dead worker's unacknowledged messages once they are older than the
    # visibility timeout, checking every restore interval: together they stay within
    # MAILGATE_REDELIVERY_SECONDS. Retries never use ETA messages (see worker.scheduler), so a
    # short visibility timeout cannot cause the repeated redelivery of long countdowns.
    interval = max(1, min(10, int(settings.redelivery_seconds / 10)))
    visibility = max(2, int(settings.redelivery_seconds) - 2 * interval)
    broker_url, sentinel = settings.broker_url, None
    if is_sentinel(broker_url):
        sentinel = SentinelTarget.parse(broker_url)
        broker_url = sentinel.kombu_url()
    # Task events are published from the event-loop thread only (see mailgate.broker_events).
    app = Celery("mailgate", broker=broker_url, set_as_current=False, events=broker_events.Events)
    redis_broker = is_redis(settings.broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        worker_send_task_events=True,
        # No task-sent event: it costs a second broker write per accepted e-mail, and Flower
        # learns of each task from the worker's received/started/succeeded events anyway.
        task_send_sent_event=False,
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
    if not redis_broker:
        # After a reconnect with tasks in flight, Celery lowers the prefetch count and raises
        # it again from each task's ack callback, which the threads pool runs in the task's
        # thread: a synchronous basic.qos on the consumer's connection while the event loop
        # reads that socket too. The two readers split AMQP frames between them, and the
        # worker stays connected but consumes nothing more. Keep the full prefetch instead.
        app.conf.worker_enable_prefetch_count_reduction = False
        # The worker checks its connections every 5 s instead of every 60 s (the heartbeat
        # RabbitMQ negotiates by default): a connection whose close the event loop missed
        # fails at the next heartbeat sent, and the worker reconnects.
        app.conf.broker_heartbeat = 10
    if sentinel is not None:
        app.conf.broker_transport_options.update(
            master_name=sentinel.master,
            sentinel_kwargs=sentinel.sentinel_kwargs(socket_timeout=10, socket_connect_timeout=3),
        )
    if settings.broker_quorum_queues and not redis_broker:
        # A quorum queue is replicated across the RabbitMQ cluster and survives a node's loss;
        # Celery then turns off global QoS, which quorum queues do not support.
        quorum = Queue(QUEUE, queue_arguments={"x-queue-type": "quorum"})  # type: ignore[no-untyped-call]
        app.conf.task_queues = [quorum]
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


def uses_redis_broker(settings: Settings) -> bool:
    """True when the broker is the status store's Redis, so both can share one transaction."""
    return same_redis(settings.broker_url, settings.redis_url)


def broker_redis(settings: Settings, store_client: redis.Redis) -> redis.Redis | None:
    """A client of the broker's Redis (``store_client`` when it is the store's own), or None
    for RabbitMQ: where the queue depth is read (its pool as large as the store's)."""
    if uses_redis_broker(settings):
        return store_client
    if not is_redis(settings.broker_url):
        return None
    size = store_client.connection_pool.max_connections
    return redis_client(
        settings.broker_url, socket_timeout=5, socket_connect_timeout=2, max_connections=size
    )


def redis_task_message(app: Celery, email_id: str) -> str:
    """The delivery task, serialized exactly as kombu's Redis transport would LPUSH it.

    Celery builds the protocol-2 message; the envelope is the one kombu's virtual channel
    adds (base64 body, delivery tag, routing to the queue). The API pushes it in the same
    Redis transaction as the status record, so an e-mail is recorded and queued together or
    not at all, in one round trip. tests/test_broker.py checks it against kombu's own output.

    Only the EmailId (task id, root id, argument, correlation id), the body's base64, the
    delivery tag and the thread's reply-to differ from one message to the next, so the JSON
    is built once per process (:class:`_Template`) and filled in per message.
    """
    key = (id(app), os.getpid())  # the origin header names the process
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = _Template.build(app)
    return template.fill(email_id, app.thread_oid, str(uuid.uuid4()))


def build_task_message(app: Celery, email_id: str, reply_to: str, delivery_tag: str) -> str:
    """The message as Celery and kombu's virtual channel build it (the template's source)."""
    headers, properties, body, _ = app.amqp.as_task_v2(
        email_id, TASK_NAME, args=[email_id], kwargs={}, root_id=email_id, ignore_result=None
    )
    content_type, content_encoding, data = serialization.dumps(body, serializer="json")  # type: ignore[no-untyped-call]
    raw = data.encode(content_encoding) if isinstance(data, str) else data
    envelope = {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": delivery_tag,
        },
    }
    return str(kombu_json.dumps(envelope))  # type: ignore[no-untyped-call]


_PLACEHOLDER_ID = "00000000-0000-4000-8000-00000000abcd"
_SLOTS = {"id": _PLACEHOLDER_ID, "reply_to": "@@reply@to@@", "tag": "@@delivery@tag@@"}
_BODY_SLOT = "@@body@@"


@dataclass(frozen=True)
class _Template:
    """A task message cut at the parts that change: ``pieces[i]`` comes before ``slots[i]``."""

    pieces: tuple[str, ...]
    slots: tuple[str, ...]
    body: tuple[bytes, bytes]
    """The raw (pre-base64) body before and after the EmailId."""

    @classmethod
    def build(cls, app: Celery) -> _Template:
        sample = build_task_message(app, _PLACEHOLDER_ID, _SLOTS["reply_to"], _SLOTS["tag"])
        envelope = kombu_json.loads(sample)  # type: ignore[no-untyped-call]
        raw = base64.b64decode(envelope["body"])
        before, found, after = raw.partition(_PLACEHOLDER_ID.encode())
        if not found or _PLACEHOLDER_ID.encode() in after:
            raise RuntimeError("unexpected task body: the EmailId must appear exactly once")
        text = sample.replace(envelope["body"], _BODY_SLOT)
        names = {value: name for name, value in _SLOTS.items()} | {_BODY_SLOT: "body"}
        parts = re.split("(" + "|".join(re.escape(v) for v in names) + ")", text)
        return cls(tuple(parts[0::2]), tuple(names[p] for p in parts[1::2]), (before, after))

    def fill(self, email_id: str, reply_to: str, delivery_tag: str) -> str:
        raw = self.body[0] + email_id.encode() + self.body[1]
        values = {
            "id": email_id,
            "reply_to": reply_to,
            "tag": delivery_tag,
            "body": base64.b64encode(raw).decode("ascii"),
        }
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out += (values[slot], piece)
        return "".join(out)


_TEMPLATES: dict[tuple[int, int], _Template] = {}
