"""SendAt parsing, the store's cancel step against a real Redis, and the upload spool."""

from __future__ import annotations

import os
import stat
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.config import Settings
from mailgate.errors import InvalidParameter
from mailgate.jobs import Attachment, EmailJob
from mailgate.schedule import PAST_GRACE_SECONDS, max_ahead, parse_send_at
from mailgate.spool import create, discard_spooled, spool_root, sweep
from mailgate.status import DUE_KEY, Status, StatusStore
from tests.support import RedisServer

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
        email_id=str(uuid.uuid4()), owner=owner, sender="a@example.com",
        recipients=("b@example.com",), message="m", attachments=attachments,
    )  # fmt: skip


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
        verdict, _ = store.start_attempt(job.email_id, "token", 30, time.time() + 60)
        assert verdict == "go"
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
    assert store.start_attempt(job.email_id, "late", 30, time.time() + 60) == ("final", None)
    assert store.cancel(job.email_id) == (Status.CANCELLED, None)


def test_a_scheduled_record_waits_in_the_due_set(store: StatusStore) -> None:
    job = _job()
    when = time.time() + 120
    store.create(job, when, send_at=when)
    record = store.get(job.email_id)
    assert record is not None
    assert (record.status, record.next_attempt_at, record.since) == (Status.SCHEDULED, when, when)
    assert store.redis.zscore(DUE_KEY, job.email_id) == pytest.approx(when)
    assert job.email_id not in store.take_due(time.time(), 1000, 30)


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
    old = ('{"email_id":"x","owner":"o","sender":"a@b.c","recipients":["d@e.f"],"message":"m",'
           '"attachments":[{"path":"/srv/a.txt","size":1,"mtime_ns":2}]}')  # fmt: skip
    job = EmailJob.from_json(old)
    assert job.attachments[0].filename == ""
    assert job.attachments[0].identity == "/srv/a.txt"
