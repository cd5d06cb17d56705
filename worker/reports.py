"""Delivery reports, like Ozeki's SMS delivery reports: when an e-mail ends Sent or Failed, POST
its outcome to the job's ``DeliveryReportURL`` (the wire side is worker.report_http).

Plain logic; the ``mailgate.report`` task (worker.tasks) calls :meth:`Reporter.run`. A report
retries on the same rails as a delivery: not with Celery countdowns (an ETA message held longer
than the Redis visibility timeout is redelivered again and again, kombu #337) but through the
report due set, which every worker's scheduler publishes from. The entry set with the final
state is the report's watchdog; a retry moves it to the back-off's end. The report never
touches the e-mail's own state: it only adds ``report_*`` fields to the status record.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from redis.exceptions import RedisError

from mailgate.config import Settings
from mailgate.errors import InvalidParameter
from mailgate.status import ReportStatus, StatusStore
from mailgate.validation import check_callback_url
from worker.report_http import (
    TIMEOUT_SECONDS,
    Poster,
    classify,
    form_body,
    http_post,
    report_headers,
    safe_url,
)
from worker.retry import backoff

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
"""POSTs of one report before it is given up (recorded ``report_status=Failed``)."""
SLOT_WAIT_SECONDS = 1.0
"""How soon a report that found every report slot taken tries again (not a POST attempt)."""


class Result(StrEnum):
    """What one run of the report task did (its return value, shown by Flower)."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEFERRED = "deferred"
    FAILED = "failed"
    REFUSED = "refused"
    SKIPPED = "skipped"


def report_slots(concurrency: int) -> int:
    """How many of the worker's threads may be POSTing reports at once: a quarter, at least
    one, so a slow or hanging callback endpoint never holds the threads deliveries need."""
    return max(1, concurrency // 4)


@dataclass
class Reporter:
    """Sends the delivery report of one e-mail, records how it went, schedules the next try."""

    store: StatusStore
    settings: Settings
    post: Poster = http_post
    clock: Callable[[], float] = time.time
    slots: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.size_slots(self.settings.worker_concurrency)

    def size_slots(self, concurrency: int) -> int:
        """Allow a quarter of ``concurrency`` threads to report at once; that number."""
        size = report_slots(concurrency)
        self.slots = threading.BoundedSemaphore(size)
        return size

    @property
    def timeout(self) -> float:
        # Well inside the lease on the report's due entry (MAILGATE_REDELIVERY_SECONDS) and
        # the broker's visibility timeout, so a slow POST is not published a second time.
        return min(TIMEOUT_SECONDS, self.settings.redelivery_seconds / 4)

    def retry_delay(self, attempt: int) -> float:
        """The back-off before the POST after ``attempt``, as for deliveries."""
        s = self.settings
        return backoff(attempt, s.retry_base_seconds, s.retry_max_delay_seconds)

    def run(self, email_id: str) -> Result:
        """The task's body: report now if a slot is free, else come back in a second."""
        slots = self.slots  # size_slots may swap it meanwhile: release the one acquired
        if not slots.acquire(blocking=False):
            self._schedule(email_id, self.clock() + SLOT_WAIT_SECONDS)
            return Result.DEFERRED
        try:
            return self.report(email_id)
        finally:
            slots.release()

    def report(self, email_id: str, attempt: int = 1) -> Result:
        """POST this e-mail's report if one is due; ``attempt`` is at least the record's next."""
        try:
            record = self.store.get(email_id)
        except RedisError as exc:
            # Its due entry (leased when published) brings the report back later.
            log.warning("report of %s: status store unavailable (%s)", email_id, type(exc).__name__)
            return Result.RETRYING
        if record is None or not record.status.final or not record.callback_url:
            self._forget(email_id)
            return Result.SKIPPED  # expired, requeued meanwhile, or nothing to report
        if record.report_status is not None and record.report_status.final:
            self._forget(email_id)
            return Result.SKIPPED  # published twice: this report is settled
        attempt = max(attempt, record.report_attempts + 1)
        try:
            # Settings may have changed since the API accepted the URL.
            url = check_callback_url(record.callback_url, self.settings.callback_allowed)
        except InvalidParameter as exc:
            self._record(email_id, ReportStatus.FAILED, attempt - 1, str(exc.reason))
            log.warning(
                "report of %s to %s refused: %s",
                email_id,
                safe_url(record.callback_url),
                exc.reason,
            )
            return Result.REFUSED
        body = form_body(record)
        headers = report_headers(body, self.settings.callback_secret, int(self.clock()))
        answer = self.post(url, body, headers, self.timeout)
        outcome = classify(answer.status)
        if outcome is ReportStatus.DELIVERED:
            self._record(email_id, ReportStatus.DELIVERED, attempt)
            log.info("report of %s delivered on attempt %d", email_id, attempt)
            return Result.DELIVERED
        if outcome is ReportStatus.RETRYING and attempt < MAX_ATTEMPTS:
            next_due = self.clock() + self.retry_delay(attempt)
            self._record(email_id, ReportStatus.RETRYING, attempt, answer.error, next_due)
            log.info("report of %s, attempt %d: %s", email_id, attempt, answer.error)
            return Result.RETRYING
        self._record(email_id, ReportStatus.FAILED, attempt, answer.error)
        log.warning(
            "report of %s to %s given up after %d attempt(s): %s",
            email_id,
            safe_url(url),
            attempt,
            answer.error,
        )
        return Result.FAILED

    def _record(
        self,
        email_id: str,
        status: ReportStatus,
        attempts: int,
        error: str = "",
        next_due: float | None = None,
    ) -> None:
        """Record the outcome; ``next_due`` puts the next try on the report due set."""
        try:
            self.store.record_report(email_id, status, attempts, error, next_due)
        except RedisError as exc:  # the POST is done either way; do not repeat it for this
            log.warning("could not record the report of %s: %s", email_id, type(exc).__name__)

    def _schedule(self, email_id: str, at: float) -> None:
        try:
            self.store.schedule_report(email_id, at)
        except RedisError as exc:  # its leased due entry brings it back later
            log.warning("could not defer the report of %s: %s", email_id, type(exc).__name__)

    def _forget(self, email_id: str) -> None:
        # On a Redis error the due entry fires once more and lands here again: harmless.
        with contextlib.suppress(RedisError):
            self.store.forget_report_due(email_id)
