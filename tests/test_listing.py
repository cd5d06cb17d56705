"""Failures can be found: the store lists e-mails by state (an index for Failed and Cancelled,
the due set for the states not yet final, a scan for the rest), `mailgate list` prints them,
and `mailgate requeue --dry-run` shows what it would requeue without changing anything."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from mailgate.jobs import EmailJob
from mailgate.schedule import parse_moment
from mailgate.status import StatusStore, status_index_key
from mailgate.status.bounces import Reported
from mailgate.status.group_commit import BatchedStatusStore
from mailgate.status.records import Bounce, Status, rcpt_json
from mailgate.status.store import outcome_spec
from tests.conftest import RunCli
from tests.support import RedisServer

SCRATCH_DB = 4  # a database of its own: no worker of the session consumes it
TTL = 3600


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port, db=SCRATCH_DB, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def store(client: redis.Redis) -> StatusStore:
    return StatusStore(client, TTL)


def job(owner: str = "pbx", email_id: str | None = None) -> EmailJob:
    return EmailJob(
        email_id or str(uuid.uuid4()),
        owner,
        "ivr@pbx.example",
        ("secret.person@example.com",),
        "body",
        "subject",
    )


def accepted(store: StatusStore, owner: str = "pbx", send_at: float | None = None) -> str:
    """A new e-mail, Queued (or Scheduled with ``send_at``)."""
    new = job(owner)
    store.create(new, send_at or time.time() + 60, send_at=send_at)
    return new.email_id


def failed(store: StatusStore, owner: str = "pbx", error: str = "550 5.1.1 no such user") -> str:
    """An e-mail that a worker took and that failed for good, as delivery leaves it."""
    email_id = accepted(store, owner)
    store.start_attempt(email_id, "tok", 30, time.time() + 60)
    store.mark_failed(email_id, 1, error, error, token="tok")
    return email_id


@dataclass
class Zoo:
    """One e-mail in each state."""

    ids: dict[Status, set[str]]


@pytest.fixture
def zoo(client: redis.Redis) -> Zoo:
    plain, batched = StatusStore(client, TTL), BatchedStatusStore(client, TTL)
    ids: dict[Status, set[str]] = {status: set() for status in Status}
    ids[Status.QUEUED].add(accepted(plain))
    ids[Status.SCHEDULED].add(accepted(plain, send_at=time.time() + 600))
    sending = accepted(plain)
    plain.start_attempt(sending, "tok", 30, time.time() + 60)
    ids[Status.SENDING].add(sending)
    retrying = accepted(plain)
    plain.start_attempt(retrying, "tok", 30, time.time() + 60)
    plain.mark_retry(retrying, 1, "451 later", "451 later", time.time() + 30, token="tok")
    ids[Status.RETRYING].add(retrying)
    for store in (plain, batched):  # the worker writes its outcomes through the batched store
        ids[Status.FAILED].add(failed(store))
        sent = accepted(store)
        store.start_attempt(sent, "tok", 30, time.time() + 60)
        store.mark_sent(sent, 1, "250 ok", token="tok")
        ids[Status.SENT].add(sent)
    cancelled = accepted(plain)
    assert plain.cancel(cancelled)[0] is Status.CANCELLED
    ids[Status.CANCELLED].add(cancelled)
    return Zoo(ids)


@pytest.mark.parametrize("status", list(Status), ids=[status.value for status in Status])
def test_each_state_lists_its_emails_and_no_other(
    store: StatusStore, zoo: Zoo, status: Status
) -> None:
    found = store.find(status)
    assert {record.email_id for record in found} == zoo.ids[status]
    assert all(record.status is status and record.job is None for record in found)
    # The scan reads every record and agrees with the index and the due set.
    assert {record.email_id for record in store.find(status, scan=True)} == zoo.ids[status]


def test_only_failed_and_cancelled_have_an_index(client: redis.Redis, zoo: Zoo) -> None:
    assert set(client.zrange(status_index_key(Status.FAILED), 0, -1)) == zoo.ids[Status.FAILED]
    assert set(client.zrange(status_index_key("Cancelled"), 0, -1)) == zoo.ids[Status.CANCELLED]
    # The delivery path of a Sent e-mail writes nothing more than it did.
    assert not client.keys("mailgate:status:Sent") and not client.keys("mailgate:status:Queued")


def test_a_sent_outcome_writes_no_index() -> None:
    def spec(status: str) -> dict[str, Any]:
        written = outcome_spec("x", 1, {"status": status}, "detail", drop=("job",), token="t")
        return dict(json.loads(written))

    sent, failed_ = spec("Sent"), spec("Failed")
    assert "index" not in sent and "at" not in sent
    assert failed_["index"] == status_index_key(Status.FAILED)
    assert set(failed_) - set(sent) == {"index", "at"}  # Failed adds to Sent's writes only


def test_account_window_and_limit(store: StatusStore, client: redis.Redis) -> None:
    old, mine, theirs = failed(store), failed(store), failed(store, owner="other")
    # The first one failed 40 minutes ago (its record and its index entry say so).
    earlier = time.time() - 2400
    client.hset(f"mailgate:email:{old}", "updated_at", earlier)
    client.zadd(status_index_key(Status.FAILED), {old: earlier})
    newest = failed(store)

    def ids(**kwargs: object) -> list[str]:
        return [record.email_id for record in store.find(Status.FAILED, **kwargs)]  # type: ignore[arg-type]

    assert ids() == [newest, theirs, mine, old]  # the latest change first
    assert ids(owner="pbx") == [newest, mine, old]
    assert ids(since=time.time() - 1200) == [newest, theirs, mine]
    assert ids(until=time.time() - 1200) == [old]
    assert ids(limit=2) == [newest, theirs]
    assert ids(owner="pbx", limit=2, since=time.time() - 1200) == [newest, mine]


def sent_to(store: StatusStore, *recipients: str) -> str:
    """A Sent e-mail whose relay accepted each of ``recipients``."""
    email_id = accepted(store)
    store.start_attempt(email_id, "tok", 30, time.time() + 60)
    rcpt = rcpt_json([(address, True, "250 2.1.5 Ok") for address in recipients])
    store.mark_sent(email_id, 1, "250 ok", token="tok", rcpt=rcpt)
    return email_id


def bounce(store: StatusStore, email_id: str, address: str) -> Status:
    found = Reported((address,), Bounce("failed", "5.1.1", "user unknown", time.time()))
    verdict, settled = store.record_bounces(email_id, [found])
    assert verdict == "recorded" and settled is not None
    return settled.status


def test_bounces_move_an_email_from_index_to_index(store: StatusStore) -> None:
    email_id = sent_to(store, "a@example.com", "b@example.com")
    assert bounce(store, email_id, "a@example.com") is Status.PARTLY_BOUNCED
    assert [r.email_id for r in store.find(Status.PARTLY_BOUNCED)] == [email_id]
    assert bounce(store, email_id, "b@example.com") is Status.BOUNCED
    assert store.find(Status.PARTLY_BOUNCED) == []  # it left the index it was in
    [record] = store.find(Status.BOUNCED)
    assert (record.email_id, record.bounce_code) == (email_id, "5.1.1")
    assert store.find(Status.SENT) == []  # Sent no more


def test_a_requeued_email_leaves_the_failed_list(store: StatusStore) -> None:
    email_id = failed(store)
    assert store.requeueable(email_id)
    assert store.requeue(email_id, time.time() + 60)
    assert store.find(Status.FAILED) == []
    assert [record.email_id for record in store.find(Status.QUEUED)] == [email_id]
    assert not store.requeueable(email_id)  # Queued now


def test_expired_records_are_skipped_and_old_entries_pruned(
    store: StatusStore, client: redis.Redis
) -> None:
    gone, stale = failed(store), failed(store)
    client.delete(f"mailgate:email:{gone}")  # its TTL ran out
    client.zadd(status_index_key(Status.FAILED), {stale: time.time() - TTL - 10})
    client.delete(f"mailgate:email:{stale}")
    assert store.find(Status.FAILED) == []
    fresh = failed(store)  # each Failed write prunes what outlived the TTL
    assert set(client.zrange(status_index_key(Status.FAILED), 0, -1)) == {gone, fresh}
    assert [record.email_id for record in store.find(Status.FAILED)] == [fresh]


def test_a_failure_from_before_the_index_is_found_by_a_scan(
    store: StatusStore, client: redis.Redis
) -> None:
    email_id = failed(store)
    client.delete(status_index_key(Status.FAILED))  # as an older version wrote it
    assert store.find(Status.FAILED) == []
    assert [record.email_id for record in store.find(Status.FAILED, scan=True)] == [email_id]


NOW = 1_767_000_000.0
NINE_UTC = 1_767_603_600.0  # 2026-01-05T09:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("7d", NOW - 7 * 86400),
        (" 1h ", NOW - 3600),
        ("2026-01-05T10:00:00+01:00", NINE_UTC),
        ("2026-01-05T09:00:00", NINE_UTC),
        ("2026-01-05T09:00:00Z", NINE_UTC),
    ],
    ids=["seconds", "minutes", "hours", "days", "blanks", "offset", "utc-naive", "zulu"],
)
def test_moments_are_ages_or_iso_times(text: str, expected: float) -> None:
    assert parse_moment(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1w", "-1h", "", "2026-13-01", "1 h"])
def test_a_bad_moment_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO 8601 time nor an age like 2h"):
        parse_moment(text)


# The command line, against the same scratch database.


@pytest.fixture
def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("listing")
    return {
        "MAILGATE_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/{SCRATCH_DB}",
        "MAILGATE_USERS_FILE": str(folder / "users.toml"),
    }


def test_list_prints_a_table_of_the_failed_emails(
    store: StatusStore, mailgate: RunCli, env: dict[str, str]
) -> None:
    mine = failed(store, error="550 5.1.1 <secret.person@example.com>: no such\nuser")
    theirs = failed(store, owner="other")
    accepted(store)  # Queued: not listed
    result = mailgate("list", "--status", "failed", "--since", "1h", "--account", "pbx", env=env)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "EMAIL",
        "ID",
        "ACCOUNT",
        "STATUS",
        "ATTEMPTS",
        "UPDATED",
        "LAST",
        "ERROR",
    ]
    assert len(rows) == 1
    assert rows[0].split()[:4] == [mine, "pbx", "Failed", "1"]
    assert rows[0].endswith("550 5.1.1 <secret.person@example.com>: no such user")
    assert theirs not in result.stdout
    assert "1 e-mail(s)" in result.stderr
    # What mailgate status shows of the e-mail, and never its recipients or subject.
    assert "subject" not in result.stdout
    assert result.stdout.count("secret.person") == 1  # only inside the last error, as status has it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--status", "Bogus"), "'Bogus' is not one of"),
        (("--status", "Failed", "--since", "yesterday"), "--since"),
        (("--status", "Failed", "--until", "1w"), "--until"),
        (("--since", "1h"), "Missing option '--status'"),
    ],
    ids=["status", "since", "until", "no-status"],
)
def test_list_refuses_bad_options_naming_them(
    mailgate: RunCli, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = mailgate("list", *args, env=env)
    assert result.exit_code == 2
    assert message in result.output


def test_list_says_when_the_limit_cut_it_short(
    store: StatusStore, mailgate: RunCli, env: dict[str, str]
) -> None:
    ids = [failed(store) for _ in range(3)]
    result = mailgate("list", "--status", "Failed", "--limit", "2", env=env)
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ids[:0:-1]
    assert "the newest 2: --limit for more" in result.stderr


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Everything in the database, by key."""
    read = {
        "hash": client.hgetall,
        "list": lambda k: client.lrange(k, 0, -1),
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        "string": client.get,
    }
    return {key: read[client.type(key)](key) for key in client.keys("*")}


def test_requeue_dry_run_shows_what_it_would_requeue_and_changes_nothing(
    store: StatusStore, client: redis.Redis, mailgate: RunCli, env: dict[str, str]
) -> None:
    doomed, emptied, other = failed(store), failed(store), failed(store, owner="other")
    client.hdel(f"mailgate:email:{emptied}", "job")  # its content gone: not requeueable
    before = snapshot(client)
    result = mailgate(
        "requeue", "--failed", "--since", "1h", "--account", "pbx", "--dry-run", env=env
    )
    assert result.exit_code == 0, result.output
    assert doomed in result.stdout and other not in result.stdout
    assert f"would skip {emptied}" in result.stderr
    assert "1 e-mail(s) would be requeued (dry run: nothing changed)" in result.stdout
    assert snapshot(client) == before  # nothing written
    by_id = mailgate("requeue", "--dry-run", other, env=env)
    assert by_id.exit_code == 0, by_id.output
    assert other in by_id.stdout and "1 e-mail(s) would be requeued" in by_id.stdout
    assert snapshot(client) == before
