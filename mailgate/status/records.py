"""What a status record is: states, the record itself, its attempt log, parsing, and its one
presentation (:meth:`Record.fields`, :meth:`AttemptLog.fields`, :func:`iso`), which each output
adapts: Ozeki XML elements, REST JSON, ``mailgate status`` lines, the delivery report's form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mailgate.jobs import EmailJob


class Status(StrEnum):
    """An e-mail's state, as stored in Redis and shown by GetEmailStatus."""

    SCHEDULED = "Scheduled"
    QUEUED = "Queued"
    SENDING = "Sending"
    RETRYING = "Retrying"
    SENT = "Sent"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def final(self) -> bool:
        return self in (Status.SENT, Status.FAILED, Status.CANCELLED)

    @property
    def cancellable(self) -> bool:
        """Not yet in a worker's hands: CancelEmail may still stop it."""
        return self in (Status.SCHEDULED, Status.QUEUED, Status.RETRYING)


class ReportStatus(StrEnum):
    """Where the delivery report (the POST to the job's callback URL) stands."""

    RETRYING = "Retrying"
    DELIVERED = "Delivered"
    FAILED = "Failed"

    @property
    def final(self) -> bool:
        return self is not ReportStatus.RETRYING


@dataclass(frozen=True)
class AttemptLog:
    """One attempt's outcome, for the history in GetEmailStatus."""

    attempt: int
    at: float
    outcome: Status
    detail: str

    def fields(self, zone: str = "Z") -> list[tuple[str, str | int]]:
        """The attempt in Ozeki naming, in Ozeki's order."""
        return [
            ("Number", self.attempt),
            ("At", iso(self.at, zone)),
            ("Outcome", self.outcome.value),
            ("Detail", self.detail),
        ]


@dataclass(frozen=True)
class Record:
    """What the store knows about one e-mail."""

    email_id: str
    owner: str
    status: Status
    attempts: int
    created_at: float
    updated_at: float
    since: float
    """Start of the retry deadline: acceptance, or the last requeue."""
    sent_at: float | None = None
    next_attempt_at: float | None = None
    last_error: str | None = None
    smtp_response: str | None = None
    job: EmailJob | None = None
    callback_url: str = ""
    """Kept apart from the job, which is dropped once the e-mail is sent."""
    report_status: ReportStatus | None = None
    report_attempts: int = 0
    report_error: str | None = None
    relay: str | None = None
    """The relay (``host:port``) that took the e-mail, once it is Sent."""

    def fields(self, zone: str = "Z") -> list[tuple[str, str | int | None]]:
        """What GetEmailStatus shows, in Ozeki naming and order; None where not (yet) known.

        The first five are always known; ``zone`` is how times end (``Z`` or ``+00:00``).
        """
        return [
            ("EmailId", self.email_id),
            ("Status", self.status.value),
            ("Attempts", self.attempts),
            ("CreatedAt", iso(self.created_at, zone)),
            ("UpdatedAt", iso(self.updated_at, zone)),
            ("SentAt", iso(self.sent_at, zone) if self.sent_at else None),
            ("NextAttemptAt", iso(self.next_attempt_at, zone) if self.next_attempt_at else None),
            ("LastError", self.last_error),
            ("SmtpResponse", self.smtp_response),
            ("Relay", self.relay),
            ("DeliveryReport", self.report_status.value if self.report_status else None),
        ]


def iso(timestamp: float, zone: str = "Z") -> str:
    """ISO 8601 in UTC with milliseconds, ending in ``zone`` (``Z`` or ``+00:00``)."""
    moment = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return moment.removesuffix("+00:00") + zone


def parse_record(email_id: str, data: dict[str, str]) -> Record | None:
    """A Record from a status hash, or None when there is no (complete) record."""
    if not data or "status" not in data or "created_at" not in data:
        return None
    job = EmailJob.from_json(data["job"]) if data.get("job") else None
    return Record(
        email_id=email_id,
        owner=data.get("owner", ""),
        status=Status(data["status"]),
        attempts=int(data.get("attempts", 0)),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        since=float(data.get("since") or data["created_at"]),
        sent_at=_float(data.get("sent_at")),
        next_attempt_at=_float(data.get("next_attempt_at")),
        last_error=data.get("last_error") or None,
        smtp_response=data.get("smtp_response") or None,
        job=job,
        callback_url=data.get("callback_url") or (job.callback_url if job else ""),
        report_status=ReportStatus(data["report_status"]) if data.get("report_status") else None,
        report_attempts=int(data.get("report_attempts", 0)),
        report_error=data.get("report_error") or None,
        relay=data.get("relay") or None,
    )


def _float(value: str | None) -> float | None:
    return float(value) if value else None
