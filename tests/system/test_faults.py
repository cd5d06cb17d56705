"""Fault tests: whatever crashes, an accepted e-mail arrives (or ends Failed with a reason).

This module runs its own Redis, SMTP server (behind a switchable gate) and worker processes,
so it can kill and restart them without disturbing the rest of the suite.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.jobs import EmailJob
from mailgate.status import Status, StatusStore
from mailgate.users import UserStore
from tests.conftest import RunCli
from tests.support import (
    Gate,
    RedisServer,
    Service,
    SmtpServer,
    count_records,
    mailgate_env,
    wait_for,
    worker_args,
)

pytestmark = pytest.mark.integration  # real processes of its own

USER, PASSWORD = "faults", "faults-test-pw"
CONCURRENCY = 4


class Fleet:
    """The module's worker processes: start, kill, restart."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.current: Service | None = None
        self.started = 0

    def start(self) -> Service:
        self.started += 1
        log = self.workdir / f"worker-{self.started}.log"
        self.current = Service("worker", worker_args(CONCURRENCY), self.env, log).start()
        self.current.wait_output(r"ready\.", 60)
        return self.current

    def ensure(self) -> None:
        if (
            self.current is None
            or self.current.proc is None
            or self.current.proc.poll() is not None
        ):
            self.start()


@dataclass
class Rig:
    """The module's own parts, which its tests stop, break and restart."""

    workdir: Path
    redis: RedisServer
    smtp: SmtpServer
    gate: Gate
    env: dict[str, str]
    settings: Settings
    fleet: Fleet


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("faults")
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    smtp = SmtpServer()
    smtp.start()
    gate = Gate(smtp.port)
    env = mailgate_env(
        workdir,
        redis_server.url,
        gate.url,
        RETRY_BASE_SECONDS="0.2",
        RETRY_MAX_DELAY_SECONDS="1",
        MAX_ATTEMPTS="40",
        REDELIVERY_SECONDS="8",
        SMTP_TIMEOUT_SECONDS="1",
    )
    settings = Settings.from_env(env)
    UserStore(settings.users_file).add(USER, PASSWORD)
    fleet = Fleet(env, workdir)
    fleet.start()
    yield Rig(workdir, redis_server, smtp, gate, env, settings, fleet)
    if fleet.current:
        fleet.current.stop()
    gate.close()
    smtp.stop()
    redis_server.stop()


@pytest.fixture(scope="module")
def settings(rig: Rig) -> Settings:
    return rig.settings


@pytest.fixture(scope="module")
def users(settings: Settings) -> UserStore:
    return UserStore(settings.users_file)


@pytest.fixture
def fleet(rig: Rig) -> Iterator[Fleet]:
    rig.fleet.ensure()
    yield rig.fleet
    rig.gate.set("open")
    rig.smtp.handler.delay = 0


@pytest.fixture(scope="module")
def store(settings: Settings) -> StatusStore:
    return StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)


def accept(client: FlaskClient, count: int, prefix: str) -> list[str]:
    """Accept ``count`` e-mails through the API; their EmailIds."""
    ids = []
    for i in range(count):
        response = client.get(
            "/api",
            query_string={
                "command": "SendEmail",
                "Recipient": f"{prefix}-{i}@faults.example",
                "Message": f"message {i}",
                "Username": USER,
                "Password": PASSWORD,
            },
        )
        root = ET.fromstring(response.data)
        assert root.findtext("Code") == "200", response.data
        ids.append(str(root.findtext("EmailId")))
    return ids


def statuses(store: StatusStore, ids: list[str]) -> list[str]:
    pipe = store.redis.pipeline(transaction=False)
    for email_id in ids:
        pipe.hget(f"mailgate:email:{email_id}", "status")
    return [str(s) for s in pipe.execute()]


def wait_all(store: StatusStore, ids: list[str], wanted: set[str], timeout: float = 60) -> None:
    def done() -> bool:
        return all(s in wanted for s in statuses(store, ids))

    wait_for(done, timeout, f"{len(ids)} e-mails to reach {wanted}")


def test_sigkill_mid_flight_loses_nothing(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    smtp = rig.smtp
    smtp.handler.delay = 0.05  # keep deliveries in flight
    ids = accept(client, 300, "kill9")
    wait_for(lambda: statuses(store, ids).count("Sent") >= 30, 30, "the first deliveries")
    assert fleet.current is not None and fleet.current.proc is not None
    fleet.current.signal(signal.SIGKILL)
    fleet.current.proc.wait(10)
    # In flight at the kill: the e-mails whose claim the dead worker still held.
    claims = {
        str(key).removeprefix("mailgate:claim:")
        for key in store.redis.scan_iter("mailgate:claim:*")
    }
    in_flight = claims & set(ids)
    assert statuses(store, ids).count("Sent") < len(ids), "nothing was left in flight"
    smtp.handler.delay = 0
    fleet.start()
    wait_all(store, ids, {"Sent"}, timeout=90)
    counts = smtp.handler.counts()
    assert all(counts.get(i, 0) >= 1 for i in ids), "an accepted e-mail was lost"
    duplicated = {i for i in ids if counts[i] > 1}
    # Only an e-mail in flight can be sent twice, and only once more: never more duplicates
    # than e-mails in flight at the moment of the crash.
    assert duplicated <= in_flight, (duplicated, in_flight)
    assert all(counts[i] <= 2 for i in ids)
    assert len(in_flight) <= CONCURRENCY


def test_smtp_outage_421_then_back(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    gate = rig.gate
    gate.set("421")
    ids = accept(client, 20, "outage421")
    wait_all(store, ids, {"Retrying"}, timeout=30)
    gate.set("open")
    wait_all(store, ids, {"Sent"}, timeout=60)
    for email_id in ids:
        outcomes = [log.outcome for log in store.history(email_id)]
        assert Status.RETRYING in outcomes and outcomes[-1] == Status.SENT
        assert any("421" in log.detail for log in store.history(email_id))


def test_smtp_refusing_connections_then_back(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    gate = rig.gate
    gate.set("refuse")
    ids = accept(client, 20, "refused")
    wait_all(store, ids, {"Retrying"}, timeout=30)
    records = [store.get(i) for i in ids]
    errors = {str(record.last_error) for record in records if record is not None}
    assert None not in records
    assert all("cannot reach" in error for error in errors), errors
    gate.set("open")
    wait_all(store, ids, {"Sent"}, timeout=60)


def test_a_silent_smtp_server_times_out_and_retries(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    gate = rig.gate
    gate.set("silent")
    ids = accept(client, 3, "silent")

    def timed_out() -> bool:
        records = [store.get(i) for i in ids]
        return all(r is not None and "timed out" in (r.last_error or "") for r in records)

    wait_for(timed_out, 30, "the SMTP time-out to be recorded")
    gate.set("open")
    wait_all(store, ids, {"Sent"}, timeout=60)


def test_redis_restart_with_a_backlog(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    gate = rig.gate
    redis_server = rig.redis
    gate.set("421")  # build a backlog that cannot drain yet
    ids = accept(client, 50, "redis-restart")
    before = count_records(store.redis)
    redis_server.stop()
    body = ET.fromstring(
        client.get(
            "/api",
            query_string={
                "command": "SendEmail",
                "Recipient": "down@faults.example",
                "Message": "m",
                "Username": USER,
                "Password": PASSWORD,
            },
        ).data
    )
    assert (body.findtext("Code"), body.findtext("Message")) == (
        "503",
        "Service unavailable, nothing was queued",
    )
    time.sleep(1)  # keep Redis down for a moment, as an operator's restart would
    redis_server.start()
    assert count_records(store.redis) == before  # the AOF kept every record, the 503 added none
    gate.set("open")
    fleet.ensure()  # a supervisor restarts a worker that died; ours should not have
    wait_all(store, ids, {"Sent"}, timeout=90)
    counts = rig.smtp.handler.counts()
    assert all(counts.get(i, 0) == 1 for i in ids)


def test_sigterm_mid_batch_finishes_or_returns_the_work(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    smtp = rig.smtp
    smtp.handler.delay = 0.05
    ids = accept(client, 150, "sigterm")
    wait_for(lambda: statuses(store, ids).count("Sent") >= 20, 30, "the first deliveries")
    assert fleet.current is not None and fleet.current.proc is not None
    fleet.current.signal(signal.SIGTERM)
    assert fleet.current.proc.wait(30) == 0  # a warm shutdown, not a crash
    left = [s for s in statuses(store, ids) if s == "Sending"]
    assert left == []  # tasks under way were finished, not abandoned
    smtp.handler.delay = 0
    fleet.start()
    wait_all(store, ids, {"Sent"}, timeout=90)
    counts = smtp.handler.counts()
    assert [i for i in ids if counts.get(i, 0) != 1] == []


def test_a_record_whose_publish_was_lost_is_swept_up(
    rig: Rig, fleet: Fleet, store: StatusStore
) -> None:
    # As if Redis crashed between the status write and the publish.
    job = EmailJob(
        email_id="00000000-0000-4000-8000-00000000051e",
        owner=USER,
        sender="mailgate@localhost",
        recipients=("swept@faults.example",),
        message="found again",
    )
    store.create(job, watchdog_at=time.time() + 0.5)
    wait_all(store, [job.email_id], {"Sent"}, timeout=30)
    assert rig.smtp.handler.count(job.email_id) == 1


def test_a_poison_message_ends_failed_instead_of_looping(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    """A message whose delivery kills its worker, every time, in the middle of SMTP: each
    attempt is counted before SMTP, so the attempts run out and the e-mail ends Failed."""
    smtp = rig.smtp
    workdir = rig.workdir
    max_attempts = 2
    env = {
        **rig.env,
        "MAILGATE_MAX_ATTEMPTS": str(max_attempts),
        "MAILGATE_REDELIVERY_SECONDS": "3",
    }
    assert fleet.current is not None
    fleet.current.stop()  # only the short-budget workers below may take the e-mail
    poisoned = Fleet(env, workdir)
    kills: list[int] = []

    def kill_the_worker(recipients: list[str]) -> bool:
        current = poisoned.current
        if not recipients[0].startswith("poison-") or current is None or current.proc is None:
            return False
        kills.append(current.proc.pid)
        current.signal(signal.SIGKILL)
        return True

    smtp.handler.on_data = kill_the_worker
    try:
        [email_id] = accept(client, 1, f"poison-{time.monotonic_ns()}")
        while True:
            # Not waiting for "ready.": the poison may kill the worker before it says so.
            poisoned.started += 1
            log = workdir / f"poisoned-worker-{poisoned.started}.log"
            worker = Service("worker", worker_args(CONCURRENCY), env, log).start()
            poisoned.current = worker
            assert worker.proc is not None

            def settled(proc: subprocess.Popen[bytes] = worker.proc) -> bool:
                return proc.poll() is not None or statuses(store, [email_id]) == ["Failed"]

            wait_for(settled, 60, "the worker to die or the e-mail to fail")
            if statuses(store, [email_id]) == ["Failed"]:
                break
            assert len(kills) <= max_attempts, f"the poison killed {len(kills)} workers"
    finally:
        smtp.handler.on_data = None
        if poisoned.current is not None:
            poisoned.current.stop()
    record = store.get(email_id)
    assert record is not None
    assert record.last_error == f"gave up after {max_attempts} attempts"
    assert len(kills) == max_attempts  # each attempt reached SMTP and took its worker down
    assert smtp.handler.count(email_id) == 0


def test_requeue_sends_a_failed_email_again(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore, mailgate: RunCli
) -> None:
    [email_id] = accept(client, 1, "requeue")
    wait_all(store, [email_id], {"Sent"})
    # Make it a Failed e-mail with its content kept, as a final SMTP error leaves it.
    job = EmailJob(
        email_id=email_id,
        owner=USER,
        sender="mailgate@localhost",
        recipients=("requeued@faults.example",),
        message="again",
    )
    store.redis.hset(f"mailgate:email:{email_id}", "job", job.to_json())
    store.mark_failed(email_id, 1, "550 pretend")
    result = mailgate("requeue", "--failed", "--since", "10m", env=rig.env)
    assert result.exit_code == 0, result.output
    assert f"requeued {email_id}" in result.stdout
    wait_all(store, [email_id], {"Sent"})
    outcomes = [log.outcome for log in store.history(email_id)]
    assert outcomes == [Status.SENT, Status.FAILED, Status.SENT]


def test_a_long_back_off_holds_no_broker_message(
    rig: Rig, fleet: Fleet, client: FlaskClient, store: StatusStore
) -> None:
    """A retry an hour away sits in the due set only: nothing in the queue or in kombu's
    unacked set could be redelivered early by the visibility timeout."""
    # A worker whose first back-off is about an hour (this module's others retry within a
    # second), and a relay that answers the first attempt with 451: a real Retrying.
    assert fleet.current is not None
    fleet.current.stop()
    hourly = {**rig.env, "MAILGATE_RETRY_BASE_SECONDS": "3600"}
    hourly["MAILGATE_RETRY_MAX_DELAY_SECONDS"] = "7200"
    worker = Service("worker", worker_args(CONCURRENCY), hourly, rig.workdir / "hourly.log")
    worker.start().wait_output(r"ready\.", 60)
    try:
        [email_id] = accept(client, 1, "tempfail1-backoff")
        wait_all(store, [email_id], {"Retrying"})

        def broker_holds(eid: str) -> bool:
            queued = store.redis.lrange("mailgate", 0, -1)
            unacked = store.redis.hvals("unacked")
            return any(eid in str(message) for message in [*queued, *unacked])

        wait_for(lambda: not broker_holds(email_id), 10, "the attempt to be acknowledged")
        record = store.get(email_id)
        assert record is not None and record.attempts == 1 and record.next_attempt_at
        assert "451" in str(record.last_error)
        # Back-off 3600 s with jitter of ±50 %, and the due entry is the next attempt.
        assert time.time() + 1700 < record.next_attempt_at < time.time() + 5500
        assert store.redis.zscore("mailgate:due", email_id) == pytest.approx(record.next_attempt_at)
        assert not broker_holds(email_id)
        # When the hour is up (moved forward here), the scheduler publishes it and it is sent.
        store.redis.zadd("mailgate:due", {email_id: time.time()})
        wait_all(store, [email_id], {"Sent"})
    finally:
        worker.stop()
    outcomes = [log.outcome for log in store.history(email_id)]
    assert outcomes == [Status.RETRYING, Status.SENT]
    assert rig.smtp.handler.count(email_id) == 1
