"""Monitoring events published only from the worker's event-loop thread, a few times a second.

With the threads pool, Celery buffers each task's events and, once 24 are waiting, publishes
the batch from whichever task thread adds the 24th. On RabbitMQ with publisher confirms that
thread then reads the event connection's socket for the confirm, while the event loop also
reads that socket (for broker heartbeats): the two threads split frames between them, the
task thread waits forever for a confirm it will never see, holding the dispatcher's lock,
and every other task thread and the event loop itself then wait for that lock. The worker
stays connected and consumes nothing more (tests/test_broker_loss.py, RabbitMQ restart).

:class:`LoopThreadDispatcher` leaves a full buffer to the event loop, so only that thread uses
the connection. And rather than flushing after every buffered event (Celery asks the loop to,
and under load that is one publish, one broker round trip on the loop thread, for every two or
three events), the loop flushes every :data:`FLUSH_INTERVAL`: a batch of e-mails' events in one
message. Flower sees each event that much later, and no fewer of them.

A patch on Celery's internals: see :mod:`mailgate.library_fixes` (item 2) for when it can go.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher
from kombu.asynchronous import get_event_loop

FLUSH_INTERVAL = 0.1
"""Seconds between two publishes of the buffered task events."""
BUFFER_LIMIT = 2000
"""Buffered events that make a publish at once (Celery's default is 24)."""


class LoopThreadDispatcher(EventDispatcher):  # type: ignore[misc]
    """An event dispatcher that publishes only from the thread that created it (the event
    loop's), every :data:`FLUSH_INTERVAL` seconds."""

    def __init__(self, *args: Any, on_send_buffered: Any = None, **kwargs: Any) -> None:
        self._owner = threading.get_ident()
        self._wake_loop = on_send_buffered
        """Asks the event loop to flush soon (thread-safe); None without an event loop."""
        hub = get_event_loop() if on_send_buffered is not None else None
        # With the timer, no flush per buffered event: the timer's flush takes them all.
        super().__init__(*args, on_send_buffered=None if hub else on_send_buffered, **kwargs)
        self._timer: Any = None
        if hub is not None:
            self.buffer_limit = BUFFER_LIMIT
            repeat: Any = hub.call_repeatedly
            self._timer = repeat(FLUSH_INTERVAL, self.flush)

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        if self._wake_loop is not None and threading.get_ident() != self._owner:
            self._wake_loop()  # thread-safe: the event loop flushes on its next turn
            return
        super().flush(errors=errors, groups=groups)

    def extend_buffer(self, other: EventDispatcher) -> None:
        """Take over a closed dispatcher's unsent events, the buffered task events too."""
        super().extend_buffer(other)
        for group, events in other._group_buffer.items():
            self._group_buffer[group].extend(events)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super().close()


class Events(CeleryEvents):  # type: ignore[misc]
    """Celery's events, with :class:`LoopThreadDispatcher` as the dispatcher."""

    dispatcher_cls = f"{__name__}:LoopThreadDispatcher"
