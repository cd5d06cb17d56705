"""SendAt parsing, the store's cancel step against a real Redis, and the upload spool."""

from __future__ import annotations

import os
import stat
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import redis

from mailgate.config import Settings
from mailgate.errors import InvalidParameter
from mailgate.jobs import QUEUE, Attachment, EmailJob
from mailgate.schedule import PAST_GRACE_SECONDS, max_ahead, parse_send_at
from mailgate.spool import create, discard_spooled, spool_root, sweep
from mailgate.status import DUE_KEY, Outcome, Record, Status, StatusStore
from mailgate.users import UserStore
from tests.conftest import SEED_PASSWORD, SEED_USER, MakeApp
from tests.support import RedisServer, wait_for
from worker.scheduler import Scheduler

QUIET_DB = 12
"""A database of this module's own: no worker of the session publishes from it."""

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),
        ("  ", None),
        ("90", NOW + 90),
        ("1.5", NOW + 1.5),
        (30, NOW + 30),
        ("2027-01-15T08:00:00Z", NOW),
        ("2027-01-15T09:00:00+01:00", NOW),
        ("2027-01-15T08:00:00.250+00:00", NOW + 0.25),
    ],
    ids=["empty", "blank", "seconds", "fraction", "json-number", "zulu", "offset", "millis"],
)
def test_send_at_accepts(raw: str | float, expected: float | None) -> None:
    assert parse_send_at(raw, Settings(), now=NOW) == expected


@pytest.mark.parametrize(
    "raw",
    ["2027-01-15T08:00:00", "tomorrow", "-5", -5, float("nan"), "1e3", "2020-01-01T00:00:00Z",
     str(int(max_ahead(Settings())) + 10), "9" * 80],
    ids=["no-offset", "words", "negative-text", "negative", "nan", "exponent", "past",
         "beyond-the-record", "huge"],
)  # fmt: skip
def test_send_at_refuses_naming_the_parameter(raw: str | float) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_send_at(raw, Settings(), now=NOW)
    assert caught.value.name == "SendAt"


def test_a_little_in_the_past_is_accepted_more_is_not() -> None:
    near = datetime.fromtimestamp(NOW - PAST_GRACE_SECONDS + 5, UTC).isoformat()
    assert parse_send_at(near, Settings(), now=NOW) == NOW - PAST_GRACE_SECONDS + 5
    far = datetime.fromtimestamp(NOW - PAST_GRACE_SECONDS - 5, UTC).isoformat()
    with pytest.raises(InvalidParameter):
        parse_send_at(far, Settings(), now=NOW)


def _job(owner: str = "someone", attachments: tuple[Attachment, ...] = ()) -> EmailJob:
    return EmailJob(
        email_id=str(uuid.uuid4()),
        owner=owner,
        sender="a@example.com",
        recipients=("b@example.com",),
        message="m",
        attachments=attachments,
    )


@pytest.fixture
def store(redis_server: RedisServer) -> StatusStore:
    return StatusStore(redis_server.client(), 3600)


@pytest.mark.parametrize(
    ("prepare", "before", "cancelled"),
    [("scheduled", Status.SCHEDULED, True), ("queued", Status.QUEUED, True),
     ("retrying", Status.RETRYING, True), ("sending", Status.SENDING, False),
     ("sent", Status.SENT, False), ("failed", Status.FAILED, False)],
    ids=["scheduled", "queued", "retrying", "sending", "sent", "failed"],
)  # fmt: skip
def test_cancel_only_before_a_worker_holds_it(
    store: StatusStore, prepare: str, before: Status, cancelled: bool
) -> None:
    job = _job()
    send_at = time.time() + 60 if prepare == "scheduled" else None
    store.create(job, time.time() + 60, send_at=send_at)
    if prepare != "scheduled" and prepare != "queued":
        claimed = store.start_attempt(job.email_id, "token", 30, time.time() + 60)
        assert isinstance(claimed, Record)
        if prepare == "retrying":
            store.mark_retry(job.email_id, 1, "451", "451 later", time.time() + 5, token="token")
        elif prepare == "sent":
            store.mark_sent(job.email_id, 1, "250 ok", token="token")
        elif prepare == "failed":
            store.mark_failed(job.email_id, 1, "550", token="token")
    record = store.get(job.email_id)
    assert record is not None and record.status is before
    status, found = store.cancel(job.email_id)
    if not cancelled:
        assert (status, found) == (before, None)
        return
    assert (status, found) == (Status.CANCELLED, job)
    after = store.get(job.email_id)
    assert after is not None and after.status is Status.CANCELLED and after.job is None
    assert store.redis.zscore(DUE_KEY, job.email_id) is None
    assert store.history(job.email_id)[-1].outcome is Status.CANCELLED
    # A task still on the broker finds it final and never sends it.
    assert store.start_attempt(job.email_id, "late", 30, time.time() + 60) is Outcome.ALREADY_FINAL
    assert store.cancel(job.email_id) == (Status.CANCELLED, None)


def test_a_scheduled_email_is_published_when_due_and_not_before(
    make_app: MakeApp, users: UserStore, redis_server: RedisServer
) -> None:
    # The API on a database no worker reads; the scheduler is the one every worker runs.
    url = f"redis://127.0.0.1:{redis_server.port}/{QUIET_DB}"
    quiet = redis.Redis.from_url(url)
    quiet.flushdb()
    client = make_app(redis_url=url, broker_url=url).test_client()
    query = {"command": "SendEmail", "Recipient": "later@example.com", "Message": "m"}
    query.update(SendAt="2", Username=SEED_USER, Password=SEED_PASSWORD)
    accepted = time.time()
    root = ET.fromstring(client.get("/api", query_string=query).data)
    assert root.findtext("Code") == "200"
    email_id = str(root.findtext("EmailId"))
    store = StatusStore.from_url(url, 3600)
    record = store.get(email_id)
    assert record is not None and record.status is Status.SCHEDULED
    assert record.next_attempt_at == pytest.approx(accepted + 2, abs=1)
    assert quiet.llen(QUEUE) == 0  # nothing on the broker yet
    published: list[str] = []
    scheduler = Scheduler(store, published.append, lease_seconds=30)
    assert scheduler.run_once() == 0  # not due: it waits
    wait_for(lambda: scheduler.run_once(), 10, "the scheduled e-mail to fall due")
    assert published == [email_id]
    assert time.time() >= record.next_attempt_at  # not a moment early
    assert scheduler.run_once() == 0  # leased: published once
    quiet.flushdb()


def test_the_spool_is_private_and_swept(tmp_path: Path) -> None:
    settings = replace(Settings(), spool_dir=tmp_path / "spool")
    root = spool_root(settings)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    old_path, fd = create(root)
    os.close(fd)
    assert stat.S_IMODE(os.stat(old_path).st_mode) == 0o600
    new_path, fd = create(root)
    os.close(fd)
    ancient = time.time() - settings.status_ttl_seconds - 10
    os.utime(old_path, (ancient, ancient))
    assert sweep(settings) == 1
    assert not os.path.exists(old_path) and os.path.exists(new_path)


def test_discard_spooled_leaves_path_attachments_alone(tmp_path: Path) -> None:
    settings = replace(Settings(), spool_dir=tmp_path / "spool")
    upload, fd = create(spool_root(settings))
    os.close(fd)
    shared = tmp_path / "shared.txt"
    shared.write_text("x")
    attachments = (Attachment(str(shared), 1, 0), Attachment(upload, 0, 0, filename="a.txt"))
    discard_spooled(_job(attachments=attachments), settings)
    assert shared.exists() and not os.path.exists(upload)


def test_old_job_records_without_the_new_attachment_fields_still_load() -> None:
    old = (
        '{"email_id":"x","owner":"o","sender":"a@b.c","recipients":["d@e.f"],"message":"m",'
        '"attachments":[{"path":"/srv/a.txt","size":1,"mtime_ns":2}]}'
    )
    job = EmailJob.from_json(old)
    assert job.attachments[0].filename == ""
    assert job.attachments[0].identity == "/srv/a.txt"
