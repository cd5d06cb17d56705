"""Each guarantee of docs/design.md against its mechanism, in real Redis: the claim, the final
check, the attempt counted before SMTP, the deadline, the content drop, the TTL, the due-set
lease, and what a refused or accepted request leaves in the queue.

The delivery tests run :class:`worker.delivery.Delivery` with a recording transport (the logic
under test is the store's and the delivery's, not SMTP's). The API tests use a Redis database
that no worker reads, so whatever a request queued is still there to be counted.
``make mutate`` breaks each mechanism in turn and checks that these tests catch it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import message_from_bytes
from email.policy import default
from xml.etree import ElementTree as ET

import pytest
import redis
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.errors import TransientDelivery
from mailgate.jobs import QUEUE, EmailJob
from mailgate.status import DUE_KEY, Outcome, Record, Status, StatusStore
from mailgate.users import UserStore
from tests.conftest import SEED_PASSWORD, SEED_USER, MakeApp
from tests.support import RedisServer, SmtpServer, count_records, wait_for
from worker.delivery import Delivery

QUIET_DB = 11
"""A database of the session's Redis that no worker consumes: queued tasks stay put."""


@dataclass
class Recorder:
    """A transport that records each send; ``gate`` holds a send open, ``fail`` defers it."""

    store: StatusStore
    sent: list[str] = field(default_factory=list)
    seen_attempts: list[str | None] = field(default_factory=list)
    gate: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    fail: str = ""

    def send(self, data: bytes, sender: str, recipients: list[str]) -> str:
        message = message_from_bytes(data, policy=default)
        email_id = str(message["Message-ID"]).strip("<>").split("@")[0]
        # What the store says while SMTP is being talked: the attempt must be counted already.
        self.seen_attempts.append(self.store.redis.hget(f"mailgate:email:{email_id}", "attempts"))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise TransientDelivery(self.fail, self.fail)
        self.sent.append(email_id)
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def quiet(settings: Settings, redis_server: RedisServer) -> Iterator[Settings]:
    """The session's settings on a database no worker reads, emptied before and after."""
    url = f"redis://127.0.0.1:{redis_server.port}/{QUIET_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield replace(settings, redis_url=url, broker_url=url)
    client.flushdb()


@pytest.fixture
def store(quiet: Settings) -> StatusStore:
    return StatusStore.from_url(quiet.redis_url, quiet.status_ttl_seconds)


@pytest.fixture
def recorder(store: StatusStore) -> Recorder:
    return Recorder(store)


@pytest.fixture
def delivery(store: StatusStore, recorder: Recorder, quiet: Settings) -> Delivery:
    return Delivery(store=store, transport=recorder, settings=quiet)


def new_job(**fields: object) -> EmailJob:
    values: dict[str, object] = {
        "email_id": str(uuid.uuid4()),
        "owner": SEED_USER,
        "sender": "s@domain.com",
        "recipients": ("r@x.example",),
        "message": "the body",
    }
    values.update(fields)
    return EmailJob(**values)  # type: ignore[arg-type]


def queued(store: StatusStore, job: EmailJob | None = None) -> EmailJob:
    job = job or new_job()
    store.create(job, watchdog_at=time.time() + 60)
    return job


# --- the claim, the final check, the attempt count --------------------------------------------


def test_a_second_claim_on_an_email_being_sent_is_refused(store: StatusStore) -> None:
    job = queued(store)
    record = store.start_attempt(job.email_id, "worker-a", 30, time.time() + 60)
    assert isinstance(record, Record) and record.status is Status.SENDING
    assert store.start_attempt(job.email_id, "worker-b", 30, time.time() + 60) is Outcome.BUSY
    assert store.get(job.email_id).attempts == 1  # type: ignore[union-attr]


def test_two_workers_racing_for_one_email_send_it_once(
    store: StatusStore, recorder: Recorder, delivery: Delivery
) -> None:
    job = queued(store)
    recorder.gate = threading.Event()
    outcomes: list[Outcome] = []
    first = threading.Thread(target=lambda: outcomes.append(delivery.deliver(job.email_id)))
    first.start()
    assert recorder.entered.wait(10), "the first worker never reached SMTP"
    second = delivery.deliver(job.email_id)  # the same task, redelivered to another worker
    recorder.gate.set()
    first.join(10)
    assert (outcomes, second) == ([Outcome.SENT], Outcome.BUSY)
    assert recorder.sent == [job.email_id]


@pytest.mark.parametrize("final", [Status.SENT, Status.FAILED], ids=["sent", "failed"])
def test_a_final_email_is_acknowledged_without_sending(
    store: StatusStore, recorder: Recorder, delivery: Delivery, final: Status
) -> None:
    job = queued(store)
    if final is Status.SENT:
        store.mark_sent(job.email_id, 1, "250 ok")
    else:
        store.mark_failed(job.email_id, 1, "550 no")
    assert delivery.deliver(job.email_id) == Outcome.ALREADY_FINAL
    record = store.get(job.email_id)
    assert record is not None and (record.status, record.attempts) == (final, 0)
    assert recorder.sent == []


def test_the_attempt_is_counted_before_smtp_is_touched(
    store: StatusStore, recorder: Recorder, delivery: Delivery
) -> None:
    job = queued(store)
    assert delivery.deliver(job.email_id) == Outcome.SENT
    # Had the worker died inside SMTP, this count would already be in Redis.
    assert recorder.seen_attempts == ["1"]


def test_an_email_whose_attempts_are_used_up_fails_without_smtp(
    store: StatusStore, recorder: Recorder, delivery: Delivery, quiet: Settings
) -> None:
    job = queued(store)
    for n in range(quiet.max_attempts):  # each one died with its worker, mid-SMTP
        claimed = store.start_attempt(job.email_id, f"dead-{n}", 0.001, time.time() + 60)
        assert isinstance(claimed, Record)
        time.sleep(0.002)  # the dead worker's lease lapses
    assert delivery.deliver(job.email_id) == Outcome.FAILED
    record = store.get(job.email_id)
    assert record is not None
    assert record.last_error == f"gave up after {quiet.max_attempts} attempts"
    assert recorder.sent == []


# --- the retry deadline ---------------------------------------------------------------------


def test_an_email_past_its_deadline_fails_expired_without_smtp(
    store: StatusStore, recorder: Recorder, delivery: Delivery, quiet: Settings
) -> None:
    job = queued(store)
    accepted = time.time() - quiet.retry_deadline_seconds - 1
    store.redis.hset(f"mailgate:email:{job.email_id}", "since", accepted)
    assert delivery.deliver(job.email_id) == Outcome.FAILED
    record = store.get(job.email_id)
    assert record is not None and (record.status, record.last_error) == (Status.FAILED, "expired")
    assert recorder.seen_attempts == []  # SMTP was never touched


def test_a_retry_that_would_fall_after_the_deadline_fails_now(
    store: StatusStore, recorder: Recorder, quiet: Settings
) -> None:
    # The back-off (at least 50 s) would land after the deadline, 10 s from now.
    slow = replace(quiet, retry_base_seconds=100, retry_max_delay_seconds=1000)
    delivery = Delivery(store=store, transport=recorder, settings=slow)
    recorder.fail = "451 4.3.0 try later"
    job = queued(store)
    since = time.time() - slow.retry_deadline_seconds + 10
    store.redis.hset(f"mailgate:email:{job.email_id}", "since", since)
    assert delivery.deliver(job.email_id) == Outcome.FAILED
    record = store.get(job.email_id)
    assert record is not None and record.last_error == "expired; last error: 451 4.3.0 try later"
    assert store.redis.zscore(DUE_KEY, job.email_id) is None  # no retry is scheduled


# --- the content drop, the TTL --------------------------------------------------------------


def test_a_sent_email_keeps_no_content(
    store: StatusStore, recorder: Recorder, delivery: Delivery
) -> None:
    job = queued(store, new_job(message="private body 5521", subject="private subject"))
    assert delivery.deliver(job.email_id) == Outcome.SENT
    stored = store.redis.hgetall(f"mailgate:email:{job.email_id}")
    assert stored["status"] == "Sent"
    assert "job" not in stored
    assert not any("private" in value for value in stored.values())
    assert store.requeue(job.email_id, time.time()) is False  # nothing left to send again


def test_the_worker_drops_the_content_of_what_it_sent(
    client: FlaskClient, settings: Settings, worker: object, smtp_server: SmtpServer
) -> None:
    email_id = accept(client, Message="private body 7713")
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)

    def sent() -> bool:
        record = store.get(email_id)
        return record is not None and record.status is Status.SENT

    wait_for(sent, 30, "the e-mail to be sent")
    assert smtp_server.handler.count(email_id) == 1
    assert store.redis.hget(f"mailgate:email:{email_id}", "job") is None


def test_a_status_record_expires_after_its_ttl(
    make_app: MakeApp, quiet: Settings, users: UserStore
) -> None:
    client = make_app(quiet, status_ttl_seconds=2).test_client()
    email_id = accept(client)
    assert status(client, email_id)["Code"] == "200"
    wait_for(lambda: status(client, email_id)["Code"] == "404", 10, "the record to expire")
    assert status(client, email_id)["Message"] == "Email not found"


def test_the_ttl_counts_from_the_last_change(
    make_app: MakeApp, quiet: Settings, users: UserStore
) -> None:
    # The app is built and the credentials verified (argon2) before the 2 s start to run, so
    # the read below costs one Redis call however slow the machine is.
    client = make_app(quiet, status_ttl_seconds=2).test_client()
    assert status(client, str(uuid.uuid4()))["Code"] == "404"
    short = StatusStore.from_url(quiet.redis_url, 2)
    job = queued(short)
    short.redis.expire(f"mailgate:email:{job.email_id}", 1000)  # as if accepted long ago
    short.mark_sent(job.email_id, 1, "250 ok")
    assert status(client, job.email_id)["Status"] == "Sent"
    for key in (f"mailgate:email:{job.email_id}", f"mailgate:email:{job.email_id}:history"):
        assert 0 < short.redis.ttl(key) <= 2
    wait_for(lambda: status(client, job.email_id)["Code"] == "404", 10, "the record to expire")
    assert count_records(short.redis) == 0


# --- the due set ----------------------------------------------------------------------------


def test_a_due_email_is_taken_by_one_scheduler_until_its_lease_ends(store: StatusStore) -> None:
    ids = [queued(store).email_id for _ in range(5)]
    now = time.time() + 61  # every watchdog has fired
    first = store.take_due(now, 100, lease_seconds=30)
    assert sorted(first) == sorted(ids)
    assert store.take_due(now + 1, 100, lease_seconds=30) == []  # a second scheduler, leased
    assert sorted(store.take_due(now + 31, 100, lease_seconds=30)) == sorted(ids)


def test_concurrent_schedulers_never_take_the_same_email(store: StatusStore) -> None:
    ids = {queued(store).email_id for _ in range(200)}
    now = time.time() + 61
    taken: list[list[str]] = [[], [], [], []]

    def scheduler(mine: list[str]) -> None:
        own = StatusStore.from_url(_url(store), store.ttl)  # a connection of its own
        while batch := own.take_due(now, 7, lease_seconds=30):
            mine.extend(batch)

    threads = [threading.Thread(target=scheduler, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    every = [email_id for mine in taken for email_id in mine]
    assert sorted(every) == sorted(ids)  # each one taken, and by exactly one


def _url(store: StatusStore) -> str:
    kwargs = store.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


# --- what requests leave in the queue -------------------------------------------------------


def send(**params: str) -> dict[str, str]:
    return {
        "command": "SendEmail",
        "Recipient": "abc@anotherdomain.com",
        "Message": "Hi",
        "Username": SEED_USER,
        "Password": SEED_PASSWORD,
        **params,
    }


def parse(body: bytes) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(body)}


def accept(client: FlaskClient, **params: str) -> str:
    body = parse(client.get("/api", query_string=send(**params)).data)
    assert body["Code"] == "200", body
    return body["EmailId"]


def status(client: FlaskClient, email_id: str) -> dict[str, str]:
    query = {
        "command": "GetEmailStatus",
        "EmailId": email_id,
        "Username": SEED_USER,
        "Password": SEED_PASSWORD,
    }
    return parse(client.get("/api", query_string=query).data)


def footprint(client: redis.Redis) -> tuple[int, int, int, int]:
    """What an accepted e-mail adds: a queued task, a record, a due entry, idempotency keys."""
    idem = sum(1 for _ in client.scan_iter("mailgate:idem:*"))
    return client.llen(QUEUE), count_records(client), client.zcard(DUE_KEY), idem


INVALID = [
    ("recipient-empty", {"Recipient": ""}, "Recipient"),
    ("recipient-garbage", {"Recipient": "no-at-sign"}, "Recipient"),
    ("recipient-bcc", {"Recipient": "a@b.example\nBcc: c@d.example"}, "Recipient"),
    ("message-empty", {"Message": ""}, "Message"),
    ("subject-crlf", {"Subject": "x\r\nBcc: c@d.example"}, "Subject"),
    ("subject-too-long", {"Subject": "s" * 999}, "Subject"),
    ("sender-lf", {"Sender": "test@domain.com\nBcc: c@d.example"}, "Sender"),
    ("attachment-relative", {"Attachments": "file.pdf"}, "Attachments"),
    ("apiextension-lf", {"ApiExtension": "ext\n"}, "ApiExtension"),
    ("idempotency-key-reused", {"IdempotencyKey": "k-1", "Message": "other"}, "IdempotencyKey"),
]


@pytest.mark.parametrize(
    ("params", "name"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_a_refused_request_queues_nothing_while_redis_is_up(
    make_app: MakeApp, quiet: Settings, users: UserStore, params: dict[str, str], name: str
) -> None:
    client = make_app(quiet).test_client()
    broker = redis.Redis.from_url(quiet.redis_url)
    if "IdempotencyKey" in params:
        accept(client, IdempotencyKey=params["IdempotencyKey"])
    before = footprint(broker)
    body = parse(client.get("/api", query_string=send(**params)).data)
    assert (body["Code"], body["Message"]) == (
        "302",
        f"Missing or invalid parameter '{name}' for command 'SendEmail'",
    )
    assert footprint(broker) == before
    # The same count sees an accepted e-mail: the check above is not blind.
    accept(client)
    assert footprint(broker)[:3] == (before[0] + 1, before[1] + 1, before[2] + 1)


def test_no_password_or_content_sits_in_the_queue(
    make_app: MakeApp, quiet: Settings, users: UserStore
) -> None:
    client = make_app(quiet).test_client()
    by_query = accept(client, Message="queued body 8812", Recipient="someone@shop.example")
    basic = client.get(
        "/api",
        query_string={"command": "SendEmail", "Recipient": "x@shop.example", "Message": "m"},
        auth=(SEED_USER, SEED_PASSWORD),
    )
    by_header = parse(basic.data)["EmailId"]
    broker = redis.Redis.from_url(quiet.redis_url, decode_responses=True)
    messages = broker.lrange(QUEUE, 0, -1)
    assert len(messages) == 2  # both still wait: no worker reads this database
    assert by_query in "".join(messages) and by_header in "".join(messages)
    for secret in (SEED_PASSWORD, "queued body 8812", "someone@shop.example"):
        assert secret not in "".join(messages)
    assert not any(SEED_PASSWORD in value for value in every_value(broker))


def every_value(client: redis.Redis) -> list[str]:
    """Every key and value in the database, whatever its type."""
    found: list[str] = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        value = {
            "string": lambda k: client.get(k),
            "hash": lambda k: client.hgetall(k),
            "list": lambda k: client.lrange(k, 0, -1),
            "set": lambda k: client.smembers(k),
            "zset": lambda k: client.zrange(k, 0, -1),
        }[kind](key)
        found += [key, str(value)]
    return found
