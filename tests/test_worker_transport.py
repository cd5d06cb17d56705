"""kombu's Redis channels (mailgate.broker_transport) keep one Redis client instead of one per
command, on top of the closed-connection fix, for redis, rediss and sentinel URLs alike."""

from __future__ import annotations

import pytest
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES, resolve_transport

from mailgate import broker_transport
from mailgate.broker_transport import SentinelChannel, SharedClient, _ClosedConnectionGuard
from tests.support import RedisServer


@pytest.mark.parametrize("scheme", ["redis", "rediss", "sentinel"])
def test_every_redis_scheme_gets_both_fixes(scheme: str) -> None:
    broker_transport.install()
    channel = resolve_transport(TRANSPORT_ALIASES[scheme]).Channel
    mro = channel.__mro__
    assert mro[1] is SharedClient
    assert _ClosedConnectionGuard in mro
    assert (scheme == "sentinel") == issubclass(channel, SentinelChannel)


def test_the_channel_reuses_one_client_and_still_moves_messages(redis_server: RedisServer) -> None:
    broker_transport.install()
    url = redis_server.url.rsplit("/", 1)[0] + "/4"  # a database no worker consumes
    with Connection(url) as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker_transport.Channel)
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
