"""Delivery reports: a real HTTP endpoint receives them from a real worker, signed and retried.

This module runs its own Redis, SMTP server, callback server and worker process, because the
session's worker has no MAILGATE_CALLBACK_ALLOWED or MAILGATE_CALLBACK_SECRET.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

import pytest
import redis
from flask.testing import FlaskClient

from mailgate import __version__
from mailgate.broker import make_celery
from mailgate.config import Settings
from mailgate.errors import InvalidParameter
from mailgate.jobs import REPORT_TASK_NAME, EmailJob
from mailgate.status import REPORTS_DUE_KEY, Outcome, Record, ReportStatus, Status, StatusStore
from mailgate.status import iso as iso_utc
from mailgate.users import UserStore
from mailgate.validation import check_callback_url
from tests.support import (
    RedisServer,
    Service,
    SmtpServer,
    free_port,
    mailgate_env,
    wait_for,
    worker_args,
)
from worker.delivery import Delivery
from worker.report_http import (
    Answer,
    classify,
    form_body,
    http_post,
    report_headers,
    safe_url,
    sign,
)
from worker.reports import MAX_ATTEMPTS, SLOT_WAIT_SECONDS, Reporter, Result
from worker.tasks import publish_report

pytestmark = pytest.mark.integration  # real processes of its own

USER, PASSWORD = "reports", "reports-test-pw"
SECRET = "test-callback-secret"
REDELIVERY = 10.0  # report POST timeout 2.5 s; back-off capped at 1 s (the retry max delay)


@dataclass
class Hit:
    """One request the callback server received."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CallbackServer:
    """A real HTTP endpoint on loopback that records every request.

    ``fail_first[path] = N`` answers 500 to the first N requests of that path, then 200.
    ``/never...`` always answers 500; ``/slow...`` holds each request until ``release`` is
    set; ``/redirect...`` answers 302 to ``/landed``.
    """

    hits: list[Hit] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits_for(self, path: str) -> list[Hit]:
        with self.lock:
            return [hit for hit in self.hits if hit.path.split("?")[0] == path]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _answer(self, path: str) -> int:
        with self.lock:
            seen = sum(hit.path.split("?")[0] == path for hit in self.hits)
        if path.startswith("/never"):
            return 500
        if path.startswith("/slow"):
            self.release.wait(30)
        if path.startswith("/redirect"):
            return 302
        return 500 if seen <= self.fail_first.get(path, 0) else 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server.lock:
                    server.hits.append(Hit(self.path, dict(self.headers.items()), body))
                status = server._answer(self.path.split("?")[0])
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", server.url("/landed"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@dataclass
class Rig:
    """The module's own parts: settings with a callback allowlist and secret, the servers."""

    settings: Settings
    smtp: SmtpServer
    hooks: CallbackServer
    worker: Service


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("reports")
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    smtp = SmtpServer()
    smtp.start()
    hooks = CallbackServer()
    hooks.start()
    env = mailgate_env(
        workdir,
        redis_server.url,
        smtp.url,
        RETRY_BASE_SECONDS="0.05",
        RETRY_MAX_DELAY_SECONDS="1",
        MAX_ATTEMPTS="4",
        REDELIVERY_SECONDS=str(REDELIVERY),
        SMTP_TIMEOUT_SECONDS="3",
        CALLBACK_ALLOWED=f"127.0.0.1:{hooks.port}",
        CALLBACK_SECRET=SECRET,
    )
    settings = Settings.from_env(env)
    UserStore(settings.users_file).add(USER, PASSWORD)
    worker = Service("worker", worker_args(), env, workdir / "worker.log").start()
    worker.wait_output(r"ready\.", 60)
    yield Rig(settings, smtp, hooks, worker)
    worker.stop()
    hooks.stop()
    smtp.stop()
    redis_server.stop()


@pytest.fixture(scope="module")
def settings(rig: Rig) -> Settings:
    return rig.settings


@pytest.fixture(scope="module")
def users(settings: Settings) -> UserStore:
    return UserStore(settings.users_file)


@pytest.fixture(scope="module")
def hooks(rig: Rig) -> CallbackServer:
    return rig.hooks


@pytest.fixture(scope="module")
def smtp(rig: Rig) -> SmtpServer:
    return rig.smtp


@pytest.fixture(scope="module")
def store(settings: Settings) -> StatusStore:
    return StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)


def unique(prefix: str) -> str:
    return f"/{prefix}-{uuid.uuid4().hex[:12]}"


def accept(client: FlaskClient, report_url: str, recipient: str = "someone@reports.example") -> str:
    """Accept one e-mail through the API with a DeliveryReportURL; its EmailId."""
    response = client.post(
        "/api",
        data={
            "command": "SendEmail",
            "Recipient": recipient,
            "Message": "hello",
            "DeliveryReportURL": report_url,
            "Username": USER,
            "Password": PASSWORD,
        },
    )
    root = ET.fromstring(response.data)
    assert root.findtext("Code") == "200", response.data
    return str(root.findtext("EmailId"))


def record_of(store: StatusStore, email_id: str) -> Record:
    record = store.get(email_id)
    assert record is not None
    return record


def report_settled(store: StatusStore, email_id: str, timeout: float = 30) -> Record:
    def settled() -> Record | None:
        record = store.get(email_id)
        done = record is not None and record.report_status in (
            ReportStatus.DELIVERED,
            ReportStatus.FAILED,
        )
        return record if done else None

    return wait_for(settled, timeout, f"the report of {email_id} to settle")


def new_job(callback_url: str) -> EmailJob:
    return EmailJob(
        email_id=str(uuid.uuid4()),
        owner=USER,
        sender="a@reports.example",
        recipients=("b@reports.example",),
        message="m",
        callback_url=callback_url,
    )


def sent_record(store: StatusStore, callback_url: str) -> str:
    """A record written straight to the store (no worker involved) and marked Sent."""
    job = new_job(callback_url)
    store.create(job, watchdog_at=time.time() + 3600)
    store.mark_sent(job.email_id, 1, "250 ok")
    return job.email_id


def fields(hit: Hit) -> dict[str, str]:
    parsed = parse_qs(hit.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in parsed.values()), parsed
    return {name: values[0] for name, values in parsed.items()}


def assert_signed(hit: Hit) -> None:
    timestamp = hit.headers["X-Mailgate-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    signed = timestamp.encode() + b"." + hit.body
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["X-Mailgate-Signature"], f"sha256={expected}")


# --- end to end: API -> worker -> SMTP -> report to the callback server ------------------------


def test_a_sent_email_is_reported_with_its_fields_and_a_valid_signature(
    client: FlaskClient, store: StatusStore, hooks: CallbackServer
) -> None:
    path = unique("sent")
    email_id = accept(client, hooks.url(path) + "?token=abc")
    [hit] = wait_for(lambda: hooks.hits_for(path), 30, "the report")
    record = record_of(store, email_id)
    assert record.status is Status.SENT and record.sent_at is not None
    assert hit.path == f"{path}?token=abc"
    assert fields(hit) == {
        "NotificationName": "EmailDeliveryReport",
        "EmailId": email_id,
        "Status": "Sent",
        "Attempts": "1",
        "Time": iso_utc(record.sent_at),
        "Reason": "",
        "SmtpResponse": record.smtp_response,
    }
    assert fields(hit)["Time"].endswith("Z") and fields(hit)["SmtpResponse"].startswith("250")
    assert hit.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert hit.headers["User-Agent"] == f"mailgate/{__version__}"
    assert_signed(hit)
    record = report_settled(store, email_id)
    assert (record.report_status, record.report_attempts) == (ReportStatus.DELIVERED, 1)


def test_a_failed_email_is_reported_with_its_reason(
    client: FlaskClient, store: StatusStore, hooks: CallbackServer
) -> None:
    path = unique("failed")
    email_id = accept(client, hooks.url(path), recipient="reject-x@reports.example")
    [hit] = wait_for(lambda: hooks.hits_for(path), 30, "the report")
    record = record_of(store, email_id)
    assert record.status is Status.FAILED
    report = fields(hit)
    assert (report["EmailId"], report["Status"], report["Attempts"]) == (email_id, "Failed", "1")
    assert "550" in report["Reason"] and report["Reason"] == record.last_error
    assert report["SmtpResponse"].startswith("550")
    assert report["Time"] == iso_utc(record.updated_at)
    assert_signed(hit)
    assert report_settled(store, email_id).report_status is ReportStatus.DELIVERED


def test_a_report_answered_500_twice_is_delivered_on_the_third_try(
    client: FlaskClient, store: StatusStore, hooks: CallbackServer
) -> None:
    path = unique("flaky")
    hooks.fail_first[path] = 2
    email_id = accept(client, hooks.url(path))
    record = report_settled(store, email_id)
    assert (record.report_status, record.report_attempts) == (ReportStatus.DELIVERED, 3)
    hits = hooks.hits_for(path)
    assert len(hits) == 3
    assert len({hit.body for hit in hits}) == 1, "every try reports the same outcome"
    for hit in hits:
        assert_signed(hit)  # each try signed with its own timestamp


def test_an_endpoint_that_never_answers_2xx_leaves_the_email_sent(
    client: FlaskClient, store: StatusStore, hooks: CallbackServer, smtp: SmtpServer
) -> None:
    path = unique("never")
    email_id = accept(client, hooks.url(path))
    sent = wait_for(lambda: record_of(store, email_id).status is Status.SENT, 30, "Sent")
    sent = record_of(store, email_id)
    record = report_settled(store, email_id)
    assert (record.report_status, record.report_attempts) == (ReportStatus.FAILED, MAX_ATTEMPTS)
    assert record.report_error == "HTTP 500"
    assert len(hooks.hits_for(path)) == MAX_ATTEMPTS
    # The e-mail itself is untouched: still Sent once, same attempt count and times.
    assert (record.status, record.attempts) == (Status.SENT, 1)
    assert (record.sent_at, record.updated_at) == (sent.sent_at, sent.updated_at)
    assert [log.outcome for log in store.history(email_id)] == [Status.SENT]
    assert smtp.handler.count(email_id) == 1


def test_a_hanging_endpoint_does_not_hold_the_email_back(
    client: FlaskClient, store: StatusStore, hooks: CallbackServer, smtp: SmtpServer
) -> None:
    path = unique("slow")
    hooks.release.clear()
    try:
        email_id = accept(client, hooks.url(path))
        wait_for(lambda: hooks.hits_for(path), 30, "the report to reach the endpoint")
        # The endpoint has not answered yet, and the e-mail is already Sent and delivered.
        record = record_of(store, email_id)
        assert record.status is Status.SENT and record.report_status is None
        assert smtp.handler.count(email_id) == 1
    finally:
        hooks.release.set()
    assert report_settled(store, email_id).report_status is ReportStatus.DELIVERED


def test_hanging_report_endpoints_do_not_delay_other_deliveries(
    client: FlaskClient, store: StatusStore, hooks: CallbackServer
) -> None:
    paths = [unique("slow") for _ in range(8)]
    hooks.release.clear()
    try:
        for path in paths:
            accept(client, hooks.url(path))
        wait_for(lambda: any(hooks.hits_for(p) for p in paths), 30, "a report to hang")
        started = time.monotonic()
        plain = [accept(client, "") for _ in range(6)]

        def all_sent() -> bool:
            return all(record_of(store, e).status is Status.SENT for e in plain)

        wait_for(all_sent, 30, "the e-mails without reports to be Sent")
        # The worker has 4 threads; the hanging POSTs may hold one of them, not all.
        assert time.monotonic() - started < 2.0
    finally:
        hooks.release.set()


def test_the_report_task_carries_only_the_email_id(settings: Settings) -> None:
    # Publish to a database no worker reads, then look at the raw message (what Flower shows).
    url = settings.redis_url.rsplit("/", 1)[0] + "/3"
    app = make_celery(replace(settings, redis_url=url, broker_url=url))
    email_id = str(uuid.uuid4())
    publish_report(app, email_id)
    [message] = [json.loads(m) for m in redis.Redis.from_url(url).lrange("mailgate", 0, -1)]
    assert message["headers"]["task"] == REPORT_TASK_NAME
    assert message["headers"]["argsrepr"] == repr([email_id])
    assert message["headers"]["id"] == f"report-{email_id}"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([email_id], {})


# --- the logic as plain functions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, ReportStatus.DELIVERED), (204, ReportStatus.DELIVERED), (299, ReportStatus.DELIVERED),
        (None, ReportStatus.RETRYING), (408, ReportStatus.RETRYING), (429, ReportStatus.RETRYING),
        (500, ReportStatus.RETRYING), (502, ReportStatus.RETRYING), (503, ReportStatus.RETRYING),
        (301, ReportStatus.FAILED), (302, ReportStatus.FAILED), (400, ReportStatus.FAILED),
        (401, ReportStatus.FAILED), (404, ReportStatus.FAILED), (410, ReportStatus.FAILED),
    ],
    ids=lambda v: str(v),
)  # fmt: skip
def test_outcome_classification(status: int | None, expected: ReportStatus) -> None:
    assert classify(status) is expected


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b"NotificationName=EmailDeliveryReport&EmailId=x"
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, body) == f"sha256={expected}"
    # Any change to the timestamp, the body or the key changes the signature.
    others = {
        sign("k", 1700000001, body),
        sign("k", 1700000000, body + b"&"),
        sign("j", 1700000000, body),
    }
    assert sign("k", 1700000000, body) not in others and len(others) == 3


def test_without_a_secret_there_is_no_signature_header() -> None:
    headers = report_headers(b"a=b", "", 1700000000)
    assert "X-Mailgate-Signature" not in headers
    assert headers["X-Mailgate-Timestamp"] == "1700000000"
    assert report_headers(b"a=b", "k", 1700000000)["X-Mailgate-Signature"].startswith("sha256=")


def test_a_sent_record_reports_no_reason_even_after_earlier_errors() -> None:
    record = Record(
        email_id="id-1",
        owner="u",
        status=Status.SENT,
        attempts=2,
        created_at=1.0,
        updated_at=1700000002.5,
        since=1.0,
        sent_at=1700000002.5,
        last_error="451 try later",
        smtp_response="250 ok & done",
    )
    assert form_body(record) == (
        b"NotificationName=EmailDeliveryReport&EmailId=id-1&Status=Sent&Attempts=2"
        b"&Time=2023-11-14T22%3A13%3A22.500Z&Reason=&SmtpResponse=250+ok+%26+done"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@h.example:8080/x/y?token=s3cret#f", "http://h.example:8080/x/y"),
        ("https://h.example:99999/p?q=1", "https://h.example:99999/p"),
    ],
    ids=["credentials-query-fragment", "bad-port"],
)
def test_logged_urls_lose_credentials_and_query(url: str, shown: str) -> None:
    assert safe_url(url) == shown


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/hook", "http://127.0.0.1:99999/hook", "http://127.0.0.1:0/hook",
     "http://127.0.0.1:6379/hook", "https://127.0.0.1/hook"],
    ids=["host-not-allowed", "port-out-of-range", "port-zero", "other-port", "default-port"],
)  # fmt: skip
def test_a_url_is_checked_again_before_sending(url: str) -> None:
    with pytest.raises(InvalidParameter):
        check_callback_url(url, ("127.0.0.1:8080",))
    assert check_callback_url("http://127.0.0.1:8080/hook", ("127.0.0.1:8080",))


def test_redirects_are_not_followed(hooks: CallbackServer) -> None:
    path = unique("redirect")
    before = len(hooks.hits_for("/landed"))
    answer = http_post(hooks.url(path), b"a=b", {}, 5)
    assert answer == Answer(302, "HTTP 302")
    assert len(hooks.hits_for(path)) == 1 and len(hooks.hits_for("/landed")) == before


def test_a_slow_endpoint_times_out_and_a_closed_port_is_no_answer(hooks: CallbackServer) -> None:
    hooks.release.clear()
    try:
        answer = http_post(hooks.url(unique("slow")), b"a=b", {}, 0.3)
    finally:
        hooks.release.set()
    assert answer.status is None and "timed out" in answer.error
    answer = http_post(f"http://127.0.0.1:{free_port()}/", b"a=b", {}, 2)
    assert answer.status is None and answer.error.startswith("no answer")


def test_a_host_no_longer_allowed_gets_no_report(
    settings: Settings, store: StatusStore, hooks: CallbackServer
) -> None:
    path = unique("disallowed")
    email_id = sent_record(store, hooks.url(path))
    reporter = Reporter(store, replace(settings, callback_allowed=("hooks.example",)))
    assert reporter.report(email_id, 1) is Result.REFUSED
    assert reporter.report(email_id, 2) is Result.SKIPPED  # settled: not tried again
    record = record_of(store, email_id)
    assert (record.report_status, record.report_attempts) == (ReportStatus.FAILED, 0)
    assert record.report_error == "host and port not in MAILGATE_CALLBACK_ALLOWED"
    assert hooks.hits_for(path) == []


class Refuses:
    """A callback endpoint that always answers 503, counting the POSTs."""

    def __init__(self) -> None:
        self.posts = 0

    def __call__(self, url: str, body: bytes, headers: object, timeout: float) -> Answer:
        self.posts += 1
        return Answer(503, "HTTP 503")


@pytest.mark.parametrize("redelivery", [10, 60, 3600])
def test_a_report_retry_is_scheduled_on_the_report_due_set_not_as_a_countdown(
    settings: Settings, store: StatusStore, hooks: CallbackServer, redelivery: float
) -> None:
    # Back-off far longer than the visibility timeout: with the due set that is harmless.
    slow = replace(
        settings,
        retry_base_seconds=3000,
        retry_max_delay_seconds=86400,
        redelivery_seconds=redelivery,
    )
    email_id = sent_record(store, hooks.url(unique("unused")))
    now = time.time()
    endpoint = Refuses()
    reporter = Reporter(store, slow, post=endpoint, clock=lambda: now)
    assert reporter.report(email_id) is Result.RETRYING
    due = store.redis.zscore(REPORTS_DUE_KEY, email_id)
    assert due is not None and now + 1500 <= due <= now + 4500  # 3000 s ± 50 % jitter
    record = record_of(store, email_id)
    assert (record.report_status, record.report_attempts) == (ReportStatus.RETRYING, 1)
    # The next run is the second attempt, counted from the record, not from the task.
    assert reporter.report(email_id) is Result.RETRYING
    assert (record_of(store, email_id).report_attempts, endpoint.posts) == (2, 2)


def test_a_report_with_no_free_slot_comes_back_in_a_second_through_the_due_set(
    settings: Settings, store: StatusStore, hooks: CallbackServer
) -> None:
    email_id = sent_record(store, hooks.url(unique("unused")))
    now = time.time()
    endpoint = Refuses()
    reporter = Reporter(store, settings, post=endpoint, clock=lambda: now)
    assert reporter.size_slots(8) == 2
    assert reporter.slots.acquire(blocking=False) and reporter.slots.acquire(blocking=False)
    assert reporter.run(email_id) is Result.DEFERRED
    assert store.redis.zscore(REPORTS_DUE_KEY, email_id) == now + SLOT_WAIT_SECONDS
    record = record_of(store, email_id)
    assert (record.report_status, record.report_attempts, endpoint.posts) == (None, 0, 0)
    reporter.slots.release()
    assert reporter.run(email_id) is Result.RETRYING  # a slot is free again: a real attempt
    assert (record_of(store, email_id).report_attempts, endpoint.posts) == (1, 1)


class Accepts:
    """A transport that takes every message (the logic under test is after the send)."""

    def send(self, message: object, sender: str, recipients: list[str]) -> str:
        return "250 ok"


def test_a_failed_report_publish_does_not_fail_the_delivery(
    settings: Settings, store: StatusStore
) -> None:
    def broken(email_id: str) -> None:
        raise ConnectionError("broker away")

    job = new_job("http://127.0.0.1:1/hook?token=s3cret")
    store.create(job, watchdog_at=time.time() + 3600)
    delivery = Delivery(store, Accepts(), settings, report=broken)
    assert delivery.deliver(job.email_id) is Outcome.SENT
    assert record_of(store, job.email_id).status is Status.SENT


def test_an_already_settled_report_is_not_sent_again(
    settings: Settings, store: StatusStore, hooks: CallbackServer
) -> None:
    path = unique("settled")
    email_id = sent_record(store, hooks.url(path))
    reporter = Reporter(store, settings)
    assert reporter.report(email_id, 1) is Result.DELIVERED
    assert reporter.report(email_id, 1) is Result.SKIPPED  # a redelivered task
    assert len(hooks.hits_for(path)) == 1


def test_a_report_whose_publish_was_lost_is_sent_by_its_watchdog(
    rig: Rig, store: StatusStore, hooks: CallbackServer
) -> None:
    # As if the worker died right after recording Sent, before publishing the report task:
    # the final state carries the report's watchdog, and a running worker's scheduler fires it.
    path = unique("watchdog")
    job = new_job(hooks.url(path))
    store.create(job, watchdog_at=time.time() + 3600)
    store.mark_sent(job.email_id, 1, "250 ok", report_due=time.time())
    record = report_settled(store, job.email_id)
    assert record.report_status is ReportStatus.DELIVERED
    assert len(hooks.hits_for(path)) == 1
    assert store.redis.zscore("mailgate:reports:due", job.email_id) is None


def test_a_report_outcome_and_its_watchdog_change_in_one_step(store: StatusStore) -> None:
    # Whoever looks (a scheduler, a second report task) sees a Retrying report with its next
    # try on the due set, or a settled one off it: never one without the other.
    job = new_job("https://hooks.example/x")
    store.create(job, watchdog_at=time.time() + 3600)
    store.mark_sent(job.email_id, 1, "250 ok", report_due=time.time() + 3600)
    key, seen, stop = f"mailgate:email:{job.email_id}", set(), threading.Event()

    def watch() -> None:
        while not stop.is_set():
            pipe = store.redis.pipeline(transaction=True)
            pipe.hget(key, "report_status")
            pipe.zscore("mailgate:reports:due", job.email_id)
            status, due = pipe.execute()
            seen.add((status, due is not None))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for attempt in range(1, 300, 2):
            later = time.time() + 60
            store.record_report(job.email_id, ReportStatus.RETRYING, attempt, "503", later)
            store.record_report(job.email_id, ReportStatus.DELIVERED, attempt + 1)
    finally:
        stop.set()
        watcher.join(10)
    assert seen <= {(None, True), ("Retrying", True), ("Delivered", False)}
    assert ("Delivered", False) in seen


def test_a_settled_report_clears_its_watchdog(
    settings: Settings, store: StatusStore, hooks: CallbackServer
) -> None:
    path = unique("clears")
    job = new_job(hooks.url(path))
    store.create(job, watchdog_at=time.time() + 3600)
    store.mark_sent(job.email_id, 1, "250 ok", report_due=time.time() + 3600)
    assert store.redis.zscore("mailgate:reports:due", job.email_id) is not None
    assert Reporter(store, settings).report(job.email_id, 1) is Result.DELIVERED
    assert store.redis.zscore("mailgate:reports:due", job.email_id) is None
