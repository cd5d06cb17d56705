"""worker.pool.Acks, the logic alone: which messages are acknowledged together, and when.

Fakes stand for kombu's channels here; tests/test_worker_transport.py checks ``ack_many`` on a
real Redis, and the guarantee tests run it inside real workers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import wait_for
from worker.pool import Acks


class BatchQoS:
    """A channel QoS that acknowledges several messages at once, as BatchAcks does."""

    def __init__(self, fail: type[BaseException] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def ack_many(self, tags: list[str]) -> None:
        if self.fail is not None:
            raise self.fail("connection lost")
        self.calls.append(list(tags))


@dataclass
class Channel:
    qos: Any


class AmqpChannel:
    """A pyamqp channel: no ``qos`` attribute, acks are frames sent one by one."""


@dataclass
class Message:
    channel: Channel | AmqpChannel
    delivery_tag: str
    acked: list[tuple[Any, Any]] = field(default_factory=list)

    def ack_log_error(self, logger: Any, errors: Any) -> None:
        self.acked.append((logger, errors))


def test_messages_finished_together_share_one_ack() -> None:
    qos = BatchQoS()
    channel = Channel(qos)
    acks = Acks(interval=0.2)
    for n in range(10):
        acks.ack(Message(channel, f"tag-{n}"))
    assert qos.calls == []  # not yet: later ones may join
    wait_for(lambda: qos.calls, 5, "the group's ack")
    assert qos.calls == [[f"tag-{n}" for n in range(10)]]


def test_one_round_trip_per_channel() -> None:
    first, second = BatchQoS(), BatchQoS()
    channels = [Channel(second), Channel(first)]
    acks = Acks(interval=60)  # only the explicit flush below
    for n in range(4):
        acks.ack(Message(channels[n % 2], f"tag-{n}"))
    acks.flush()
    assert first.calls == [["tag-1", "tag-3"]] and second.calls == [["tag-0", "tag-2"]]
    acks.flush()  # nothing left
    assert len(first.calls) == len(second.calls) == 1


@pytest.mark.parametrize(
    "channel", [Channel(object()), AmqpChannel()], ids=["qos-without-ack-many", "amqp"]
)
def test_a_channel_without_ack_many_acks_each_message_at_once(channel: Any) -> None:
    errors = (ConnectionError,)
    acks = Acks(errors)
    message = Message(channel, "tag")
    acks.ack(message)
    assert message.acked == [(logging.getLogger("worker.pool"), errors)]


def test_a_lost_connection_is_logged_and_later_acks_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, working = BatchQoS(fail=ConnectionError), BatchQoS()
    acks = Acks((ConnectionError,), interval=0.05)
    acks.ack(Message(Channel(broken), "lost"))
    wait_for(lambda: "Couldn't ack 1 messages" in caplog.text, 5, "the failed ack's log line")
    acks.ack(Message(Channel(working), "kept"))
    wait_for(lambda: working.calls, 5, "the next group's ack")
    assert working.calls == [["kept"]]


def test_acks_from_many_threads_are_each_sent_once() -> None:
    qos = BatchQoS()
    channel = Channel(qos)
    acks = Acks(interval=0.01)

    def finish(offset: int) -> None:
        for n in range(offset, 400, 8):
            acks.ack(Message(channel, f"tag-{n}"))
            time.sleep(0.0005)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    wait_for(lambda: sum(len(call) for call in qos.calls) >= 400, 5, "every ack")
    acked = [tag for call in qos.calls for tag in call]
    assert sorted(acked) == sorted(f"tag-{n}" for n in range(400))
    assert len(qos.calls) < 400  # grouped
