"""Every patch on a library's internals: what it fixes, where upstream stands, when it can go.

A patch that can stand alone lives here. One that is a subclass woven into its module's own
logic stays there and is listed here, so this is the one place to read before upgrading
celery, kombu or redis-py (versions as pinned in constraints.txt).

1. **kombu's Redis channel** (:mod:`mailgate.broker_transport`, subclasses of
   ``kombu.transport.redis.Channel``/``SentinelChannel``, installed into kombu's
   ``TRANSPORT_ALIASES`` by :func:`mailgate.broker_transport.install`).
   Fixes: with kombu 5.7.0 a Redis connection lost while the consumer waits on BRPOP with
   unacknowledged messages stops the worker ("Unrecoverable error: AttributeError ...
   'hostname'"; tests/test_broker_loss.py). Also adds ``ack_many`` (one round trip for
   several acks) and one shared client per pool.
   Upstream: the same ``transport.client is None`` path is celery/kombu#582 and #970 (closed
   for older versions); no report for 5.7.0's restore path yet.
   Remove the guard when test_broker_loss.py passes on plain kombu; ``ack_many`` and the
   shared client are features, not fixes, and go only with the grouped acks.
2. **Celery's event dispatcher** (:mod:`mailgate.broker_events`, ``LoopThreadDispatcher``,
   which reads ``EventDispatcher._group_buffer``).
   Fixes: with the threads pool on RabbitMQ with publisher confirms, a task thread that
   flushes the event buffer reads the confirm on the event loop's socket and hangs the
   worker (tests/test_broker_loss.py, RabbitMQ restart); also publishes in groups.
   Upstream: not reported (celery 5.7.0).
   Remove when Celery publishes task events only from the event loop's thread, and the
   grouped publish is no longer wanted.
3. **Celery's task strategy** (:func:`worker.pool.strategy`, the ``Strategy`` option of the
   ``mailgate.deliver`` task): Celery's request, trace and pool machinery are bypassed and
   the task-received/started/succeeded/failed events are sent by hand, as Celery's request
   would (celery 5.7.0 event fields).
   Upstream: a documented hook (``Task.Strategy``), but the events it must send are
   Celery's internals. Remove only together with the delivery thread pool (bench/README.md).
4. **Celery's shutdown notices** (:func:`shutdown_notices_as_json`, below): Celery writes
   "worker: Warm shutdown (MainProcess)" straight to the terminal with
   ``celery.apps.worker.safe_say``, never through logging, so a JSON log gets plain lines.
   Upstream: celery/celery#8101 (open, celery 5.7.0).
   Remove when Celery routes these notices through logging, or accept two plain lines per
   shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from typing import Any


def shutdown_notices_as_json(name: str) -> None:
    """Have Celery's shutdown notices written as JSON log lines of process ``name`` (item 4)."""
    from celery.apps import worker as celery_worker

    def say(msg: str, f: Any = None) -> None:
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "WARNING",
            "process": name,
            "logger": "celery.apps.worker",
            "message": str(msg).strip(),
        }
        stream = f if f is not None else celery_worker.sys.__stderr__
        # As Celery's own: losing a notice must never stop a shutdown.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.write(stream.fileno(), (json.dumps(entry) + "\n").encode())

    celery_worker.safe_say = say
