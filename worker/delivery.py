"""One delivery, as plain logic the task calls: :meth:`Delivery.run` lists its steps in order
(claim, check, render, sign, send, record, report), as Postal's outgoing message processor does.

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

from mailgate.attachments import AttachmentRefused, open_checked
from mailgate.bounces.verp import return_path
from mailgate.config import Settings
from mailgate.errors import PermanentDelivery, TransientDelivery
from mailgate.jobs import EmailJob
from mailgate.spool import discard_spooled, spool_root
from mailgate.status import Outcome, Record, Status, StatusStore
from mailgate.status.records import rcpt_json
from worker.dkim import Signer
from worker.message import envelope, render
from worker.relays import Router
from worker.report_http import safe_url
from worker.retry import backoff, give_up_reason
from worker.smtp import Data, Reply, Transport

log = logging.getLogger(__name__)


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
        """One delivery of ``email_id``, step by step; with the cause when it is Failed."""
        token, now = uuid.uuid4().hex, time.time()
        record = self._claim(email_id, token, now)
        if isinstance(record, Result):
            return record  # final already, busy elsewhere, or gone
        try:
            try:
                job = self._check(record, now)
                data = self._sign(self._render(job), job)
                reply, recipients, relay = self._send(job, data)
            except TransientDelivery as exc:
                result = self._record_retry(record, token, exc, now)
            except PermanentDelivery as exc:
                result = self._record_failure(
                    record, token, exc.reason, exc.smtp_response, _rcpt(exc.rcpt)
                )
            else:
                result = self._record_sent(record, token, reply, recipients, relay)
        except BaseException:
            # No outcome was recorded: give the claim back so the watchdog's next publish
            # can try again at once rather than after the lease.
            self.store.release(email_id, token)
            raise
        if result.outcome in (Outcome.SENT, Outcome.FAILED):
            self._finish(record)
        return result

    def _claim(self, email_id: str, token: str, now: float) -> Record | Result:
        """Claim the e-mail and count the attempt (one round trip), then, with
        MAILGATE_REDIS_MIN_REPLICAS, wait for the replicas; else why not to send it now."""
        claimed = self.store.start_attempt(
            email_id, token, self.lease_seconds, now + self.settings.redelivery_seconds
        )
        if claimed is Outcome.MISSING:
            log.warning("no status record for %s; dropping the task", email_id)
            self.store.forget_due(email_id)
            return Result(Outcome.MISSING)
        if claimed is Outcome.ALREADY_FINAL:
            return Result(Outcome.ALREADY_FINAL, self._failure(email_id))
        if not isinstance(claimed, Record) or not self._replicated(email_id, token):
            return Result(Outcome.BUSY)
        return claimed

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

    def _check(self, record: Record, now: float) -> EmailJob:
        """The e-mail's job, unless it may not be sent at all (then final, with the cause)."""
        s = self.settings
        if record.job is None:
            raise PermanentDelivery("the e-mail's content is missing")
        if record.attempts > s.max_attempts:
            # Earlier attempts died with their worker: a poison message must end, not loop.
            raise PermanentDelivery(f"gave up after {record.attempts - 1} attempts")
        if now > record.since + s.retry_deadline_seconds:
            raise PermanentDelivery("expired")
        return record.job

    def _render(self, job: EmailJob) -> Data:
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

    def _sign(self, data: Data, job: EmailJob) -> Data:
        """DKIM-signed for the sender's domain, when MAILGATE_DKIM_KEYS has a key for it."""
        return data if self.signer is None else self.signer.sign(data, job.sender)

    def _send(self, job: EmailJob, data: Data) -> tuple[str, list[str], str | None]:
        """Hand the message over: the reply to DATA, the envelope recipients, and the relay
        that took it (when known)."""
        sender, recipients = envelope(job)
        if self.settings.bounce_address and sender.isascii():
            # VERP: reports come back naming the e-mail. (A non-ASCII sender stays: the
            # relay needs SMTPUTF8 for it, which the transport asks for by the envelope.)
            sender = return_path(self.settings.bounce_address, job.email_id)
        if isinstance(self.transport, Router):
            handoff = self.transport.handoff(job.owner, data, sender, recipients)
            return handoff.reply, recipients, handoff.relay
        return self.transport.send(data, sender, recipients), recipients, None

    def _record_sent(
        self, record: Record, token: str, reply: str, recipients: list[str], relay: str | None
    ) -> Result:
        """Record the 250 (which also releases the claim)."""
        replies = reply.rcpt if isinstance(reply, Reply) else {}
        self.store.mark_sent(
            record.email_id,
            record.attempts,
            reply,
            token=token,
            latency=time.time() - record.created_at,
            report_due=self._report_due(record),
            rcpt=_rcpt(replies, recipients),
            relay=relay,
        )
        log.info(
            "sent %s on attempt %d via %s: %s",
            record.email_id,
            record.attempts,
            relay or "-",
            reply,
        )
        return Result(Outcome.SENT)

    def _record_retry(
        self, record: Record, token: str, exc: TransientDelivery, now: float
    ) -> Result:
        """Record a transient failure and the next attempt's time, or the failure when the
        next attempt would fall past the attempts or the deadline."""
        email_id, attempt, s = record.email_id, record.attempts, self.settings
        next_at = now + backoff(attempt, s.retry_base_seconds, s.retry_max_delay_seconds)
        reason = give_up_reason(
            attempt, s.max_attempts, record.since, next_at, s.retry_deadline_seconds
        )
        if reason:
            detail = f"{reason}; last error: {exc.reason}"
            return self._record_failure(record, token, detail, exc.smtp_response)
        self.store.mark_retry(
            email_id, attempt, exc.reason, exc.smtp_response, next_at, token=token
        )
        log.info("attempt %d for %s deferred: %s", attempt, email_id, exc.reason)
        return Result(Outcome.RETRYING)

    def _record_failure(
        self,
        record: Record,
        token: str,
        reason: str,
        smtp_response: str | None = None,
        rcpt: str | None = None,
    ) -> Result:
        """Record the final failure (which also releases the claim)."""
        self.store.mark_failed(
            record.email_id,
            record.attempts,
            reason,
            smtp_response,
            token=token,
            report_due=self._report_due(record),
            rcpt=rcpt,
        )
        log.warning("failed %s: %s", record.email_id, reason)
        return Result(Outcome.FAILED, reason)

    def _finish(self, record: Record) -> None:
        """An e-mail just final: its uploads are done with, its delivery report goes out."""
        if record.job is not None:
            discard_spooled(record.job, self.settings)
        if record.callback_url:
            self._report(record.email_id, record.callback_url)

    def _report(self, email_id: str, url: str) -> None:
        # The e-mail's own outcome is recorded already: a broker hiccup here costs the report
        # (logged), never the e-mail, and it must not fail or repeat the delivery task.
        if self.report is None:
            return
        try:
            self.report(email_id)
        except Exception as exc:
            log.warning(
                "could not queue the delivery report of %s to %s: %s",
                email_id,
                safe_url(url),
                type(exc).__name__,
            )

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
