"""What both API styles (Ozeki ``/api``, REST ``/api/v1``) do to an e-mail: accept it, read
its status, cancel it. Only this module calls the status store for them.

Redis's errors are mapped once, in :func:`api_error`: every store, rate-limit and login-throttle
call runs inside a request of one of the two endpoints, and both hand what a request raised to
it, so a Redis error anywhere is a 503 (nothing queued), never a 500 or a traceback.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from redis.exceptions import RedisError

from api.ratelimit import send_rate
from api.services import Services
from api.uploads import claim_uploads, with_uploads
from mailgate.addresses import bare
from mailgate.broker import publish, redis_task_message, uses_redis_broker
from mailgate.errors import (
    ApiError,
    IdempotencyMismatch,
    InvalidField,
    InvalidParameter,
    NotCancellable,
    NotFound,
    RateLimited,
    SenderNotAllowed,
    Suppressed,
    Unavailable,
)
from mailgate.jobs import QUEUE, EmailJob, canonical_email_id, is_email_id
from mailgate.spool import discard_spooled
from mailgate.status import AttemptLog, Record, Status
from mailgate.status.store import pending_size
from mailgate.status.suppressions import SuppressedRecipient
from mailgate.users import Account
from mailgate.validation import MAX_IDEMPOTENCY_KEY, SendRequest, idempotency_key_ok, validate_send

log = logging.getLogger(__name__)


Quota = tuple[int, int]
"""An owner's limits of e-mails not yet final and their bytes (0: none)."""
NO_QUOTA: Quota = (0, 0)


@dataclass(frozen=True)
class Checks:
    """What the status store's create step checks before it writes (one round trip)."""

    quota: Quota = NO_QUOTA
    rate: tuple[int, int] = (0, 0)
    """The owner's send rate: at most so many e-mails in so many seconds (0: none)."""
    suppressed: tuple[tuple[str, str], ...] = ()
    """(parameter, address) of each recipient looked up in the owner's suppressions."""


NO_CHECKS = Checks()
QUOTA_RETRY_SECONDS = 60
"""The Retry-After of a quota's 429: e-mails become final at the relay's pace, not a window's."""


@dataclass(frozen=True)
class Accepted:
    """The caller's receipt; ``repeat`` when an idempotency key answered an earlier e-mail."""

    email_id: str
    repeat: bool = False


def checked_key(key: str | None, field: str = "") -> str:
    """The caller's idempotency key once checked; "" when none was given.

    Ozeki (``field`` empty) names it ``IdempotencyKey`` and takes an empty parameter as none,
    since its clients send every parameter; REST names its JSON ``field``, and a key given
    there must hold at least one character.
    """
    if key is None or (not key and not field):
        return ""
    if idempotency_key_ok(key):
        return key
    if field:
        reason = f"1 to {MAX_IDEMPOTENCY_KEY} characters, no control characters"
        raise InvalidField(field, reason)
    reason = f"at most {MAX_IDEMPOTENCY_KEY} characters, no control characters"
    raise InvalidParameter("IdempotencyKey", reason, "SendEmail")


def send(
    svc: Services,
    account: Account,
    params: dict[str, str],
    idempotency_key: str = "",
    send_at: float | None = None,
) -> Accepted:
    """SendEmail for both endpoints: check the parameters (lower-cased Ozeki names), add the
    request's uploads, accept; the uploads become the new e-mail's (a repeat's are dropped)."""
    request = with_uploads(validate_send(params, svc.settings), svc.settings)
    accepted = accept(svc, account, request, idempotency_key, send_at)
    if not accepted.repeat:
        claim_uploads()
    return accepted


def accept(
    svc: Services,
    account: Account,
    request: SendRequest,
    idempotency_key: str = "",
    send_at: float | None = None,
) -> Accepted:
    """Check the sender and rate, record as Queued, publish. Nothing is queued on any error.

    With ``send_at`` the record is Scheduled and nothing is published: the due set holds it
    until then, and a worker's scheduler publishes it.
    """
    sender = request.sender or svc.settings.default_sender
    if not account.may_send_as(bare(sender), svc.settings.default_sender):
        raise SenderNotAllowed(f"{account.name} may not send as {sender}")
    job = EmailJob(
        email_id=str(uuid.uuid4()),
        owner=account.name,
        sender=sender,
        recipients=request.recipients,
        message=request.message,
        subject=request.subject,
        attachments=request.attachments,
        api_extension=request.api_extension,
        callback_url=request.callback_url,
        cc=request.cc,
        bcc=request.bcc,
        reply_to=request.reply_to,
        html=request.html,
    )
    if idempotency_key:
        earlier = svc.store.remember_key(
            account.name,
            idempotency_key,
            job.email_id,
            job.fingerprint(),
            svc.settings.idempotency_seconds,
        )
        if earlier is not None:
            if earlier[1] != job.fingerprint():
                raise IdempotencyMismatch()
            return Accepted(earlier[0], repeat=True)
    # The suppressions, the send rate and the quota are checked in the step that writes the
    # record (one round trip): a refusal writes nothing and takes no place in the rate.
    checks = Checks(
        quota=account.quota(svc.settings.max_pending_emails, svc.settings.max_pending_bytes),
        rate=send_rate(account),
        suppressed=suppression_lookups(job) if svc.settings.suppression else (),
    )
    try:
        if send_at is None:
            _record_and_publish(svc, job, checks)
        else:
            _record_scheduled(svc, job, send_at, checks)
    except Exception:
        if idempotency_key:  # not accepted after all: a retry with the same key may go ahead
            _release(svc, account, idempotency_key)
        raise
    count = len(job.recipients)
    log.info("accepted %s from %s for %d recipient(s)", job.email_id, account.name, count)
    return Accepted(job.email_id)


def suppression_lookups(job: EmailJob) -> tuple[tuple[str, str], ...]:
    """(parameter, address) of every recipient whose suppression refuses the e-mail (302, REST
    422): an address this account's e-mail hard-bounced from lately."""
    return (
        *(("Recipient", a) for a in job.recipients),
        *(("Cc", a) for a in job.cc),
        *(("Bcc", a) for a in job.bcc),
    )


def _record_and_publish(svc: Services, job: EmailJob, checks: Checks = NO_CHECKS) -> None:
    watchdog_at = time.time() + svc.settings.redelivery_seconds
    if uses_redis_broker(svc.settings):
        # Record and task in one Redis transaction: both or neither, in one round trip.
        task = (QUEUE, redis_task_message(svc.celery, job.email_id))
        _create(svc, job, watchdog_at, checks, task=task)
        return
    # Another broker: the record comes first, since a worker may look for it at once.
    _create(svc, job, watchdog_at, checks)
    try:
        publish(svc.celery, job.email_id)
    except Exception as exc:
        log.warning("publish failed for %s: %s", job.email_id, type(exc).__name__)
        try:
            svc.store.mark_failed(job.email_id, 0, "not queued: the broker was unavailable")
        except RedisError:
            log.error("could not mark %s unqueued", job.email_id)
        raise Unavailable("the broker is unavailable") from None


def _record_scheduled(
    svc: Services, job: EmailJob, send_at: float, checks: Checks = NO_CHECKS
) -> None:
    _create(svc, job, send_at, checks, send_at=send_at)


def _create(
    svc: Services,
    job: EmailJob,
    due_at: float,
    checks: Checks,
    task: tuple[str, str] | None = None,
    send_at: float | None = None,
) -> None:
    """Write the record (and ``task`` with it) unless ``checks`` refuse it, then hold it to the
    replica rule; 302 for a suppressed recipient, 429 over the rate or the quota."""
    lookups = checks.suppressed
    try:
        over = svc.store.create(
            job,
            due_at,
            task=task,
            send_at=send_at,
            quota=checks.quota,
            rate=checks.rate,
            suppressed=[address for _, address in lookups],
        )
    except SuppressedRecipient as exc:
        raise Suppressed(lookups[exc.index][0], exc.suppression.explain()) from None
    if over == "rate":
        emails, seconds = checks.rate
        raise RateLimited(f"{job.owner} may send {emails} e-mail(s) per {seconds} s")
    if over:
        raise _over_quota(job, over, checks.quota)
    _ensure_replicated(svc, job.email_id)


def _over_quota(job: EmailJob, over: str, quota: Quota) -> RateLimited:
    """The 429 for an e-mail the owner's quota has no room for, naming the limit."""
    emails, size = quota
    if over == "emails":
        limit = (
            f"{emails} e-mails not yet final (MAILGATE_MAX_PENDING_EMAILS, or the account's "
            "max_pending)"
        )
    else:
        limit = (
            f"{size} bytes of e-mails not yet final (MAILGATE_MAX_PENDING_BYTES, or the "
            f"account's max_pending_bytes); this one holds {pending_size(job)}"
        )
    return RateLimited(f"{job.owner} is at its limit of {limit}", retry_after=QUOTA_RETRY_SECONDS)


def _ensure_replicated(svc: Services, email_id: str) -> None:
    """With MAILGATE_REDIS_MIN_REPLICAS, a 200 means that many replicas hold the e-mail, so a
    failover cannot lose it. Short of that the e-mail is withdrawn and the answer is 503 (no
    worker sends before the same replicas hold its claim); one already final stays."""
    if svc.store.replicated():
        return
    withdrawn = svc.store.withdraw(email_id)
    if not withdrawn:
        log.info("%s reached too few replicas but is final already", email_id)
        return
    replicas = svc.store.min_replicas
    log.warning("withdrew %s: fewer than %d replica(s) confirmed it", email_id, replicas)
    raise Unavailable("too few Redis replicas confirmed the e-mail") from None


def _release(svc: Services, account: Account, key: str) -> None:
    try:
        svc.store.forget_key(account.name, key)
    except RedisError:
        log.warning("could not release an idempotency key of %s", account.name)


def status_of(svc: Services, account: Account, email_id: str) -> tuple[Record, list[AttemptLog]]:
    """The caller's own e-mail and its attempt history; 404 for any other id."""
    record = own_record(svc, account, email_id)
    return record, svc.store.history(record.email_id)


def own_record(svc: Services, account: Account, email_id: str) -> Record:
    """The record of one of the caller's own e-mails; 404 for any other id, so nobody learns
    which ids exist. An id that is not a
    well-formed EmailId is 404 at once: no Redis key is built from it."""
    email_id = canonical_email_id(email_id)
    if not is_email_id(email_id):
        raise NotFound()
    record = svc.store.get(email_id)
    if record is None or record.owner != account.name:
        raise NotFound()
    return record


def cancel(svc: Services, account: Account, email_id: str, name: str = "EmailId") -> None:
    """Cancel one of the caller's own e-mails; cancelling a Cancelled one again is a no-op.

    404 for anyone else's id; :class:`NotCancellable` once a worker holds it or it is final.
    """
    email_id = own_record(svc, account, email_id).email_id
    status, job = svc.store.cancel(email_id)
    if status is None:
        raise NotFound()  # expired between the two calls
    if status is not Status.CANCELLED:
        raise NotCancellable(status.value, name)
    if job is not None:
        discard_spooled(job, svc.settings)  # the uploads are never needed now
        log.info("cancelled %s for %s", email_id, account.name)


def api_error(exc: Exception) -> ApiError | None:
    """The API error ``exc`` stands for, for either endpoint's answer; None for a fault.

    This is where Redis's errors become 503, once for every store call of both endpoints (as
    httpx maps httpcore's errors in one place): nothing was queued when one is raised.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RedisError):
        log.warning("Redis unavailable: %s", type(exc).__name__)
        return Unavailable("Redis is unavailable")
    return None
