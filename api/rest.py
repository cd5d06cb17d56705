"""The JSON REST API under ``/api/v1``: send an e-mail, read its status, list the account's
e-mails in one state, the OpenAPI document.

It shares the accept path, validation and authentication with the Ozeki ``/api`` endpoint;
only the wire format differs: JSON bodies, real HTTP status codes, HTTP Basic credentials.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, g, request, url_for
from redis.exceptions import RedisError

from api.accept import accept, status_of
from api.auth import authenticate, client_address
from api.cancel import cancel
from api.metrics import UNKNOWN_PARAMETERS
from api.openapi import document
from api.rest_errors import INTERNAL, error_response, json_response, outcome, retry_after
from api.rest_input import (
    check_declared_size,
    idempotency_key,
    list_query,
    send_params,
    unknown_fields,
    unknown_reason,
)
from api.rest_uploads import declared_limit, read_send_body
from api.services import Services, services
from api.uploads import claim_uploads, with_uploads
from mailgate.errors import InvalidField, RateLimited, Unavailable
from mailgate.jobs import canonical_email_id
from mailgate.status import AttemptLog, Record
from mailgate.users import Account
from mailgate.validation import validate_send

log = logging.getLogger(__name__)
rest_bp = Blueprint("rest", __name__, url_prefix="/api/v1")

# Every rule of ours: no automatic OPTIONS and no slash-merging redirect, so a request under
# /api/v1 that no rule takes is a plain 404 or 405, which create_app answers in JSON.
_RULE: dict[str, Any] = {"provide_automatic_options": False, "merge_slashes": False}


@rest_bp.post("/emails", **_RULE)
def send_email() -> Response:
    """Accept an e-mail: 202 with its id, or 200 with the first id for a repeated key."""
    svc = services()
    check_declared_size(request, declared_limit(request, svc.settings))
    account = _caller(svc)
    data, send_at = read_send_body(request, svc.settings)
    unknown = unknown_fields(data)
    if unknown:
        # A typo ("bc" for "bcc") must not send the e-mail without what it meant.
        UNKNOWN_PARAMETERS.labels("SendEmail").inc(len(unknown))
        raise InvalidField(unknown[0][:100], unknown_reason(unknown))
    params = send_params(data)
    key = idempotency_key(request, params)
    checked = with_uploads(validate_send(params, svc.settings), svc.settings)
    accepted = claim_uploads(accept(svc, account, checked, key, send_at))
    location = url_for("rest.email_status", email_id=accepted.email_id)
    status, code = ("Queued" if send_at is None else "Scheduled"), 202
    if accepted.repeat:
        # Nothing new was queued: report where the first e-mail stands now.
        status, code = status_of(svc, account, accepted.email_id)[0].status.value, 200
    body: dict[str, Any] = {"id": accepted.email_id, "status": status, "status_url": location}
    return json_response(body, code, {"Location": location})


@rest_bp.get("/emails", **_RULE)
def list_emails() -> Response:
    """The caller's own e-mails in one state, the latest change first (``status``, ``since``,
    ``limit``); ``more`` when the limit cut the list short."""
    svc = services()
    account = _caller(svc)
    status, since, limit = list_query(request.args)
    found = svc.store.find(status, since, owner=account.name, limit=limit + 1)
    body = {"emails": [_summary(record) for record in found[:limit]], "more": len(found) > limit}
    return json_response(body, 200)


@rest_bp.get("/emails/<email_id>", **_RULE)
def email_status(email_id: str) -> Response:
    """The status of one of the caller's e-mails and its attempt history."""
    svc = services()
    email_id = canonical_email_id(email_id)
    record, history = status_of(svc, _caller(svc), email_id)
    return json_response(_status_body(record, history), 200)


@rest_bp.delete("/emails/<email_id>", **_RULE)
def cancel_email(email_id: str) -> Response:
    """Cancel a Scheduled, Queued or Retrying e-mail: 200 with its (Cancelled) status."""
    svc = services()
    account = _caller(svc)
    email_id = canonical_email_id(email_id)
    cancel(svc, account, email_id, name="email_id")
    record, history = status_of(svc, account, email_id)
    return json_response(_status_body(record, history), 200)


@rest_bp.get("/openapi.json", **_RULE)
def openapi_json() -> Response:
    """The OpenAPI 3.1 document of this API (no credentials needed)."""
    return json_response(document(services().settings), 200)


@rest_bp.errorhandler(Exception)
def rest_error(exc: Exception) -> Response:
    """Every failure under /api/v1 as a JSON error body; never an HTML page or a traceback."""
    if isinstance(exc, RedisError):
        exc = Unavailable("Redis is unavailable")
    status, _ = outcome(exc)
    if status == INTERNAL[0]:
        log.error("unexpected error in %s %s", request.method, request.path, exc_info=exc)
    wait = None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        wait = exc.retry_after
    elif status == 429:
        account: Account | None = g.get("rest_account")
        wait = retry_after(services().settings, account.rate if account else None)
    return error_response(exc, wait)


def _caller(svc: Services) -> Account:
    """The account of the HTTP Basic credentials, checked as the Ozeki endpoint checks them."""
    address = client_address(request, svc.settings.trusted_proxies)
    account = authenticate(request, {}, svc.users, svc.limits, address)
    g.rest_account = account  # a later 429 is then the account's send rate, not a login throttle
    return account


def _summary(record: Record) -> dict[str, Any]:
    """The JSON status record: every field present (snake_case), null where not (yet) known."""
    return {_snake(name): value for name, value in record.fields()}


def _status_body(record: Record, history: list[AttemptLog]) -> dict[str, Any]:
    """The JSON status record, each recipient's outcome and the attempt history."""
    body = _summary(record)
    body["recipients"] = [
        {_snake(name): value for name, value in r.fields()} for r in record.recipients
    ]
    body["history"] = [{_snake(name): value for name, value in h.fields()} for h in history]
    return body


_JSON_NAMES = {"EmailId": "id", "Number": "attempt"}


def _snake(name: str) -> str:
    """The JSON name of an Ozeki field: ``NextAttemptAt`` -> ``next_attempt_at``."""
    return _JSON_NAMES.get(name) or re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
