"""Delivery reports, like Ozeki's SMS delivery reports: when an e-mail ends Sent or Failed, POST
its outcome, form-encoded, to the job's ``DeliveryReportURL``.

Plain logic; the ``mailgate.report`` task (worker.tasks) runs :meth:`Reporter.report` and turns
a :class:`Step` with ``retry_in`` into a Celery retry. The report never touches the e-mail's
own state: it only adds ``report_*`` fields to the status record.

The signature, when ``MAILGATE_CALLBACK_SECRET`` is set::

    X-Mailgate-Timestamp: <unix seconds>
    X-Mailgate-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

where ``body`` is the exact request body. Each attempt is signed afresh with its own timestamp
(the body stays the same), so a receiver may refuse timestamps older than a few minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from enum import StrEnum
from typing import IO, Protocol
from urllib.parse import urlencode, urlsplit

from redis.exceptions import RedisError

from mailgate import __version__
from mailgate.config import Settings
from mailgate.errors import InvalidParameter
from mailgate.status import Record, ReportStatus, Status, StatusStore
from mailgate.validation import check_callback_url
from worker.retry import backoff

log = logging.getLogger(__name__)

NOTIFICATION_NAME = "EmailDeliveryReport"
MAX_ATTEMPTS = 8
"""POSTs of one report before it is given up (recorded ``report_status=Failed``)."""
TIMEOUT_SECONDS = 10.0
USER_AGENT = f"mailgate/{__version__}"


class Verdict(StrEnum):
    """What an HTTP answer means for the report."""

    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give-up"


class Result(StrEnum):
    """What one run of the report task did (its return value, shown by Flower)."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    REFUSED = "refused"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Answer:
    """The endpoint's HTTP status, or None when none came (time-out, refused, reset)."""

    status: int | None
    error: str = ""


@dataclass(frozen=True)
class Step:
    """The outcome of one run; ``retry_in`` seconds when another POST is due."""

    result: Result
    retry_in: float | None = None


class Poster(Protocol):
    """Sends one POST; never raises for network trouble, answers an :class:`Answer`."""

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Answer: ...


def classify(status: int | None) -> Verdict:
    """2xx is done; 408, 429, 5xx and no answer are worth another try; anything else is not."""
    if status is None or status in (408, 429) or 500 <= status < 600:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    return Verdict.GIVE_UP  # other 4xx, and 3xx: redirects are not followed


def iso_utc(timestamp: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as GetEmailStatus shows times."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def form_body(record: Record) -> bytes:
    """The report's ``application/x-www-form-urlencoded`` body for a Sent or Failed record."""
    sent = record.status is Status.SENT
    # mark_failed leaves no failed_at; updated_at dates it, as reports never move updated_at.
    at = record.sent_at if sent and record.sent_at else record.updated_at
    fields = [
        ("NotificationName", NOTIFICATION_NAME),
        ("EmailId", record.email_id),
        ("Status", record.status.value),
        ("Attempts", str(record.attempts)),
        ("Time", iso_utc(at)),
        ("Reason", "" if sent else record.last_error or ""),
        ("SmtpResponse", record.smtp_response or ""),
    ]
    return urlencode(fields).encode("ascii")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``timestamp + "." + body`` keyed with ``secret``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def report_headers(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The request headers; no signature header when no secret is configured."""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": USER_AGENT,
        "X-Mailgate-Timestamp": str(timestamp),
    }
    if secret:
        headers["X-Mailgate-Signature"] = sign(secret, timestamp, body)
    return headers


def safe_url(url: str) -> str:
    """The URL for a log line: no credentials, query string or fragment (they may be tokens)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # not .port: it raises on a port out of range
    return f"{parts.scheme}://{host}{parts.path}"


def target(raw: str, allowed: tuple[str, ...]) -> str:
    """The URL if a report may go there now; InvalidParameter (with its reason) if not."""
    url = check_callback_url(raw, allowed)
    try:
        port = urlsplit(url).port
    except ValueError:  # check_callback_url lets "host:99999" through; the socket would not
        port = 0
    if port == 0:
        raise InvalidParameter("DeliveryReportURL", "invalid port")
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """An allowed host must not bounce the report to one that is not (an internal address)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None  # urllib then raises HTTPError with the 3xx code


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """POST with urllib, no redirects followed; network errors become an :class:`Answer`."""
    opener = urllib.request.build_opener(_NoRedirects())
    # S310: the URL passed check_callback_url (http or https only, on an allowed host).
    request = urllib.request.Request(  # noqa: S310
        url, data=body, headers=dict(headers), method="POST"
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            # The body is not read: a slow endpoint cannot hold the worker past the timeout.
            return Answer(int(response.status))
    except urllib.error.HTTPError as exc:
        exc.close()
        return Answer(exc.code, f"HTTP {exc.code}")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Answer(None, f"no answer: {reason or type(exc).__name__}")


@dataclass
class Reporter:
    """Sends the delivery report of one e-mail and records how it went."""

    store: StatusStore
    settings: Settings
    post: Poster = http_post
    clock: Callable[[], float] = time.time

    @property
    def timeout(self) -> float:
        # A quarter of the redelivery time, so countdown + POST stay inside the visibility.
        return min(TIMEOUT_SECONDS, self.settings.redelivery_seconds / 4)

    def retry_delay(self, attempt: int) -> float:
        """The countdown before the POST after ``attempt``."""
        # A Celery countdown is an ETA message the worker holds unacknowledged until it is due.
        # On Redis, kombu hands a message unacknowledged longer than the visibility timeout
        # (mailgate.broker: a little under MAILGATE_REDELIVERY_SECONDS) to a consumer again,
        # so a longer countdown would fork the report into duplicates, again and again (kombu
        # #337). Half the redelivery time, plus a POST of at most a quarter, stays inside it
        # (for MAILGATE_REDELIVERY_SECONDS >= 10 the visibility is at least 80 % of it).
        s = self.settings
        cap = min(s.retry_max_delay_seconds, s.redelivery_seconds / 2)
        return backoff(attempt, s.retry_base_seconds, cap)

    def report(self, email_id: str, attempt: int) -> Step:
        """POST attempt number ``attempt`` (1-based) of this e-mail's report, if one is due."""
        try:
            record = self.store.get(email_id)
        except RedisError as exc:
            log.warning("report of %s: status store unavailable (%s)", email_id, type(exc).__name__)
            if attempt < MAX_ATTEMPTS:
                return Step(Result.RETRYING, self.retry_delay(attempt))
            return Step(Result.FAILED)
        if record is None or not record.status.final or not record.callback_url:
            self._forget(email_id)
            return Step(Result.SKIPPED)  # expired, requeued meanwhile, or nothing to report
        if record.report_status is not None and record.report_status.final:
            self._forget(email_id)
            return Step(Result.SKIPPED)  # a redelivered task: this report is settled
        # A watchdog's publish starts counting again at 1; the record knows better.
        attempt = max(attempt, record.report_attempts + 1)
        try:
            # Settings may have changed since the API accepted the URL.
            url = target(record.callback_url, self.settings.callback_allowed)
        except InvalidParameter as exc:
            self._record(email_id, ReportStatus.FAILED, attempt - 1, str(exc.reason))
            log.warning("report of %s to %s refused: %s", email_id,
                        safe_url(record.callback_url), exc.reason)  # fmt: skip
            return Step(Result.REFUSED)
        body = form_body(record)
        headers = report_headers(body, self.settings.callback_secret, int(self.clock()))
        answer = self.post(url, body, headers, self.timeout)
        verdict = classify(answer.status)
        if verdict is Verdict.DELIVERED:
            self._record(email_id, ReportStatus.DELIVERED, attempt)
            log.info("report of %s delivered on attempt %d", email_id, attempt)
            return Step(Result.DELIVERED)
        if verdict is Verdict.RETRY and attempt < MAX_ATTEMPTS:
            delay = self.retry_delay(attempt)
            # The watchdog waits out the countdown, plus the time a lost retry takes to show.
            next_due = self.clock() + delay + self.settings.redelivery_seconds
            self._record(email_id, ReportStatus.RETRYING, attempt, answer.error, next_due)
            log.info("report of %s, attempt %d: %s", email_id, attempt, answer.error)
            return Step(Result.RETRYING, delay)
        self._record(email_id, ReportStatus.FAILED, attempt, answer.error)
        log.warning("report of %s to %s given up after %d attempt(s): %s", email_id,
                    safe_url(url), attempt, answer.error)  # fmt: skip
        return Step(Result.FAILED)

    def _record(
        self,
        email_id: str,
        status: ReportStatus,
        attempts: int,
        error: str = "",
        next_due: float | None = None,
    ) -> None:
        try:
            self.store.record_report(email_id, status, attempts, error, next_due)
        except RedisError as exc:  # the POST is done either way; do not repeat it for this
            log.warning("could not record the report of %s: %s", email_id, type(exc).__name__)

    def _forget(self, email_id: str) -> None:
        # On a Redis error the watchdog fires once more and lands here again: harmless.
        with contextlib.suppress(RedisError):
            self.store.forget_report_due(email_id)
