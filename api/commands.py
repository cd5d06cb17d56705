"""The Ozeki commands: each takes the merged parameters and the caller's account."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from redis.exceptions import RedisError

from api.services import Services
from api.xml import Field
from mailgate.broker import publish
from mailgate.errors import InvalidParameter, NotFound, SenderNotAllowed, Unavailable
from mailgate.jobs import EmailJob
from mailgate.users import Account
from mailgate.validation import validate_send

log = logging.getLogger(__name__)

Fields = list[Field]


def send_email(params: dict[str, str], account: Account, svc: Services) -> Fields:
    """Validate, record as Queued, publish; the EmailId is the caller's receipt."""
    request = validate_send(params, svc.settings)
    sender = request.sender or svc.settings.default_sender
    if not account.may_send_as(sender, svc.settings.default_sender):
        raise SenderNotAllowed(f"{account.name} may not send as {sender}")
    try:
        svc.limits.check_send(account)
    except RedisError:
        raise Unavailable("the rate limiter is unavailable") from None
    job = EmailJob(
        email_id=str(uuid.uuid4()),
        owner=account.name,
        sender=sender,
        recipients=request.recipients,
        message=request.message,
        subject=request.subject,
        attachments=request.attachments,
        api_extension=request.api_extension,
    )
    # The record comes first: once the task is published a worker may look for it at once.
    try:
        svc.store.create(job, watchdog_at=time.time() + svc.settings.redelivery_seconds)
    except RedisError as exc:
        log.warning("status store unavailable: %s", type(exc).__name__)
        raise Unavailable("the status store is unavailable") from None
    try:
        publish(svc.celery, job.email_id)
    except Exception as exc:
        log.warning("publish failed for %s: %s", job.email_id, type(exc).__name__)
        try:
            svc.store.mark_failed(job.email_id, 0, "not queued: the broker was unavailable")
        except RedisError:
            log.error("could not mark %s unqueued", job.email_id)
        raise Unavailable("the broker is unavailable") from None
    log.info(
        "accepted %s from %s for %d recipient(s)", job.email_id, account.name, len(job.recipients)
    )
    return [("EmailId", job.email_id)]


def get_email_status(params: dict[str, str], account: Account, svc: Services) -> Fields:
    """The status record of one of the caller's own e-mails; any other id is 404."""
    email_id = params.get("emailid", "").strip()
    if not email_id:
        raise InvalidParameter("EmailId", "the EmailId is required", "GetEmailStatus")
    if len(email_id) > 64:
        raise NotFound()
    try:
        record = svc.store.get(email_id)
    except RedisError:
        raise Unavailable("the status store is unavailable") from None
    if record is None or record.owner != account.name:
        raise NotFound()
    fields: Fields = [
        ("EmailId", record.email_id),
        ("Status", record.status.value),
        ("Attempts", str(record.attempts)),
        ("CreatedAt", iso(record.created_at)),
        ("UpdatedAt", iso(record.updated_at)),
    ]
    optional: list[tuple[str, str | None]] = [
        ("SentAt", iso(record.sent_at) if record.sent_at else None),
        ("NextAttemptAt", iso(record.next_attempt_at) if record.next_attempt_at else None),
        ("LastError", record.last_error),
        ("SmtpResponse", record.smtp_response),
    ]
    fields += [(name, value) for name, value in optional if value]
    history: list[Field] = [
        ("Attempt", [("Number", str(log.attempt)), ("At", iso(log.at)),
                     ("Outcome", log.outcome.value), ("Detail", log.detail)])
        for log in svc.store.history(email_id)
    ]  # fmt: skip
    if history:
        fields.append(("History", history))
    return fields


def iso(timestamp: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


COMMANDS: dict[str, Callable[[dict[str, str], Account, Services], Fields]] = {
    "sendemail": send_email,
    "getemailstatus": get_email_status,
}
