"""Monitoring events published only from the worker's event-loop thread.

With the threads pool, Celery buffers each task's events and, once 24 are waiting, publishes
the batch from whichever task thread adds the 24th. On RabbitMQ with publisher confirms that
thread then reads the event connection's socket for the confirm, while the event loop also
reads that socket (for broker heartbeats): the two threads split frames between them, the
task thread waits forever for a confirm it will never see, holding the dispatcher's lock,
and every other task thread and the event loop itself then wait for that lock. The worker
stays connected and consumes nothing more (tests/test_broker_loss.py, RabbitMQ restart).

:class:`LoopThreadDispatcher` leaves a full buffer to the event loop, which flushes it soon
anyway (Celery asks it to after every buffered event), so only that thread uses the
connection.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher


class LoopThreadDispatcher(EventDispatcher):  # type: ignore[misc]
    """An event dispatcher that publishes only from the thread that created it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._owner = threading.get_ident()
        super().__init__(*args, **kwargs)

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        if self.on_send_buffered is not None and threading.get_ident() != self._owner:
            self.on_send_buffered()  # thread-safe: the event loop flushes on its next turn
            return
        super().flush(errors=errors, groups=groups)


class Events(CeleryEvents):  # type: ignore[misc]
    """Celery's events, with :class:`LoopThreadDispatcher` as the dispatcher."""

    dispatcher_cls = f"{__name__}:LoopThreadDispatcher"
