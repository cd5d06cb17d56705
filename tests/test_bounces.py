"""Bounces end to end on real parts: a real delivery over SMTP (the session's aiosmtpd) with the
VERP return path, a report recorded in real Redis, the statuses and fields it gives, the
delivery report it sends again, the suppression SendEmail then meets (Ozeki and REST), and
``mailgate suppressions``; then the SMTP listener of ``mailgate bounces`` (aiosmtpd, in this
process and as the real command).
"""

from __future__ import annotations

import base64
import smtplib
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
from flask.testing import FlaskClient

from mailgate.bounces.listener import controller
from mailgate.bounces.recorder import Recorder, Verdict
from mailgate.bounces.verp import return_path
from mailgate.config import Settings
from mailgate.jobs import EmailJob
from mailgate.status import REPORTS_DUE_KEY, Status, StatusStore, Suppressions
from mailgate.users import UserStore
from tests.conftest import SEED_PASSWORD, SEED_USER, MakeApp, RunCli, new_address
from tests.support import (
    VENV_BIN,
    RedisServer,
    Service,
    SmtpServer,
    free_port,
    mailgate_env,
)
from worker.delivery import Delivery
from worker.report_http import Answer
from worker.reports import Reporter
from worker.smtp import SmtpTransport

BOUNCE_DB = 12
"""A database of the session's Redis that no worker reads: these records are only ours."""
BOUNCES = "bounces@bounce.shop.example"


def dsn(
    email_id: str,
    address: str,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{a}>: Recipient address rejected: User unknown",
    to: str = "",
) -> bytes:
    """A Postfix-shaped delivery status notification about ``email_id``."""
    to = to or return_path(BOUNCES, email_id)
    text = f"""\
From: MAILER-DAEMON@relay.shop.example (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

This is the mail system at host relay.shop.example.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.shop.example

Final-Recipient: rfc822; {address}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic.format(a=address)}

--b1
Content-Type: text/rfc822-headers

From: receipts@domain.com
Message-ID: <{email_id}@mailgate.local>

--b1--
"""
    return text.replace("\n", "\r\n").encode()


@pytest.fixture
def quiet(settings: Settings, redis_server: RedisServer) -> Iterator[Settings]:
    """The session's settings on a database of our own, with a bounce address."""
    url = f"redis://127.0.0.1:{redis_server.port}/{BOUNCE_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield replace(settings, redis_url=url, broker_url=url, bounce_address=BOUNCES)
    client.flushdb()


@pytest.fixture
def store(quiet: Settings) -> StatusStore:
    return StatusStore.from_url(quiet.redis_url, quiet.status_ttl_seconds)


@pytest.fixture
def recorder(store: StatusStore, quiet: Settings) -> Recorder:
    return Recorder(store, quiet)


def send(
    store: StatusStore, settings: Settings, *recipients: str, callback_url: str = ""
) -> EmailJob:
    """Deliver a new e-mail of the seed account for real, over SMTP (no worker involved)."""
    job = EmailJob(
        str(uuid.uuid4()),
        SEED_USER,
        "receipts@domain.com",
        recipients[:1],
        "Thank you for your call.",
        cc=recipients[1:],
        callback_url=callback_url,
    )
    store.create(job, watchdog_at=time.time() + 3600)
    transport = SmtpTransport(settings.smtp[0], settings.smtp_timeout_seconds)
    try:
        Delivery(store, transport, settings).deliver(job.email_id)
    finally:
        transport.close()
    return job


def record_of(store: StatusStore, email_id: str) -> Any:
    record = store.get(email_id)
    assert record is not None
    return record


def test_the_envelope_sender_names_the_email_and_the_from_header_stays(
    store: StatusStore, quiet: Settings, smtp_server: SmtpServer
) -> None:
    job = send(store, quiet, "verp-check@customer.example")
    received = smtp_server.handler.find(job.email_id)
    assert received is not None
    assert received.mail_from == f"bounces+{job.email_id}@bounce.shop.example"
    assert received.message["From"] == "receipts@domain.com"


def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(
    store: StatusStore, quiet: Settings, smtp_server: SmtpServer
) -> None:
    job = send(store, replace(quiet, bounce_address=""), "no-verp@customer.example")
    received = smtp_server.handler.find(job.email_id)
    assert received is not None and received.mail_from == "receipts@domain.com"


def test_each_recipients_rcpt_reply_is_kept(store: StatusStore, quiet: Settings) -> None:
    job = send(store, quiet, "taken@customer.example", "reject-me@customer.example")
    record = record_of(store, job.email_id)
    assert record.status is Status.SENT
    assert [(r.address, r.accepted, r.reply) for r in record.recipients] == [
        ("taken@customer.example", True, "250 OK"),
        ("reject-me@customer.example", False, "550 5.1.1 No such user here"),
    ]


def test_a_hard_bounce_makes_it_bounced_with_code_reason_and_time(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    job = send(store, quiet, "j.smith@gmial.example")
    before = time.time()
    assert recorder.record(dsn(job.email_id, "j.smith@gmial.example")) is Verdict.RECORDED
    record = record_of(store, job.email_id)
    assert record.status is Status.BOUNCED
    assert record.bounce_code == "5.1.1"
    assert record.bounce_reason == (
        "550 5.1.1 <j.smith@gmial.example>: Recipient address rejected: User unknown"
    )
    assert before <= record.bounced_at <= time.time()
    [recipient] = record.recipients
    assert recipient.bounce is not None and recipient.bounce.kind == "hard"
    assert store.history(job.email_id)[-1].outcome is Status.BOUNCED
    assert store.metrics()["bounce:hard"] >= 1


def test_the_same_report_twice_counts_once(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    job = send(store, quiet, "twice@customer.example")
    report = dsn(job.email_id, "twice@customer.example")
    assert recorder.record(report) is Verdict.RECORDED
    history = len(store.history(job.email_id))
    assert recorder.record(report) is Verdict.RECORDED  # a retried delivery of the report
    assert len(store.history(job.email_id)) == history


def test_some_recipients_bouncing_is_partly_bounced_until_all_have(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    job = send(store, quiet, "gone@customer.example", "fine@customer.example")
    recorder.record(dsn(job.email_id, "gone@customer.example"))
    record = record_of(store, job.email_id)
    assert record.status is Status.PARTLY_BOUNCED
    outcomes = {r.address: r.bounce.action if r.bounce else None for r in record.recipients}
    assert outcomes == {"gone@customer.example": "failed", "fine@customer.example": None}
    recorder.record(
        dsn(
            job.email_id,
            "FINE@Customer.Example",
            status="5.2.1",
            diagnostic="smtp; 550 5.2.1 mailbox disabled",
        )
    )
    assert record_of(store, job.email_id).status is Status.BOUNCED


def test_recipients_refused_at_rcpt_do_not_hold_off_bounced(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    job = send(store, quiet, "gone2@customer.example", "reject-2@customer.example")
    recorder.record(dsn(job.email_id, "gone2@customer.example"))
    assert record_of(store, job.email_id).status is Status.BOUNCED  # nobody got it


def test_a_delayed_report_is_recorded_and_changes_nothing_final(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    job = send(store, quiet, "slow@customer.example")
    report = dsn(
        job.email_id,
        "slow@customer.example",
        "delayed",
        "4.4.1",
        "X-Postfix; connect to mx.customer.example: Connection timed out",
    )
    assert recorder.record(report) is Verdict.RECORDED
    record = record_of(store, job.email_id)
    assert record.status is Status.SENT
    assert record.bounce_code is None
    [recipient] = record.recipients
    assert recipient.bounce is not None
    assert (recipient.bounce.action, recipient.bounce.code) == ("delayed", "4.4.1")
    assert not list(Suppressions(store.redis).all(SEED_USER))


def test_a_soft_failure_bounces_but_suppresses_nothing(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    job = send(store, quiet, "full@customer.example")
    recorder.record(
        dsn(
            job.email_id,
            "full@customer.example",
            status="4.4.7",
            diagnostic="X-Postfix; delivery temporarily suspended",
        )
    )
    assert record_of(store, job.email_id).status is Status.BOUNCED
    assert Suppressions(store.redis).find(SEED_USER, ["full@customer.example"]) is None
    assert store.metrics()["bounce:soft"] >= 1


def test_reports_for_unknown_or_unsent_emails_are_counted_never_errors(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    unknown = str(uuid.uuid4())
    assert recorder.record(dsn(unknown, "x@customer.example")) is Verdict.UNKNOWN
    assert recorder.record(b"Subject: hello\r\n\r\nnot a report\r\n") is Verdict.NOT_A_BOUNCE
    assert store.metrics()["bounce_report:unknown"] == 1
    assert store.metrics()["bounce_report:not-a-bounce"] == 1
    job = EmailJob(str(uuid.uuid4()), SEED_USER, "receipts@domain.com", ("q@x.example",), "m")
    store.create(job, watchdog_at=time.time() + 3600)  # Queued: its 250 is not recorded yet
    assert recorder.record(dsn(job.email_id, "q@x.example")) is Verdict.EARLY
    assert record_of(store, job.email_id).status is Status.QUEUED


def test_the_delivery_report_goes_out_again_with_the_new_status(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    url = "https://hooks.pbx.example/report"
    settings = replace(quiet, callback_allowed=("hooks.pbx.example",))
    job = send(store, settings, "hooked@customer.example", callback_url=url)
    posted: list[dict[str, list[str]]] = []

    def post(url: str, body: bytes, headers: Any, timeout: float) -> Answer:
        posted.append(parse_qs(body.decode()))
        return Answer(200)

    reporter = Reporter(store=store, settings=settings, post=post)
    reporter.report(job.email_id)  # the first report: Sent
    recorder.record(dsn(job.email_id, "hooked@customer.example"))
    assert store.redis.zscore(REPORTS_DUE_KEY, job.email_id) is not None  # the scheduler's cue
    reporter.report(job.email_id)
    assert [p["Status"] for p in posted] == [["Sent"], ["Bounced"]]
    assert posted[1]["BounceCode"] == ["5.1.1"]
    assert "User unknown" in posted[1]["Reason"][0]


@pytest.fixture
def client(make_app: MakeApp, quiet: Settings, users: UserStore) -> FlaskClient:
    client = make_app(quiet).test_client()
    client.environ_base["REMOTE_ADDR"] = new_address()
    return client


def send_email(client: FlaskClient, **params: str) -> Any:
    query = {
        "command": "SendEmail",
        "Message": "hi",
        "Username": SEED_USER,
        "Password": SEED_PASSWORD,
        **params,
    }
    return client.get("/api", query_string=query)


def test_a_hard_bounced_address_is_refused_at_acceptance_until_removed(
    store: StatusStore, quiet: Settings, recorder: Recorder, client: FlaskClient, mailgate: RunCli
) -> None:
    job = send(store, quiet, "J.Smith@gmial.example")
    recorder.record(dsn(job.email_id, "j.smith@gmial.example"))
    answer = send_email(client, Recipient="ok@customer.example; Jane <j.smith@GMIAL.example>")
    text = answer.get_data(as_text=True)
    assert "<Code>302</Code>" in text
    assert "Missing or invalid parameter 'Recipient' for command 'SendEmail'" in text
    assert "is suppressed" in text and "5.1.1" in text and "bounced on 20" in text
    rest = client.post(
        "/api/v1/emails",
        json={"recipients": ["x@y.example"], "cc": ["j.smith@gmial.example"], "text": "hi"},
        headers={"Authorization": _basic()},
    )
    assert rest.status_code == 422
    assert rest.get_json()["error"]["code"] == "suppressed"
    assert rest.get_json()["error"]["field"] == "cc"
    # Another account may still send there: suppression is per account.
    assert Suppressions(store.redis).find("other", ["j.smith@gmial.example"]) is None

    env = {"MAILGATE_REDIS_URL": quiet.redis_url}
    listed = mailgate("suppressions", "list", "--account", SEED_USER, env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{SEED_USER}\tJ.Smith@gmial.example\t5.1.1\t" in listed.output
    removed = mailgate("suppressions", "remove", "j.smith@gmial.example", env=env)
    assert removed.exit_code == 0, removed.output
    assert f"for {SEED_USER}" in removed.output
    assert "<Code>200</Code>" in send_email(client, Recipient="j.smith@gmial.example").get_data(
        as_text=True
    )
    again = mailgate("suppressions", "remove", "j.smith@gmial.example", env=env)
    assert again.exit_code == 1


def test_suppression_off_refuses_nothing(
    store: StatusStore, quiet: Settings, make_app: MakeApp, users: UserStore
) -> None:
    Recorder(store, replace(quiet, suppression=False)).record(
        dsn(send(store, quiet, "off@customer.example").email_id, "off@customer.example")
    )
    assert Suppressions(store.redis).find(SEED_USER, ["off@customer.example"]) is None
    store.redis.set(f"mailgate:suppressed:{SEED_USER}:kept@customer.example", "{}")
    client = make_app(quiet, suppression=False).test_client()
    answer = send_email(client, Recipient="kept@customer.example")
    assert "<Code>200</Code>" in answer.get_data(as_text=True)


def test_a_suppression_lasts_its_setting(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    job = send(store, quiet, "ttl@customer.example")
    Recorder(store, replace(quiet, suppression_seconds=120)).record(
        dsn(job.email_id, "ttl@customer.example")
    )
    ttl = store.redis.ttl(f"mailgate:suppressed:{SEED_USER}:ttl@customer.example")
    assert 110 < ttl <= 120


def _basic() -> str:
    return "Basic " + base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()


# The SMTP listener.


@pytest.fixture
def listener(recorder: Recorder, quiet: Settings) -> Iterator[int]:
    port = free_port()
    server = controller(recorder, "127.0.0.1", port, 20_000, "5/minute")
    server.start()
    yield port
    server.stop()


def test_the_listener_takes_reports_for_the_bounce_address_only(
    store: StatusStore, quiet: Settings, listener: int
) -> None:
    job = send(store, quiet, "listened@customer.example")
    with smtplib.SMTP("127.0.0.1", listener, timeout=10) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail("")
        assert code == 250
        assert smtp.rcpt("postmaster@bounce.shop.example")[0] == 550
        assert smtp.rcpt(return_path(BOUNCES, job.email_id))[0] == 250
        code, reply = smtp.data(dsn(job.email_id, "listened@customer.example"))
    assert (code, reply) == (250, b"2.0.0 Ok: recorded")
    assert record_of(store, job.email_id).status is Status.BOUNCED


def test_the_listener_refuses_oversized_reports_and_floods(
    store: StatusStore, quiet: Settings, listener: int
) -> None:
    with smtplib.SMTP("127.0.0.1", listener, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPSenderRefused) as large:
            smtp.sendmail("", [BOUNCES], b"Subject: x\r\n\r\n" + b"y" * 30_000)
        assert large.value.smtp_code == 552
    codes = []
    with smtplib.SMTP("127.0.0.1", listener, timeout=10) as smtp:
        smtp.ehlo()
        for _ in range(6):
            codes.append(smtp.mail("")[0])
            smtp.rset()
    assert 451 in codes  # over 5/minute from this address (one MAIL was counted above)


def test_the_listener_answers_451_until_the_report_is_recorded(
    store: StatusStore, quiet: Settings
) -> None:
    # Redis away: the report must stay with the sending MTA, which tries again later.
    dead = StatusStore.from_url(f"redis://127.0.0.1:{free_port()}/0", 60)
    port = free_port()
    server = controller(Recorder(dead, quiet), "127.0.0.1", port, 20_000, "60/minute")
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("")
            smtp.rcpt(BOUNCES)
            code, reply = smtp.data(dsn(str(uuid.uuid4()), "x@customer.example"))
    finally:
        server.stop()
    assert code == 451 and b"try again later" in reply


@pytest.mark.integration
def test_the_bounces_command_records_a_report_over_smtp(
    store: StatusStore, quiet: Settings, tmp_path: Any
) -> None:
    port = free_port()
    env = mailgate_env(
        tmp_path,
        quiet.redis_url,
        "smtp://127.0.0.1:25",
        BOUNCE_ADDRESS=BOUNCES,
        BOUNCE_SMTP_PORT=str(port),
        LOG_FORMAT="text",
    )
    service = Service(
        "bounces", [str(VENV_BIN / "mailgate"), "bounces"], env, tmp_path / "bounces.log"
    ).start()
    try:
        service.wait_output("mailgate bounces ready", 30)
        job = send(store, quiet, "by-command@customer.example")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail(
                "",
                [return_path(BOUNCES, job.email_id)],
                dsn(job.email_id, "by-command@customer.example"),
            )
        assert record_of(store, job.email_id).status is Status.BOUNCED
    finally:
        assert service.stop() == 0
    assert "bounce listener on 127.0.0.1" in service.output()


def test_a_report_of_an_email_with_its_message_id_only_is_matched(
    store: StatusStore, quiet: Settings, recorder: Recorder
) -> None:
    # A relay that forces the envelope sender (Microsoft 365): no VERP anywhere in the report.
    job = send(store, replace(quiet, bounce_address=""), "forced@customer.example")
    report = dsn(job.email_id, "forced@customer.example", to="ivr@shop.example")
    assert recorder.record(report) is Verdict.RECORDED
    assert record_of(store, job.email_id).status is Status.BOUNCED


def test_the_procfile_and_compose_start_the_bounces_command() -> None:
    root = Path(__file__).resolve().parent.parent
    procfile = dict(line.split(": ", 1) for line in (root / "Procfile").read_text().splitlines())
    assert procfile["bounces"] == "mailgate supervise -- mailgate bounces"
    assert 'command: ["mailgate", "bounces"]' in (root / "docker-compose.yml").read_text()
