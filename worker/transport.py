"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` client for each synchronous command it
runs (``Channel.conn_or_acquire``): the ack of every message, the note of every delivered
message in the unacked index, every event published. Building a client fills its table of
response callbacks, about 170 entries: measured in the worker, that was the largest single
cost per e-mail after the MIME build (README, "Benchmarks"). A ``redis.Redis`` client is safe
to share between threads (each command takes a connection from the pool), so this channel
keeps one per connection pool and gives it out every time. Everything else is kombu's own.

The worker selects it with ``broker_transport`` for ``redis://`` brokers (worker.app).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class SharedClient:
    """Channel mixin: one synchronous Redis client per connection pool, given out every time
    (put it first among the bases of any kombu Redis channel class)."""

    _shared_client: Any = None
    pool: Any

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()  # type: ignore[misc]
        return client


class Channel(SharedClient, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel
