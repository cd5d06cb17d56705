"""kombu's Redis transports, fixed so that a connection lost mid-consume cannot stop a worker,
and able to acknowledge several messages in one round trip.

kombu 5.7.0 (the newest release) crashes a Celery worker when the Redis connection drops while
the consumer's channel waits on BRPOP with unacknowledged messages (tests/test_broker_loss.py
reproduces it):

1. Celery's consumer calls ``connection.collect()``. The channel's ``close()`` starts by
   reading the pending BRPOP reply; on the dead socket that raises a connection error, which
   ``collect()`` ignores, so the channel is left open, its unacknowledged messages unrestored.
   ``collect()`` then sets ``transport.client`` to None.
2. ``connection.close()`` closes the channel again. Now it restores those messages through a
   new connection pool, built from ``transport.client.hostname``: an ``AttributeError``, which
   is no connection error, so Celery stops the worker ("Unrecoverable error").

Here a channel whose connection is already gone raises a connection error instead, as it would
if Redis were unreachable: Celery's teardown ignores it and reconnects, the messages (still in
Redis's unacked index) come back after the visibility timeout, and an ack from a task that
finishes late is logged as "Couldn't ack" (the message is delivered again later, and the
delivery's claim finds it already Sent).

kombu's Redis channel acknowledges a message with a round trip of its own (ZREM from the
unacked index, HDEL from the unacked hash). :meth:`BatchAcks.ack_many` does the same for
several messages in one (worker.batch gathers the acks of deliveries that finished together).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class _ClosedConnectionGuard:
    """Mixin for kombu's Redis channel classes: a channel whose connection is gone raises a
    connection error, not an AttributeError (the crash the module docstring describes)."""

    connection: Any

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel is closed")
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params


class SharedClient:
    """Mixin for kombu's Redis channel classes: one synchronous Redis client per connection
    pool, given out every time, rather than a new client per call (docs/design.md, "How the
    worker runs deliveries": the acks of many threads)."""

    _shared_client: Any = None
    pool: Any

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        client = self._shared_client
        # ``pool`` of a closed channel raises (the guard): no client outlives its connection.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[misc]
        return client


class BatchAcks(kombu_redis.QoS):
    """kombu's Redis QoS (ack emulation), with :meth:`ack_many`."""

    def ack_many(self, delivery_tags: Sequence[str]) -> None:
        """Acknowledge these messages with one MULTI/EXEC: what ``ack`` does for each."""
        if not delivery_tags:
            return
        with self.pipe_or_acquire() as pipe:
            pipe.zrem(self.unacked_index_key, *delivery_tags)
            pipe.hdel(self.unacked_key, *delivery_tags)
            pipe.execute()
        for tag in delivery_tags:
            virtual.QoS.ack(self, tag)  # type: ignore[no-untyped-call]  # prefetch bookkeeping


class Channel(SharedClient, _ClosedConnectionGuard, kombu_redis.Channel):
    QoS = BatchAcks


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(SharedClient, _ClosedConnectionGuard, kombu_redis.SentinelChannel):
    QoS = BatchAcks


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


FIXED = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": f"{__name__}:SentinelTransport",
}


def install() -> None:
    """Make kombu's ``redis``, ``rediss`` and ``sentinel`` schemes use these transports.

    Through kombu's alias table rather than Celery's ``broker_transport``, so everything else
    that hangs on the scheme stays as it is (TLS for ``rediss://``, the URL in the logs).
    """
    TRANSPORT_ALIASES.update(FIXED)
