"""The worker's kombu Redis channel keeps one Redis client instead of one per command."""

from __future__ import annotations

from kombu import Connection

from tests.support import RedisServer
from worker.transport import Transport


def test_the_channel_reuses_one_client_and_still_moves_messages(redis_server: RedisServer) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/4"  # a database no worker consumes
    with Connection(url, transport=Transport) as connection:
        channel = connection.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        assert channel._create_client(asynchronous=True) is not first  # kombu's own, per call
        queue = connection.SimpleQueue("transport-test")
        try:
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            assert message.payload == {"n": 1}
            message.ack()
            assert channel._create_client() is first
        finally:
            queue.clear()
            queue.close()
