"""Stalled delivery is visible: /metrics says when work waits and no worker makes progress."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.jobs import QUEUE
from mailgate.status import StatusStore
from mailgate.status.counters import LAST_OUTCOME
from mailgate.status.keys import DUE_KEY, METRICS_KEY
from tests.conftest import MakeApp
from tests.support import RedisServer, wait_for

STALL_AFTER = 4.0  # twice the redelivery period below


@pytest.fixture
def stall_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A database of its own: no worker of the session consumes or publishes there."""
    client = redis.Redis(port=redis_server.port, db=7, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def metrics_client(settings: Settings, make_app: MakeApp, stall_db: redis.Redis) -> FlaskClient:
    url = settings.redis_url.rsplit("/", 1)[0] + "/7"
    mine = make_app(redis_url=url, broker_url=url, redelivery_seconds=STALL_AFTER / 2)
    return mine.test_client()


def scrape(client: FlaskClient) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.findall(
        r"^(mailgate_(?:delivery_stalled|seconds_since_last_delivery)) (\S+)$", text, re.MULTILINE
    )
    return {name: float(value) for name, value in found}


@pytest.mark.parametrize(
    ("queued", "overdue", "last_ago", "stalled"),
    [
        (0, 0, None, 0),  # idle, never delivered
        (0, 0, 100.0, 0),  # idle for long: nothing waits, nothing stalls
        (3, 0, 100.0, 1),  # tasks queued, no outcome for 100 s
        (3, 0, 1.0, 0),  # tasks queued, an outcome a second ago
        (0, 2, 100.0, 1),  # e-mails overdue, no outcome for 100 s
        (0, 2, None, 1),  # e-mails overdue and no worker ever recorded anything
        (3, 0, None, 0),  # queued just now on a fresh install: not yet a stall
    ],
    ids=[
        "idle",
        "idle-long",
        "queued-stale",
        "queued-fresh",
        "overdue-stale",
        "overdue-never",
        "queued-never",
    ],
)
def test_delivery_stalled_when_work_waits_without_progress(
    metrics_client: FlaskClient,
    stall_db: redis.Redis,
    queued: int,
    overdue: int,
    last_ago: float | None,
    stalled: int,
) -> None:
    now = time.time()
    for i in range(queued):
        stall_db.lpush(QUEUE, f"task-{i}")
    for i in range(overdue):
        stall_db.zadd(DUE_KEY, {f"email-{i}": now - 60})
    if last_ago is not None:
        stall_db.hset(METRICS_KEY, LAST_OUTCOME, now - last_ago)
    got = scrape(metrics_client)
    assert got["mailgate_delivery_stalled"] == stalled
    if last_ago is None:
        assert "mailgate_seconds_since_last_delivery" not in got
    else:
        assert got["mailgate_seconds_since_last_delivery"] == pytest.approx(last_ago, abs=2)


def test_every_recorded_outcome_marks_progress(stall_db: redis.Redis) -> None:
    before = time.time()
    store = StatusStore(stall_db, 3600)
    store.mark_retry("email-x", 1, "451 try later", "451 try later", time.time() + 60)
    assert float(stall_db.hget(METRICS_KEY, LAST_OUTCOME) or 0) >= before


def test_a_real_delivery_marks_progress(
    settings: Settings, worker: object, api_url: str, smtp_server: object
) -> None:
    """The session's worker delivers one e-mail: the counter it bumps carries the time."""
    from tests.system.test_e2e import send

    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    before = time.time()
    email_id = send(api_url, Recipient="progress@example.com", Message="m")
    wait_for(lambda: (r := store.get(email_id)) is not None and r.status == "Sent", 30, "Sent")
    assert float(store.redis.hget(METRICS_KEY, LAST_OUTCOME) or 0) >= before
