"""The worker's group-committed status store writes exactly what the plain store writes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from mailgate.jobs import EmailJob
from mailgate.status import (
    DUE_KEY,
    METRICS_KEY,
    REPORTS_DUE_KEY,
    StatusStore,
    claim_key,
    status_index_key,
)
from mailgate.status.counters import LAST_OUTCOME
from mailgate.status.group_commit import BatchedStatusStore, GroupCommit
from mailgate.status.records import Outcome, Record, Status
from tests.support import RedisServer

SCRATCH_DB = 3  # a database no worker of the session consumes


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port, db=SCRATCH_DB, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()


def _job(email_id: str) -> EmailJob:
    return EmailJob(
        email_id,
        "acct",
        "a@b.example",
        ("c@d.example",),
        "body",
        "subject",
        callback_url="https://hooks.example/x",
    )


VOLATILE = ("updated_at", "created_at", "since", "sent_at", "next_attempt_at", "job")
"""Fields whose values differ between any two e-mails (times; the job holds its EmailId): the
comparison takes their presence only, so a field one store drops and the other keeps shows."""


def _state(client: redis.Redis, store: StatusStore, email_id: str) -> dict[str, Any]:
    record = client.hgetall(f"mailgate:email:{email_id}")
    history = [h.rsplit('"at":', 1)[0] for h in client.lrange(f"{store_key(email_id)}", 0, -1)]
    return {
        "fields": sorted(record),
        "values": {name: value for name, value in record.items() if name not in VOLATILE},
        "history": history,
        # Renewed by the outcome: the record was made to look older (a longer TTL) before it.
        "ttl": 0 < client.ttl(f"mailgate:email:{email_id}") <= 3600,
        "history_ttl": 0 < client.ttl(store_key(email_id)) <= 3600,
        "due": client.zscore(DUE_KEY, email_id) is not None,
        "report_due": client.zscore(REPORTS_DUE_KEY, email_id) is not None,
        "claim": client.exists(claim_key(email_id)),
        "failed_index": client.zscore(status_index_key(Status.FAILED), email_id) is not None,
    }


def store_key(email_id: str) -> str:
    return f"mailgate:email:{email_id}:history"


OUTCOMES = {
    "sent": lambda s, i, t: s.mark_sent(
        i, 1, "250 2.0.0 Ok", token=t, latency=0.3, report_due=time.time() + 60
    ),
    "retry": lambda s, i, t: s.mark_retry(
        i, 1, "deferred", "451 4.3.0 later", time.time() + 9, token=t
    ),
    "failed": lambda s, i, t: s.mark_failed(
        i, 1, "refused", "550 5.1.1 no", token=t, report_due=time.time() + 60
    ),
    "failed-no-token": lambda s, i, t: s.mark_failed(i, 2, "gave up"),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES), ids=list(OUTCOMES))
def test_outcomes_write_what_the_plain_store_writes(client: redis.Redis, outcome: str) -> None:
    plain, batched = StatusStore(client, 3600), BatchedStatusStore(client, 3600)
    states, metrics = [], []
    for store in (plain, batched):
        client.delete(METRICS_KEY)
        email_id = uuid.uuid4().hex
        store.create(_job(email_id), time.time() + 60)
        record = store.start_attempt(email_id, "tok", 30, time.time() + 60)
        assert isinstance(record, Record) and record.attempts == 1
        client.expire(f"mailgate:email:{email_id}", 10**6)  # as if accepted long ago
        before = time.time()
        OUTCOMES[outcome](store, email_id, "tok")
        states.append(_state(client, store, email_id))
        counters = client.hgetall(METRICS_KEY)
        # The stall metric: when a worker last recorded an outcome (its value is the time).
        assert before <= float(counters.pop(LAST_OUTCOME)) <= time.time()
        metrics.append(counters)
    assert states[0] == states[1]
    assert metrics[0] == metrics[1]
    # What each outcome must have written, so that the comparison saw real writes.
    state = states[0]
    assert state["history"] and state["ttl"] and state["history_ttl"]
    assert state["report_due"] == (outcome in ("sent", "failed"))
    assert ("job" in state["fields"]) == (outcome != "sent")  # a Sent e-mail keeps no content
    assert ("next_attempt_at" in state["fields"]) == (outcome == "retry")
    assert ("pending" in state["fields"]) == (outcome == "retry")  # final: off the quota
    assert state["due"] == (outcome == "retry")
    assert bool(state["claim"]) == (outcome == "failed-no-token")  # released only with its token
    assert state["failed_index"] == outcome.startswith("failed")


def test_batched_claims_treat_cancelled_and_final_as_final(client: redis.Redis) -> None:
    store = BatchedStatusStore(client, 3600)
    cancelled, sent, queued = (uuid.uuid4().hex for _ in range(3))
    for email_id in (cancelled, sent, queued):
        store.create(_job(email_id), time.time() + 60)
    assert store.cancel(cancelled)[0] is Status.CANCELLED
    store.start_attempt(sent, "t", 30, time.time() + 60)
    store.mark_sent(sent, 1, "250 ok", token="t")
    items = [(i, "tok", 30.0, time.time() + 60) for i in (cancelled, sent, queued, "gone")]
    verdicts = store._run_starts(items)  # one pipelined batch
    assert verdicts[0] is Outcome.ALREADY_FINAL and verdicts[1] is Outcome.ALREADY_FINAL
    assert isinstance(verdicts[2], Record) and verdicts[3] is Outcome.MISSING
    assert client.hget(f"mailgate:email:{cancelled}", "status") == "Cancelled"


def test_the_batched_store_keeps_the_replica_rule(client: redis.Redis) -> None:
    assert BatchedStatusStore(client, 3600).replicated()  # no rule: nothing to wait for
    strict = BatchedStatusStore(client, 3600, min_replicas=1)
    assert strict.min_replicas == 1
    assert not strict.replicated()  # a lone Redis has no replica to confirm the claim


def test_concurrent_claims_and_outcomes_share_round_trips(client: redis.Redis) -> None:
    store = BatchedStatusStore(client, 3600)
    ids = [uuid.uuid4().hex for _ in range(40)]
    for email_id in ids:
        store.create(_job(email_id), time.time() + 60)
    calls: list[int] = []
    original = store._run_starts

    def counting(items: list[Any]) -> list[Any]:
        calls.append(len(items))
        time.sleep(0.01)  # a round trip long enough for the other threads to queue up
        return original(items)

    store._starts._run = counting
    results: dict[str, bool] = {}

    def one(email_id: str) -> None:
        claimed = store.start_attempt(email_id, "tok-" + email_id, 30, time.time() + 60)
        store.mark_sent(email_id, 1, "250 ok", token="tok-" + email_id)
        results[email_id] = isinstance(claimed, Record)

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == dict.fromkeys(ids, True)
    assert sum(calls) == len(ids) and len(calls) < len(ids)  # batched, none lost
    assert all(client.hget(f"mailgate:email:{i}", "status") == "Sent" for i in ids)
    assert not any(client.exists(claim_key(i)) for i in ids)
    assert client.zcard(DUE_KEY) == 0


def test_a_failed_round_trip_raises_in_every_call_of_its_batch() -> None:
    def broken(items: list[int]) -> list[int]:
        raise ConnectionError("redis away")

    batch: GroupCommit[int, int] = GroupCommit(broken)
    with pytest.raises(ConnectionError):
        batch(1)
    ok: GroupCommit[int, int] = GroupCommit(lambda items: [i * 2 for i in items])
    assert ok(21) == 42  # and a later batch runs
