"""The per-account quota of e-mails not yet final (count and bytes, Scheduled included): refused
over it with 429 naming the limit, and counted down exactly once whichever way an e-mail becomes
final. Real Redis; the worker test runs a real Celery worker and SMTP server."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.jobs import EmailJob
from mailgate.status import DUE_KEY, Record, StatusStore, email_key
from mailgate.status.group_commit import BatchedStatusStore
from mailgate.status.keys import send_rate_key, suppression_key
from mailgate.status.store import pending_size
from mailgate.status.suppressions import SuppressedRecipient, Suppression
from mailgate.users import UserStore
from tests.conftest import MakeApp, RunCli
from tests.support import RedisServer, SmtpServer, wait_for

SCRATCH_DB = 5  # a database of this module's own: no worker of the session consumes it


@pytest.fixture
def scratch(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port, db=SCRATCH_DB, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()


def new_job(owner: str = "acct", text: str = "body") -> EmailJob:
    return EmailJob(str(uuid.uuid4()), owner, "a@b.example", ("c@d.example",), text, "subject")


def created(store: StatusStore, job: EmailJob, quota: tuple[int, int] = (0, 0)) -> str:
    return store.create(job, time.time() + 60, quota=quota)


def claimed(store: StatusStore, job: EmailJob) -> None:
    assert isinstance(store.start_attempt(job.email_id, "tok", 30, time.time() + 60), Record)


FINAL: dict[str, Callable[[StatusStore, EmailJob], object]] = {
    "sent": lambda s, j: s.mark_sent(j.email_id, 1, "250 ok", token="tok"),
    "failed": lambda s, j: s.mark_failed(j.email_id, 1, "550 no", token="tok"),
    "cancelled": lambda s, j: s.cancel(j.email_id),
    "withdrawn": lambda s, j: s.withdraw(j.email_id),
}


@pytest.mark.parametrize("batched", [False, True], ids=["plain", "batched"])
@pytest.mark.parametrize("way", list(FINAL))
def test_an_email_is_counted_until_it_is_final_and_counted_down_once(
    scratch: redis.Redis, way: str, batched: bool
) -> None:
    store = (BatchedStatusStore if batched else StatusStore)(scratch, 3600)
    job, other = new_job(), new_job(text="another")
    assert created(store, job) == created(store, other) == ""
    both = pending_size(job) + pending_size(other)
    assert store.pending("acct") == (2, both)
    if way in ("sent", "failed"):
        claimed(store, job)
        store.mark_retry(job.email_id, 1, "451 later", None, time.time() + 5, token="tok")
        assert store.pending("acct") == (2, both)  # Retrying is not final
        claimed(store, job)
    FINAL[way](store, job)
    assert store.pending("acct") == (1, pending_size(other))
    FINAL[way](store, job)  # the same outcome again (a redelivered task, a second click)
    assert store.pending("acct") == (1, pending_size(other))
    FINAL[way](store, other)
    assert store.pending("acct") == (0, 0)
    assert scratch.hlen("mailgate:pending:emails") == 0  # no owner left with a zero entry


def test_the_send_rate_counts_only_the_emails_written(scratch: redis.Redis) -> None:
    # The create step checks the rate, then the quota: an e-mail the quota refuses takes no
    # place in the rate's window, and the window holds the rate's count of e-mails, no more.
    store = StatusStore(scratch, 3600)
    rate, quota = (2, 60), (1, 0)
    first = new_job()
    assert store.create(first, time.time() + 60, quota=quota, rate=rate) == ""
    assert store.create(new_job(), time.time() + 60, quota=quota, rate=rate) == "emails"
    assert scratch.llen(send_rate_key("acct")) == 1
    store.cancel(first.email_id)
    assert store.create(new_job(), time.time() + 60, quota=quota, rate=rate) == ""
    refused = new_job()
    assert store.create(refused, time.time() + 60, rate=rate) == "rate"
    assert not scratch.exists(email_key(refused.email_id))
    assert scratch.zscore(DUE_KEY, refused.email_id) is None
    assert scratch.llen(send_rate_key("acct")) == 2
    assert 0 < scratch.ttl(send_rate_key("acct")) <= 60
    # Another account's rate is its own; a window that has passed leaves room again.
    assert store.create(new_job(owner="other"), time.time() + 60, rate=rate) == ""
    assert store.create(new_job(), time.time() + 60, rate=(2, 1)) == "rate"
    wait_for(lambda: store.create(new_job(), time.time() + 60, rate=(2, 1)) == "", 5)


def test_a_suppressed_recipient_is_refused_by_the_create_step_writing_nothing(
    scratch: redis.Redis,
) -> None:
    store = StatusStore(scratch, 3600)
    bounced = Suppression("acct", "Gone@Example.com", "5.1.1", "user unknown", 1.0, 2.0, "x")
    scratch.set(suppression_key("acct", "gone@example.com"), json.dumps(asdict(bounced)))
    job = new_job()
    lookups = ["kept@example.com", "Jane <GONE@example.com>"]
    with pytest.raises(SuppressedRecipient) as refused:
        store.create(job, time.time() + 60, rate=(5, 60), suppressed=lookups)
    assert (refused.value.index, refused.value.suppression) == (1, bounced)
    assert not scratch.exists(email_key(job.email_id))
    assert scratch.zscore(DUE_KEY, job.email_id) is None
    assert store.pending("acct") == (0, 0)
    assert not scratch.exists(send_rate_key("acct"))  # a refusal takes no place in the rate
    # Suppressions are per account: another one may send there.
    other = new_job(owner="other")
    assert store.create(other, time.time() + 60, suppressed=lookups) == ""
    assert scratch.exists(email_key(other.email_id))


def test_a_requeued_email_counts_again_until_it_is_final(scratch: redis.Redis) -> None:
    store = StatusStore(scratch, 3600)
    job = new_job()
    created(store, job)
    store.mark_failed(job.email_id, 1, "gave up")
    assert store.pending("acct") == (0, 0)
    assert store.requeue(job.email_id, time.time() + 60)
    assert store.pending("acct") == (1, pending_size(job))
    assert not store.requeue(job.email_id, time.time() + 60)  # not Failed: nothing counted
    assert store.pending("acct") == (1, pending_size(job))
    claimed(store, job)
    store.mark_sent(job.email_id, 1, "250 ok", token="tok")
    assert store.pending("acct") == (0, 0)


@pytest.mark.parametrize(
    ("quota", "verdict"),
    [((2, 0), "emails"), ((0, 1), "bytes"), ((3, 10**9), "")],
    ids=["count", "bytes", "room"],
)
def test_over_the_quota_nothing_is_written(
    scratch: redis.Redis, quota: tuple[int, int], verdict: str
) -> None:
    store = StatusStore(scratch, 3600)
    if quota != (0, 1):
        assert created(store, new_job(), quota) == created(store, new_job(), quota) == ""
    before = store.pending("acct")
    job = new_job()
    assert created(store, job, quota) == verdict
    if verdict:
        assert store.pending("acct") == before
        assert not scratch.exists(email_key(job.email_id))
        assert scratch.zscore(DUE_KEY, job.email_id) is None
    else:
        assert store.pending("acct") == (before[0] + 1, before[1] + pending_size(job))


def test_concurrent_accepts_never_pass_the_quota(scratch: redis.Redis) -> None:
    store = StatusStore(scratch, 3600)
    start, verdicts = threading.Barrier(16), []

    def accept() -> None:
        start.wait()
        verdicts.append(created(store, new_job(), (5, 0)))

    threads = [threading.Thread(target=accept) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(verdicts) == [""] * 5 + ["emails"] * 11
    assert store.pending("acct")[0] == 5


# --- through the API --------------------------------------------------------------------------

QUIET_API_DB = 6
"""Where this module's API keeps its Scheduled e-mails: no worker sends them later."""


@pytest.fixture(scope="module")
def quiet(settings: Settings, redis_server: RedisServer) -> Iterator[Settings]:
    url = f"redis://127.0.0.1:{redis_server.port}/{QUIET_API_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield replace(settings, redis_url=url, broker_url=url)
    client.flushdb()


@pytest.fixture(scope="module")
def app(make_app: MakeApp, users: UserStore, quiet: Settings) -> Flask:
    return make_app(quiet)


@pytest.fixture
def account(users: UserStore, request: pytest.FixtureRequest) -> str:
    name = f"quota-{time.monotonic_ns()}"
    limits = getattr(request, "param", {})
    users.add(name, "quota-pw", **limits)
    return name


def ozeki(client: FlaskClient, name: str, **params: str) -> dict[str, str]:
    credentials = {"Username": name, "Password": "quota-pw"}
    query = {"command": "SendEmail", "Recipient": "q@example.com", "Message": "m", **credentials}
    query.update(params)
    root = ET.fromstring(client.get("/api", query_string=query).data)
    return {child.tag: child.text or "" for child in root}


def rest(client: FlaskClient, name: str) -> tuple[int, dict[str, str], dict[str, str]]:
    token = base64.b64encode(f"{name}:quota-pw".encode()).decode()
    body = {"recipients": ["q@example.com"], "text": "m", "send_at": 600}
    response = client.post("/api/v1/emails", json=body, headers={"Authorization": f"Basic {token}"})
    return response.status_code, response.get_json(), dict(response.headers)


@pytest.mark.parametrize("account", [{"max_pending": 2}], indirect=True)
def test_over_the_account_s_count_is_429_naming_it_until_one_is_cancelled(
    client: FlaskClient, account: str
) -> None:
    first = ozeki(client, account, SendAt="600")  # Scheduled e-mails count
    assert first["Code"] == "200"
    assert rest(client, account)[0] == 202
    refused = ozeki(client, account)
    assert (refused["Code"], refused["Message"]) == ("429", "Rate limit exceeded")
    assert "limit of 2 e-mails not yet final" in refused["Reason"]
    assert "max_pending" in refused["Reason"]
    status, body, headers = rest(client, account)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert "limit of 2 e-mails not yet final" in body["error"]["message"]
    assert headers["Retry-After"] == "60"
    cancel = {"command": "CancelEmail", "EmailId": first["EmailId"]}
    cancel.update(Username=account, Password="quota-pw")
    assert ET.fromstring(client.get("/api", query_string=cancel).data).findtext("Code") == "200"
    assert ozeki(client, account, SendAt="600")["Code"] == "200"  # room for one again


@pytest.mark.parametrize("account", [{"max_pending_bytes": 5000}], indirect=True)
def test_over_the_account_s_bytes_is_429_naming_them(client: FlaskClient, account: str) -> None:
    assert ozeki(client, account, SendAt="600", Message="x" * 3000)["Code"] == "200"
    refused = ozeki(client, account, SendAt="600", Message="y" * 3000)
    assert refused["Code"] == "429"
    assert "limit of 5000 bytes of e-mails not yet final" in refused["Reason"]
    assert ozeki(client, account, SendAt="600", Message="z")["Code"] == "200"  # a small one fits


def test_the_setting_is_the_default_and_an_idempotent_repeat_counts_once(
    make_app: MakeApp, quiet: Settings, account: str
) -> None:
    client = make_app(quiet, max_pending_emails=1).test_client()
    for _ in range(3):
        assert ozeki(client, account, SendAt="600", IdempotencyKey="k1")["Code"] == "200"
    refused = ozeki(client, account, SendAt="600")
    assert refused["Code"] == "429"
    assert "MAILGATE_MAX_PENDING_EMAILS" in refused["Reason"]


def test_what_the_worker_delivers_is_counted_down(
    make_app: MakeApp, settings: Settings, account: str, smtp_server: SmtpServer, worker: object
) -> None:
    client = make_app(settings).test_client()  # the session's Redis, which its worker serves
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    recipients = ["done@example.com", "tempfail1-q@example.com", "reject-q@example.com"]
    ids = [ozeki(client, account, Recipient=r)["EmailId"] for r in recipients]
    assert all(ids)

    def final() -> bool:
        records = [store.get(email_id) for email_id in ids]
        return all(r is not None and r.status.final for r in records)

    wait_for(final, 60, "the worker to finish the three e-mails")
    assert store.pending(account) == (0, 0)


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_cli_sets_an_account_s_own_quota(tmp_path: Path, mailgate: RunCli) -> None:
    env = {"MAILGATE_USERS_FILE": str(tmp_path / "users.toml")}
    add = ["user", "add", "pbx", "--password-stdin", "--max-pending", "50"]
    added = mailgate(*add, env=env, input="pbx-secret-pw\n")
    assert added.exit_code == 0, added.output
    account = UserStore(tmp_path / "users.toml").accounts()["pbx"]
    assert (account.max_pending, account.max_pending_bytes) == (50, None)
    assert account.quota(10_000, 2**30) == (50, 2**30)
    updated = mailgate("user", "update", "pbx", "--max-pending-bytes", "1000000", env=env)
    assert updated.exit_code == 0, updated.output
    assert "pending: 50 e-mails, 1000000 bytes" in updated.stdout
    reset = mailgate("user", "update", "pbx", "--max-pending", "-1", env=env)
    assert reset.exit_code == 0, reset.output
    account = UserStore(tmp_path / "users.toml").accounts()["pbx"]
    assert account.quota(10_000, 2**30) == (10_000, 1_000_000)
    assert "pending: default e-mails, 1000000 bytes" in mailgate("user", "list", env=env).stdout
    missing = mailgate("user", "update", "nobody", "--max-pending", "5", env=env)
    assert (missing.exit_code, missing.stderr.strip()) == (2, "mailgate: no user 'nobody'")
