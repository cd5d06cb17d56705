"""What a status record is: states, the record itself, its attempt log, parsing, and its one
presentation (:meth:`Record.fields`, :meth:`AttemptLog.fields`, :func:`iso`), which each output
adapts: Ozeki XML elements, REST JSON, ``mailgate status`` lines, the delivery report's form.

The words for how things stand, one set for each thing that has a state:

- :class:`Status`: an e-mail's state (the contract's values; the history's ``Outcome`` too);
- :class:`Outcome`: what one run of the delivery task did, and why a claim is refused;
- :class:`ReportStatus`: where the delivery report stands, and what one POST's answer means
  (``worker.report_http.classify``);
- ``worker.reports.Result``: what one run of the report task did (a ReportStatus's words, plus
  ``deferred``, ``refused``, ``skipped``: runs that made no POST);
- ``mailgate.bounces.recorder.Verdict``: what became of one bounce message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from mailgate.addresses import bare
from mailgate.headers import wire_address
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
    BOUNCED = "Bounced"
    """Sent, then every recipient the relay accepted bounced (a report came back for each)."""
    PARTLY_BOUNCED = "PartlyBounced"
    """Sent, then some recipients bounced; the others' copies were not reported undelivered."""

    @property
    def final(self) -> bool:
        """No delivery attempt follows (a bounce report may still move Sent on to Bounced)."""
        return self in FINAL

    @property
    def sent(self) -> bool:
        """The relay took it: Sent, or Sent and bounced since."""
        return self in (Status.SENT, Status.BOUNCED, Status.PARTLY_BOUNCED)

    @property
    def cancellable(self) -> bool:
        """Not yet in a worker's hands: CancelEmail may still stop it."""
        return self in (Status.SCHEDULED, Status.QUEUED, Status.RETRYING)


FINAL = frozenset(
    {Status.SENT, Status.FAILED, Status.CANCELLED, Status.BOUNCED, Status.PARTLY_BOUNCED}
)


class ReportStatus(StrEnum):
    """Where the delivery report (the POST to the job's callback URL) stands."""

    RETRYING = "Retrying"
    DELIVERED = "Delivered"
    FAILED = "Failed"

    @property
    def final(self) -> bool:
        return self is not ReportStatus.RETRYING


class Outcome(StrEnum):
    """What one run of the delivery task did (its return value, in Flower: no personal data).

    ``ALREADY_FINAL``, ``BUSY`` and ``MISSING`` are also why a claim is refused
    (:meth:`mailgate.status.StatusStore.start_attempt`): the run ends there.
    """

    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    ALREADY_FINAL = "already-final"
    BUSY = "busy"
    MISSING = "missing"


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
class Bounce:
    """What a delivery status notification said of one recipient."""

    action: str
    """``failed`` (a bounce) or ``delayed`` (still trying: recorded, changes nothing final)."""
    code: str
    """The enhanced status code (RFC 3463), ``5.1.1``."""
    reason: str
    """The diagnostic: the remote server's reply, or the reporting MTA's words."""
    at: float

    @property
    def failed(self) -> bool:
        return self.action == "failed"

    @property
    def kind(self) -> str:
        """``hard`` for a permanent failure (5.x.x), else ``soft`` (4.x.x, or delayed)."""
        return "hard" if self.failed and self.code.startswith("5") else "soft"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "code": self.code, "reason": self.reason, "at": self.at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bounce:
        return cls(str(data["action"]), str(data["code"]), str(data["reason"]), float(data["at"]))


@dataclass(frozen=True)
class RecipientOutcome:
    """One envelope recipient: its RCPT reply, then the bounce reported for it, if any."""

    address: str
    accepted: bool | None = None
    """True: the relay took it at RCPT; False: refused there; None: not tried (yet)."""
    reply: str | None = None
    """The relay's reply to RCPT."""
    bounce: Bounce | None = None

    def fields(self, zone: str = "Z") -> list[tuple[str, str | None]]:
        """The recipient in Ozeki naming (the REST ``recipients`` items, snake_cased)."""
        rcpt = None if self.accepted is None else "accepted" if self.accepted else "refused"
        b = self.bounce
        return [
            ("Address", self.address),
            ("Rcpt", rcpt),
            ("RcptReply", self.reply),
            ("Bounce", b.action if b else None),
            ("BounceCode", b.code if b else None),
            ("BounceReason", b.reason if b else None),
            ("BouncedAt", iso(b.at, zone) if b else None),
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
    rcpt: str = ""
    """The ``rcpt`` field (JSON, see :func:`rcpt_json`): read through :attr:`recipients`."""
    bounces: str = ""
    """The ``bounces`` field (JSON: lower-cased address -> :class:`Bounce`)."""
    bounce_code: str | None = None
    bounce_reason: str | None = None
    bounced_at: float | None = None
    """The latest bounce (``Action: failed``) of any recipient."""

    @cached_property
    def recipients(self) -> tuple[RecipientOutcome, ...]:
        """Each envelope recipient's outcome: RCPT, then bounce. Before an attempt, the job's
        recipients (not tried); empty when unknown (a Sent record from before it was kept)."""
        bounces = {
            address: Bounce.from_dict(entry)
            for address, entry in json.loads(self.bounces or "{}").items()
        }
        if self.rcpt:
            return tuple(
                RecipientOutcome(
                    item["address"],
                    item["accepted"],
                    item.get("reply"),
                    bounces.get(item["address"].lower()),
                )
                for item in json.loads(self.rcpt)
            )
        if self.job is not None:
            return tuple(
                RecipientOutcome(envelope_address(r)) for r in self.job.envelope_recipients()
            )
        return ()

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
            ("BounceCode", self.bounce_code),
            ("BounceReason", self.bounce_reason),
            ("BouncedAt", iso(self.bounced_at, zone) if self.bounced_at else None),
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
        rcpt=data.get("rcpt", ""),
        bounces=data.get("bounces", ""),
        bounce_code=data.get("bounce_code") or None,
        bounce_reason=data.get("bounce_reason") or None,
        bounced_at=_float(data.get("bounced_at")),
        relay=data.get("relay") or None,
    )


def envelope_address(text: str) -> str:
    """A recipient as the SMTP envelope carries it (what RCPT named, what a report names)."""
    return wire_address(bare(text))


def rcpt_json(replies: list[tuple[str, bool, str | None]]) -> str:
    """The ``rcpt`` field: each envelope recipient as sent, whether RCPT took it, the reply."""
    return json.dumps(
        [{"address": a, "accepted": ok, "reply": reply} for a, ok, reply in replies],
        ensure_ascii=False,
    )


def _float(value: str | None) -> float | None:
    return float(value) if value else None
