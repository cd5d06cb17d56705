"""The worker's task events (mailgate.broker_events): from the event-loop thread only, the
events of many tasks in one message on a timer, and none lost to a reconnect's new dispatcher.

Publishing is recorded, not done: what is checked is which thread publishes what, and when.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Connection
from kombu.asynchronous import Hub, set_event_loop

from mailgate.broker import make_celery
from mailgate.broker_events import FLUSH_INTERVAL, LoopThreadDispatcher
from mailgate.config import Settings
from tests.support import wait_for

Published = list[tuple[str, int, int]]
"""(routing key, events in the message, publishing thread) of each publish."""


@pytest.fixture
def app() -> Celery:
    return make_celery(
        Settings.from_env({"MAILGATE_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"})
    )


@pytest.fixture
def hub() -> Iterator[Hub]:
    """An event loop as a worker's (its timers are fired by hand here)."""
    loop = set_event_loop(Hub())
    assert loop is not None
    yield loop
    set_event_loop(None)
    loop.close()


def recording(app: Celery, published: Published, **options: Any) -> LoopThreadDispatcher:
    """The app's dispatcher on an in-memory connection, noting what it would publish."""

    class Recording(app.events.Dispatcher):  # type: ignore[misc,name-defined]
        def _publish(self, event: Any, producer: Any, routing_key: str, **kwargs: Any) -> None:
            size = len(event) if isinstance(event, list) else 1
            published.append((routing_key, size, threading.get_ident()))

    dispatcher: LoopThreadDispatcher = Recording(
        Connection("memory://"), app=app, enabled=True, buffer_group=["task"], **options
    )
    return dispatcher


def send_from_task_threads(dispatcher: LoopThreadDispatcher, tasks: int, threads: int) -> None:
    """What the delivery threads do: started and succeeded for each task (received too)."""

    def run(offset: int) -> None:
        for n in range(offset, tasks, threads):
            for kind in ("task-received", "task-started", "task-succeeded"):
                dispatcher.send(kind, uuid=f"email-{n}")

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)


def test_under_an_event_loop_many_tasks_events_go_out_in_one_message(app: Celery, hub: Hub) -> None:
    published: Published = []
    asked: list[int] = []
    dispatcher = recording(app, published, on_send_buffered=lambda: asked.append(1))
    send_from_task_threads(dispatcher, tasks=100, threads=8)
    # Nothing yet, and the event loop was not asked to flush after each event.
    assert published == [] and asked == []
    time.sleep(FLUSH_INTERVAL)
    hub.fire_timers()  # the loop's next turn once the interval has passed
    assert published == [("task.multi", 300, threading.get_ident())]
    dispatcher.close()
    dispatcher.send("task-succeeded", uuid="after-close")
    time.sleep(FLUSH_INTERVAL)
    hub.fire_timers()
    assert len(published) == 1  # the closed dispatcher's timer is gone with it


def test_the_timer_keeps_flushing_while_events_come(app: Celery, hub: Hub) -> None:
    published: Published = []
    dispatcher = recording(app, published, on_send_buffered=lambda: None)
    for round_ in range(3):
        send_from_task_threads(dispatcher, tasks=10, threads=2)

        def flushed(expected: int = round_ + 1) -> bool:
            hub.fire_timers()
            return len(published) == expected

        wait_for(flushed, 5, "the timer's next flush")
    assert [size for _, size, _ in published] == [30, 30, 30]
    dispatcher.close()


def test_without_an_event_loop_celerys_own_buffering_stays(app: Celery) -> None:
    """No hub (a worker pool without an event loop): each buffered event asks for a flush,
    as in Celery, and still only this thread publishes."""
    published: Published = []
    asked: list[int] = []
    dispatcher = recording(app, published, buffer_limit=3, on_send_buffered=lambda: asked.append(1))
    send_from_task_threads(dispatcher, tasks=3, threads=1)
    assert published == [] and len(asked) == 9
    dispatcher.flush()
    assert published == [("task.multi", 9, threading.get_ident())]


def test_a_new_dispatcher_takes_over_the_buffered_task_events(app: Celery, hub: Hub) -> None:
    """On a reconnect Celery closes the dispatcher and hands its unsent events to the next
    one: the buffered task events too, not only those that failed to publish."""
    published: Published = []
    old = recording(app, published, on_send_buffered=lambda: None)
    send_from_task_threads(old, tasks=5, threads=1)
    old.close()
    new = recording(app, published, on_send_buffered=lambda: None)
    new.extend_buffer(old)
    new.flush()
    assert published == [("task.multi", 15, threading.get_ident())]
    new.close()
