"""CancelEmail (Ozeki) and ``DELETE /api/v1/emails/{id}`` (REST): stop an e-mail not yet sent."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from api.accept import own_record
from api.services import Services
from api.xml import Field
from mailgate.errors import InvalidParameter, NotCancellable, NotFound, Unavailable
from mailgate.jobs import canonical_email_id
from mailgate.spool import discard_spooled
from mailgate.status import Status
from mailgate.users import Account

log = logging.getLogger(__name__)
COMMAND = "CancelEmail"


def cancel(svc: Services, account: Account, email_id: str, name: str = "EmailId") -> None:
    """Cancel one of the caller's own e-mails; cancelling a Cancelled one again is a no-op.

    404 for anyone else's id; :class:`NotCancellable` once a worker holds it or it is final.
    """
    try:
        email_id = own_record(svc, account, email_id).email_id
        status, job = svc.store.cancel(email_id)
    except RedisError:
        raise Unavailable("the status store is unavailable") from None
    if status is None:
        raise NotFound()  # expired between the two calls
    if status is not Status.CANCELLED:
        raise NotCancellable(status.value, name)
    if job is not None:
        discard_spooled(job, svc.settings)  # the uploads are never needed now
        log.info("cancelled %s for %s", email_id, account.name)


def cancel_email(params: dict[str, str], account: Account, svc: Services) -> list[Field]:
    """The Ozeki command: Code 200 with the EmailId and Status Cancelled."""
    email_id = canonical_email_id(params.get("emailid", ""))
    if not email_id:
        raise InvalidParameter("EmailId", "the EmailId is required", COMMAND)
    cancel(svc, account, email_id)
    return [("EmailId", email_id), ("Status", Status.CANCELLED.value)]
