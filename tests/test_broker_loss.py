"""Broker loss at any moment: the worker lives on and every accepted e-mail ends Sent.

The crash this guards against (kombu 5.7.0, Celery 5.7.0): when the Redis connection drops
while the consumer's channel waits on BRPOP with unacknowledged messages, Celery's
``on_connection_error_after_connected`` calls ``connection.collect()`` and then
``connection.close()``. In ``collect()``, the channel's ``close()`` fails at its first step
(reading the pending BRPOP reply off the dead socket), so the channel stays open; ``collect()``
then clears the transport's ``client``. ``close()`` closes the channel again, which now
restores the unacknowledged messages through a new connection pool built from
``transport.client`` (None): ``AttributeError: 'NoneType' object has no attribute
'hostname'``, not a connection error, so Celery calls it unrecoverable and the worker exits.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.utils.threads import bound_open_broker_sockets
from celery.worker.consumer.consumer import COLLECT_SOCKET_TIMEOUT
from kombu import Connection, Consumer, Exchange, Queue
from kombu.common import ignore_errors
from kombu.message import Message

from mailgate.broker import transport_for
from tests.support import RedisServer

STOCK = "redis"
OURS = transport_for("redis://127.0.0.1/0")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("broker-loss")) / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def up(broker: RedisServer) -> RedisServer:
    if broker.proc is None or broker.proc.poll() is not None:
        broker.start()
    return broker


def _connection(server: RedisServer, transport: str | None, visibility: int = 3600) -> Connection:
    return Connection(
        server.url,
        transport=transport,
        transport_options={"visibility_timeout": visibility, "unacked_restore_interval": 1},
    )


def _drain(conn: Connection, until: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out draining the broker"
        with contextlib.suppress(TimeoutError, socket.timeout):
            conn.drain_events(timeout=0.2)


def _lose_the_broker_mid_consume(server: RedisServer, transport: str | None, name: str) -> None:
    """What a worker's connection holds when Redis goes away under load, then the teardown
    Celery's consumer does after a connection error.

    The task channel (the default channel) has 10 messages delivered and unacknowledged and a
    BRPOP pending for more; a second channel consumes a fanout queue, as the remote-control
    (pidbox) consumer does, so closing it needs Redis too.
    """
    queue = Queue(name, Exchange(name), name)
    conn = _connection(server, transport)
    with conn.Producer() as producer:
        for i in range(10):
            producer.publish({"n": i}, exchange=queue.exchange, routing_key=name, declare=[queue])
    received: list[Message] = []
    consumer = conn.Consumer(queue, callbacks=[lambda body, msg: received.append(msg)])
    consumer.qos(prefetch_count=20)  # room for more: the channel keeps a BRPOP pending
    consumer.consume()
    control = Queue(f"{name}.pidbox", Exchange(f"{name}.bcast", type="fanout"), auto_delete=True)
    Consumer(conn.channel(), [control], no_ack=True, callbacks=[lambda b, m: None]).consume()
    task_channel = conn.default_channel
    _drain(conn, lambda: len(received) == 10 and task_channel._in_poll)
    server.proc.kill()  # type: ignore[union-attr]
    server.proc.wait(10)  # type: ignore[union-attr]
    # celery.worker.consumer.Consumer.on_connection_error_after_connected, line for line:
    bound_open_broker_sockets(conn, COLLECT_SOCKET_TIMEOUT)
    with contextlib.suppress(Exception):
        conn.collect(socket_timeout=COLLECT_SOCKET_TIMEOUT)
    ignore_errors(conn, conn.close)


def test_stock_kombu_still_crashes_on_this_path(up: RedisServer) -> None:
    """The reproduction: if this fails, kombu fixed the bug and mailgate.broker_transport can
    go (see the module docstring)."""
    with pytest.raises(AttributeError, match="hostname"):
        _lose_the_broker_mid_consume(up, STOCK, "bl-stock")


def test_our_transport_survives_and_the_unacked_come_back(up: RedisServer) -> None:
    _lose_the_broker_mid_consume(up, OURS, "bl-ours")  # no exception
    up.start()
    queue = Queue("bl-ours", Exchange("bl-ours"), "bl-ours")
    seen: set[int] = set()
    conn = _connection(up, OURS, visibility=1)

    def on_message(body: dict[str, int], message: Message) -> None:
        seen.add(body["n"])
        message.ack()

    with conn.Consumer(queue, callbacks=[on_message]):
        # The dead channel could not restore them (Redis was down): the visibility timeout does.
        _drain(conn, lambda: seen == set(range(10)), timeout=20)
    conn.release()


@pytest.mark.parametrize("transport", [STOCK, OURS], ids=["stock", "ours"])
def test_a_channel_outliving_its_connection_fails_with_a_connection_error(
    up: RedisServer, transport: str
) -> None:
    """Whatever else leaves a channel open when ``collect()`` drops the transport's client
    (any channel's close failing first), closing it later, or a task thread's late ack on it,
    must raise an error Celery treats as a lost connection ("Couldn't ack", reconnect), not
    one that stops the worker."""
    name = f"bl-outlive-{transport}"
    queue = Queue(name, Exchange(name), name)
    conn = _connection(up, transport)
    with conn.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
    received: list[Message] = []
    conn.Consumer(queue, callbacks=[lambda body, msg: received.append(msg)]).consume()
    _drain(conn, lambda: received)
    errors = conn.connection_errors
    conn._do_close_transport()  # what collect() does once its channel closing has given up
    expected = AttributeError if transport == STOCK else errors
    with pytest.raises(expected):
        received[0].channel.close()
    with pytest.raises(expected):
        received[0].ack()
