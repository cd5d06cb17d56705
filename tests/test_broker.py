"""The API's one-round-trip publish writes exactly what kombu would, and a worker runs it."""

from __future__ import annotations

import json
from typing import Any

import redis

from mailgate.broker import make_celery, publish, redis_task_message
from mailgate.config import Settings
from mailgate.jobs import QUEUE
from tests.support import RedisServer


def _differences(kombu: Any, ours: Any, path: str = "") -> list[str]:
    if isinstance(kombu, dict) and isinstance(ours, dict):
        found = []
        for key in sorted(set(kombu) | set(ours)):
            found += _differences(
                kombu.get(key, "<missing>"), ours.get(key, "<missing>"), f"{path}/{key}"
            )
        return found
    return [] if kombu == ours else [path]


def test_our_message_is_kombus_message(settings: Settings, redis_server: RedisServer) -> None:
    scratch = redis_server.url.rsplit("/", 1)[0] + "/2"  # a database no worker consumes
    app = make_celery(Settings.from_env({"MAILGATE_REDIS_URL": scratch}))
    client = redis.Redis(port=redis_server.port, db=2, decode_responses=True)
    client.delete(QUEUE)
    email_id = "22222222-2222-4222-8222-222222222222"
    publish(app, email_id)
    from_kombu = json.loads(client.lpop(QUEUE))
    ours = json.loads(redis_task_message(app, email_id))
    # Only the per-message delivery tag differs.
    assert _differences(from_kombu, ours) == ["/properties/delivery_tag"]
