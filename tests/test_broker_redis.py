"""Where the broker is: one answer to "is it Redis?", and /metrics reads the queue depth from
the broker's own Redis, even when that is another database or server than the status store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from mailgate.config import Settings
from mailgate.jobs import QUEUE
from mailgate.redisconn import is_redis
from tests.conftest import MakeApp
from tests.support import RedisServer


@pytest.mark.parametrize(
    ("url", "redis_"),
    [("redis://h:6379/0", True), ("rediss://h/1", True), ("unix:///tmp/r.sock", True),
     ("redis+sentinel://s1:26379,s2/mymaster/0", True), ("sentinel://s1:26379", True),
     ("amqp://guest@h//", False), ("amqps://h//", False), ("pyamqp://h//", False),
     ("redisx://h", False)],
    ids=["redis", "rediss", "unix", "sentinel", "kombu-sentinel", "amqp", "amqps", "pyamqp",
         "lookalike"],
)  # fmt: skip
def test_is_redis(url: str, redis_: bool) -> None:
    assert is_redis(url) is redis_


def scrape(app: Flask) -> dict[str, float]:
    body = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name in ("mailgate_queue_depth", "mailgate_redis_up")
    }


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "broker-redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("where", ["other-database", "other-server"])
def test_queue_depth_is_the_broker_list_length(
    settings: Settings,
    make_app: MakeApp,
    redis_server: RedisServer,
    other_server: RedisServer,
    where: str,
) -> None:
    if where == "other-database":
        broker_url = settings.redis_url.rsplit("/", 1)[0] + "/7"
    else:
        broker_url = f"redis://127.0.0.1:{other_server.port}/0"
    broker = redis.Redis.from_url(broker_url)
    broker.delete(QUEUE)
    try:
        broker.lpush(QUEUE, *[f"message-{n}" for n in range(5)])  # no worker reads this broker
        store_depth = redis_server.client().llen(QUEUE)
        assert store_depth != 5  # the store's own list would give another answer
        metrics = scrape(make_app(broker_url=broker_url))
        assert metrics == {"mailgate_redis_up": 1.0, "mailgate_queue_depth": 5.0}
    finally:
        broker.delete(QUEUE)


def test_rabbitmq_has_no_queue_depth_from_redis(make_app: MakeApp) -> None:
    metrics = scrape(make_app(broker_url="amqp://guest:guest@127.0.0.1:1//"))
    assert metrics == {"mailgate_redis_up": 1.0}


def test_the_store_redis_as_broker_reports_its_own_list(
    settings: Settings, app: Flask, redis_server: RedisServer
) -> None:
    assert settings.broker_url == settings.redis_url
    depth = redis_server.client().llen(QUEUE)  # the session worker drains it: usually 0
    assert scrape(app)["mailgate_queue_depth"] in (depth, 0.0)
