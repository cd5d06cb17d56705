"""kombu's Redis channels (mailgate.broker_transport) keep one Redis client instead of one per
command, on top of the closed-connection fix, for redis, rediss and sentinel URLs alike, and
acknowledge several messages in one round trip."""

from __future__ import annotations

from pathlib import Path

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


def test_ack_many_acknowledges_several_messages_in_one_round_trip(tmp_path: Path) -> None:
    """What kombu's ack does for one message (off the unacked index and hash, out of the
    channel's prefetch count), for five at once: one MULTI/EXEC, and none of them restored
    when the connection closes."""
    broker_transport.install()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        client = server.client()
        with Connection(server.url) as connection:
            channel = connection.default_channel
            qos = channel.qos
            assert isinstance(qos, broker_transport.BatchAcks)
            queue = connection.SimpleQueue("acks-test")
            for n in range(5):
                queue.put({"n": n})
            messages = [queue.get(timeout=5) for _ in range(5)]
            assert client.hlen(channel.unacked_key) == 5
            client.config_resetstat()
            qos.ack_many([m.delivery_tag for m in messages])
            calls = {name: stats["calls"] for name, stats in client.info("commandstats").items()}
            assert client.hlen(channel.unacked_key) == 0
            assert client.zcard(channel.unacked_index_key) == 0
            assert len(qos._delivered) - len(qos._dirty) == 0  # free for more prefetch
            queue.close()
        assert calls.get("cmdstat_exec") == 1 and calls.get("cmdstat_zrem") == 1
        assert calls.get("cmdstat_hdel") == 1
        assert client.llen("acks-test") == 0  # nothing came back on close
    finally:
        server.stop()
