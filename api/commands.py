"""The Ozeki commands: each takes the merged parameters and the caller's account."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from api.accept import accept, checked_key, status_of
from api.cancel import cancel_email
from api.services import Services
from api.uploads import claim_uploads, with_uploads
from api.xml import Field
from mailgate.errors import InvalidParameter
from mailgate.schedule import parse_send_at
from mailgate.users import Account
from mailgate.validation import validate_send

Fields = list[Field]


def send_email(params: dict[str, str], account: Account, svc: Services) -> Fields:
    """Validate, record as Queued, publish; the EmailId is the caller's receipt."""
    request = with_uploads(validate_send(params, svc.settings), svc.settings)
    send_at = parse_send_at(params.get("sendat", ""), svc.settings)
    key = checked_key(params.get("idempotencykey"))
    accepted = claim_uploads(accept(svc, account, request, key, send_at))
    return [("EmailId", accepted.email_id)]


def get_email_status(params: dict[str, str], account: Account, svc: Services) -> Fields:
    """The status record of one of the caller's own e-mails; any other id is 404."""
    email_id = params.get("emailid", "").strip()
    if not email_id:
        raise InvalidParameter("EmailId", "the EmailId is required", "GetEmailStatus")
    record, history = status_of(svc, account, email_id)
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
        ("DeliveryReport", record.report_status.value if record.report_status else None),
    ]
    fields += [(name, value) for name, value in optional if value]
    attempts: list[Field] = [
        ("Attempt", [("Number", str(log.attempt)), ("At", iso(log.at)),
                     ("Outcome", log.outcome.value), ("Detail", log.detail)])
        for log in history
    ]  # fmt: skip
    if attempts:
        fields.append(("History", attempts))
    return fields


def iso(timestamp: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


LABELS = {
    "sendemail": "SendEmail",
    "getemailstatus": "GetEmailStatus",
    "cancelemail": "CancelEmail",
}
"""Each command's canonical name, for metrics."""

COMMANDS: dict[str, Callable[[dict[str, str], Account, Services], Fields]] = {
    "sendemail": send_email,
    "getemailstatus": get_email_status,
    "cancelemail": cancel_email,
}
