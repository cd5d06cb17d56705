"""The Ozeki commands: each takes the merged parameters and the caller's account."""

from __future__ import annotations

from collections.abc import Callable

from api.accept import accept, checked_key, status_of
from api.cancel import cancel_email
from api.services import Services
from api.uploads import claim_uploads, with_uploads
from api.xml import Field
from mailgate.errors import InvalidParameter
from mailgate.jobs import canonical_email_id
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
    email_id = canonical_email_id(params.get("emailid", ""))
    if not email_id:
        raise InvalidParameter("EmailId", "the EmailId is required", "GetEmailStatus")
    record, history = status_of(svc, account, email_id)
    known = [(name, value) for name, value in record.fields() if value is not None and value != ""]
    fields: Fields = [(name, str(value)) for name, value in known]
    attempts: list[Field] = [
        ("Attempt", [(name, str(value)) for name, value in log.fields()]) for log in history
    ]
    if attempts:
        fields.append(("History", attempts))
    return fields


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
