"""One delivery attempt, as plain logic the task calls: claim, count, build, send, record.

Idempotent by design, because late acks mean a task can run again after a crash: a record
already final is acknowledged without sending, and a claim with a lease keeps two workers from
sending the same e-mail at once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mailgate.attachments import AttachmentRefused, open_checked
from mailgate.bounces.verp import return_path
from mailgate.config import Settings
from mailgate.errors import PermanentDelivery, TransientDelivery
from mailgate.jobs import EmailJob
from mailgate.spool import discard_spooled, spool_root
from mailgate.status import Record, Status, StatusStore
from mailgate.status.records import rcpt_json
from worker.dkim import Signer
from worker.message import envelope, render
from worker.relays import Router
from worker.report_http import safe_url
from worker.retry import backoff, give_up_reason
from worker.smtp import Data, Reply, Transport

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What one run of the task did (the task's return value: no personal data)."""

    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    ALREADY_FINAL = "already-final"
    BUSY = "busy"
    MISSING = "missing"


@dataclass(frozen=True)
class Result:
    """What one run did and, when the e-mail is ``Failed``, why: the task's outcome in Flower."""

    outcome: Outcome
    failure: str | None = None
    """The e-mail's ``LastError`` when it is Failed, by this run or an earlier one."""


@dataclass
class Delivery:
    """Delivers e-mails by id, recording every outcome in the status store."""

    store: StatusStore
    transport: Transport
    settings: Settings
    report: Callable[[str], None] | None = None
    """Publishes the delivery report task of an e-mail that has just become final."""
    signer: Signer | None = None
    """DKIM-signs the rendered message (MAILGATE_DKIM_KEYS)."""

    @property
    def lease_seconds(self) -> float:
        # The claim must lapse before the watchdog republishes the e-mail.
        return self.settings.redelivery_seconds * 0.9

    def deliver(self, email_id: str) -> Outcome:
        """Run one attempt for ``email_id`` unless it is final or being sent elsewhere."""
        return self.run(email_id).outcome

    def run(self, email_id: str) -> Result:
        """:meth:`deliver`, with the cause when the e-mail is (or already was) Failed."""
        token = uuid.uuid4().hex
        now = time.time()
        verdict, record = self.store.start_attempt(
            email_id, token, self.lease_seconds, now + self.settings.redelivery_seconds
        )
        if verdict == "missing":
            log.warning("no status record for %s; dropping the task", email_id)
            self.store.forget_due(email_id)
            return Result(Outcome.MISSING)
        if verdict == "final":
            return Result(Outcome.ALREADY_FINAL, self._failure(email_id))
        if verdict == "busy" or record is None:
            return Result(Outcome.BUSY)
        if not self._replicated(email_id, token):
            return Result(Outcome.BUSY)
        try:
            result = self._attempt(record, token, now)
        except BaseException:
            # No outcome was recorded: give the claim back so the watchdog's next publish
            # can try again at once rather than after the lease.
            self.store.release(email_id, token)
            raise
        if result.outcome in (Outcome.SENT, Outcome.FAILED) and record.job is not None:
            discard_spooled(record.job, self.settings)  # final: its uploads are done with
        if result.outcome in (Outcome.SENT, Outcome.FAILED) and record.callback_url:
            self._report(email_id, record.callback_url)
        return result

    def _failure(self, email_id: str) -> str | None:
        """The LastError of an e-mail found final, if it is Failed: a task message that comes
        again (a redelivery) must end as the first one did. Rare, so one more read is fine."""
        record = self.store.get(email_id)
        if record is None or record.status is not Status.FAILED:
            return None
        return record.last_error or "failed"

    def _replicated(self, email_id: str, token: str) -> bool:
        """With MAILGATE_REDIS_MIN_REPLICAS, SMTP waits until that many replicas hold the claim
        (and so the record): after a failover the new master knows the e-mail and who holds
        it. Short of that the claim goes back and the watchdog tries again later."""
        if self.store.replicated():
            return True
        log.warning("too few Redis replicas hold the claim on %s; not sending yet", email_id)
        self.store.release(email_id, token)
        return False

    def _attempt(self, record: Record, token: str, now: float) -> Result:
        """Send once and record the outcome (which also releases the claim)."""
        email_id, attempt, s = record.email_id, record.attempts, self.settings
        if record.job is None:
            return self._fail(record, token, "the e-mail's content is missing")
        if attempt > s.max_attempts:
            # Earlier attempts died with their worker: a poison message must end, not loop.
            return self._fail(record, token, f"gave up after {attempt - 1} attempts")
        if now > record.since + s.retry_deadline_seconds:
            return self._fail(record, token, "expired")
        try:
            reply, recipients, relay = self._send(record.job)
        except TransientDelivery as exc:
            next_at = now + backoff(attempt, s.retry_base_seconds, s.retry_max_delay_seconds)
            reason = give_up_reason(
                attempt, s.max_attempts, record.since, next_at, s.retry_deadline_seconds
            )
            if reason:
                detail = f"{reason}; last error: {exc.reason}"
                return self._fail(record, token, detail, exc.smtp_response)
            self.store.mark_retry(
                email_id, attempt, exc.reason, exc.smtp_response, next_at, token=token
            )
            log.info("attempt %d for %s deferred: %s", attempt, email_id, exc.reason)
            return Result(Outcome.RETRYING)
        except PermanentDelivery as exc:
            return self._fail(record, token, exc.reason, exc.smtp_response, _rcpt(exc.rcpt))
        latency = time.time() - record.created_at
        replies = reply.rcpt if isinstance(reply, Reply) else {}
        self.store.mark_sent(
            email_id, attempt, reply, token=token, latency=latency,
            report_due=self._report_due(record), rcpt=_rcpt(replies, recipients),
            relay=relay,
        )  # fmt: skip
        log.info("sent %s on attempt %d via %s: %s", email_id, attempt, relay or "-", reply)
        return Result(Outcome.SENT)

    def _send(self, job: EmailJob) -> tuple[str, list[str], str | None]:
        """Render, sign and hand over: the reply to DATA, the envelope recipients, and the
        relay that took it (when known)."""
        data: Data = self._render(job)
        if self.signer is not None:
            data = self.signer.sign(data, job.sender)
        sender, recipients = envelope(job)
        if self.settings.bounce_address and sender.isascii():
            # VERP: reports come back naming the e-mail. (A non-ASCII sender stays: the
            # relay needs SMTPUTF8 for it, which the transport asks for by the envelope.)
            sender = return_path(self.settings.bounce_address, job.email_id)
        if isinstance(self.transport, Router):
            handoff = self.transport.handoff(job.owner, data, sender, recipients)
            return handoff.reply, recipients, handoff.relay
        return self.transport.send(data, sender, recipients), recipients, None

    def _render(self, job: EmailJob) -> bytearray:
        """The checked message bytes; anything that stops them is final, with its cause."""
        s = self.settings
        # Uploads live in the spool: an implicit root for reading, never one a caller may name.
        roots = (*s.attachment_roots, spool_root(s))
        try:
            return render(
                job, s.message_id_host, lambda a: open_checked(a, roots), s.max_email_bytes
            )
        except AttachmentRefused as exc:
            raise PermanentDelivery(f"attachment refused: {exc}") from None
        except OSError as exc:  # an attachment that became a folder, a read error
            raise PermanentDelivery(
                f"attachment unreadable: {exc.strerror or type(exc).__name__}"
            ) from None
        except (ValueError, TypeError, LookupError) as exc:
            # MessageRefused, and NotCarried for a header the API would have refused.
            raise PermanentDelivery(f"message refused: {exc}") from None

    def _report(self, email_id: str, url: str) -> None:
        # The e-mail's own outcome is recorded already: a broker hiccup here costs the report
        # (logged), never the e-mail, and it must not fail or repeat the delivery task.
        if self.report is None:
            return
        try:
            self.report(email_id)
        except Exception as exc:
            log.warning("could not queue the delivery report of %s to %s: %s", email_id,
                        safe_url(url), type(exc).__name__)  # fmt: skip

    def _fail(
        self,
        record: Record,
        token: str,
        reason: str,
        smtp_response: str | None = None,
        rcpt: str | None = None,
    ) -> Result:
        self.store.mark_failed(
            record.email_id, record.attempts, reason, smtp_response, token=token,
            report_due=self._report_due(record), rcpt=rcpt,
        )  # fmt: skip
        log.warning("failed %s: %s", record.email_id, reason)
        return Result(Outcome.FAILED, reason)

    def _report_due(self, record: Record) -> float | None:
        # The report is published right after the final state; this watchdog publishes it
        # again should that publish be lost (a crash, the broker away).
        if not record.callback_url:
            return None
        return time.time() + self.settings.redelivery_seconds


def _rcpt(replies: dict[str, str], recipients: list[str] | None = None) -> str | None:
    """The record's ``rcpt`` field: each recipient, whether RCPT took it, its reply. Without
    replies (a transport that gives none) every recipient of a 250 counts as accepted."""
    if recipients is None:
        recipients = list(replies)
    if not recipients:
        return None
    return rcpt_json(
        [
            (a, replies[a].startswith("25") if a in replies else True, replies.get(a))
            for a in recipients
        ]
    )
