"""The JSON REST API under ``/api/v1``, top to bottom: the routes (send an e-mail, read its
status, list the account's e-mails in one state, cancel one, the OpenAPI document), the JSON
errors, then reading a request: a bounded JSON body or ``multipart/form-data`` with file parts,
base64 attachment objects, ``send_at``, and the query of a listing.

It shares the accept path, validation and authentication with the Ozeki ``/api`` endpoint
(:mod:`api.emails`); only the wire format differs: JSON bodies, real HTTP status codes, HTTP
Basic credentials. The JSON fields are turned into the lower-cased Ozeki parameters, so both API
styles share one validation; :data:`JSON_FIELDS` maps the Ozeki names in its errors back to the
JSON names. Every error body is ``{"error": {"code": ..., "field": ..., "message": ...}}``;
``field`` names the JSON field at fault, or is null.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from typing import Any

from flask import Blueprint, Request, Response, g, request, url_for
from limits import parse
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from api import openapi
from api.auth import authenticate, client_address
from api.charsets import declared_charset, decode
from api.emails import api_error, cancel, checked_key, send, status_of
from api.metrics import UNKNOWN_PARAMETERS
from api.services import Services, services
from api.uploads import (
    MULTIPART_TYPE,
    body_limit,
    read_multipart,
    spool_bytes,
)
from mailgate.addresses import split_list
from mailgate.config import Settings
from mailgate.errors import (
    ApiError,
    InvalidField,
    InvalidParameter,
    ParseError,
    RateLimited,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from mailgate.jobs import canonical_email_id
from mailgate.schedule import parse_moment, parse_send_at
from mailgate.status import AttemptLog, Record, Status
from mailgate.status.store import INDEXED
from mailgate.users import Account
from mailgate.validation import MAX_IDEMPOTENCY_KEY

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
    accepted = send(svc, account, params, key, send_at)
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
    return json_response(openapi.document(services().settings), 200)


@rest_bp.errorhandler(Exception)
def rest_error(exc: Exception) -> Response:
    """Every failure under /api/v1 as a JSON error body; never an HTML page or a traceback."""
    exc = api_error(exc) or exc
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


# The JSON errors: one shape for all (each ApiError carries its status and code).

INTERNAL = (500, "internal_error")
_ROUTING = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
"""Werkzeug's own refusals (a rule that takes no such path or method, a body cut short)."""


def _api_errors(cls: type[ApiError] = ApiError) -> list[type[ApiError]]:
    return [sub for child in cls.__subclasses__() for sub in (child, *_api_errors(child))]


CODES = sorted({e.rest_code for e in _api_errors()} | set(_ROUTING.values()) | {INTERNAL[1]})
"""Every error code a body may carry (the OpenAPI document lists them)."""


def outcome(exc: Exception) -> tuple[int, str]:
    """The HTTP status and error code: an ApiError carries its own; anything else is a 500."""
    if isinstance(exc, ApiError):
        return exc.http_status, exc.rest_code
    if isinstance(exc, HTTPException) and exc.code in _ROUTING:
        return exc.code, _ROUTING[exc.code]
    return INTERNAL


def error_response(exc: Exception, retry_after: int | None = None) -> Response:
    """The JSON error response for ``exc``, with the headers its status calls for."""
    status, code = outcome(exc)
    field: str | None = None
    if isinstance(exc, ApiError):
        # A REST caller wants the reason, not Ozeki's fixed sentence, where there is one.
        message = exc.reason or exc.fields.get("detail") or exc.message
        if isinstance(exc, InvalidField):
            field = exc.name
        elif isinstance(exc, InvalidParameter):  # raised by the shared code: an Ozeki name
            field = JSON_FIELDS.get(exc.name, exc.name)
    elif isinstance(exc, HTTPException) and status != INTERNAL[0]:
        message = exc.description or exc.name
    else:
        message = "internal error"  # never a traceback or an exception's text
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="mailgate"'
    elif status == 429 and retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    elif isinstance(exc, Unavailable) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)
    error = {"code": code, "field": field, "message": message}
    return json_response({"error": error}, status, headers)


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; ASCII only, so even a lone surrogate echoed back stays encodable."""
    text = json.dumps(body, separators=(",", ":"))
    return Response(text, status, headers=headers, content_type="application/json")


def retry_after(settings: Settings, send_rate: str | None) -> int:
    """Seconds to wait after a 429: the length of the window that was exceeded.

    A moving window frees its oldest hit within one window length, so that length is an upper
    bound. Without an account (``send_rate`` None) the failed-login throttle refused: its longest
    window is the only bound that holds for every one of its scopes.
    """
    logins = (
        settings.login_failures_per_client,
        settings.login_failures_per_address,
        settings.login_failures_per_user,
    )
    rates = [send_rate] if send_rate else list(logins)
    return max(parse(rate).get_expiry() for rate in rates)


# Reading a request: the JSON body, its shape, the listing's query.

JSON_TYPE = "application/json"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = MAX_IDEMPOTENCY_KEY

JSON_FIELDS = {
    "Recipient": "recipients",
    "Message": "text",
    "Sender": "sender",
    "Subject": "subject",
    "Attachments": "attachments",
    "DeliveryReportURL": "callback_url",
    "IdempotencyKey": "idempotency_key",
    "Cc": "cc",
    "Bcc": "bcc",
    "ReplyTo": "reply_to",
    "HtmlMessage": "html",
}
"""Ozeki parameter name -> the JSON field it came from."""

_OZEKI = {json_name: name.lower() for name, json_name in JSON_FIELDS.items()}
_STRINGS = ("sender", "subject", "text", "idempotency_key", "callback_url", "html")
_LISTS = {"recipients": ";,", "attachments": ";", "cc": ";,", "bcc": ";,", "reply_to": ";,"}
"""Array fields and the separators their items may not hold (validate_send splits on them;
an address list only outside a quoted display name)."""
FIELDS = frozenset({*_STRINGS, *_LISTS, "send_at"})
"""Every JSON field of a send request."""
MAX_NAMED = 10
"""Unknown fields named in one refusal; the rest are counted, not listed."""


LISTED = tuple(status for status in Status if not status.final or status in INDEXED)
"""The states a listing may ask for: those it finds without a scan (see StatusStore.find). Not
Sent, which has no index: a client reads a sent e-mail by its id."""
LIST_LIMIT = (100, 1000)
"""The default and the largest ``limit`` of a listing."""
QUERY = ("status", "since", "limit")


def list_query(args: MultiDict[str, str]) -> tuple[Status, float, int]:
    """The state, the window's start and the limit of ``GET /api/v1/emails?status=...``."""
    unknown = [name for name in args if name not in QUERY]
    if unknown:
        raise InvalidField(unknown[0][:100], f"unknown parameter; the parameters are {QUERY}")
    for name in QUERY:
        if len(args.getlist(name)) > 1:
            raise InvalidField(name, "given more than once")
    wanted = args.get("status", "").strip().lower()
    names = ", ".join(status.value for status in LISTED)
    status = next((s for s in LISTED if s.value.lower() == wanted), None)
    if status is None:
        why = "required" if not wanted else "not a state"
        final = next((s for s in Status if s.value.lower() == wanted), None)
        if final is not None:
            why = f"{final.value} e-mails are not listed (read one by its id)"
        raise InvalidField("status", f"{why}; one of {names}")
    try:
        since = parse_moment(args["since"]) if args.get("since", "").strip() else 0.0
    except ValueError as exc:
        raise InvalidField("since", str(exc)) from None
    limit = args.get("limit", str(LIST_LIMIT[0])).strip()
    if not limit.isdigit() or not 1 <= int(limit) <= LIST_LIMIT[1]:
        raise InvalidField("limit", f"a whole number from 1 to {LIST_LIMIT[1]}")
    return status, since, int(limit)


def check_declared_size(request: Request, max_bytes: int) -> None:
    """413 before anything else when the declared body is too large: it is never read."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge("request body too large")


def read_json(request: Request, max_bytes: int) -> object:
    """The body as JSON: UTF-8, at most ``max_bytes``, no duplicate keys, no NaN."""
    if request.mimetype != JSON_TYPE:
        raise UnsupportedMediaType(request.mimetype or "none", JSON_TYPE)
    body = request.stream.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise TooLarge("request body too large")
    try:
        return json.loads(
            body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise ParseError("the body is not valid UTF-8") from None
    except RecursionError:
        raise ParseError("the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and the two hooks below
        raise ParseError(f"the body is not valid JSON: {exc}") from None


def send_params(data: object) -> dict[str, str]:
    """The lower-cased parameters ``validate_send`` expects, after checking the JSON shape."""
    if not isinstance(data, dict):
        raise ParseError("the body must be a JSON object")
    params = {_OZEKI[name]: _string(name, data[name]) for name in _STRINGS if name in data}
    for name, separators in _LISTS.items():
        params[_OZEKI[name]] = ";".join(_string_list(name, data.get(name, []), separators))
    return params


def unknown_fields(data: object) -> list[str]:
    """The fields of a send request body that mailgate does not know, in the order given."""
    if not isinstance(data, dict):
        return []
    return [name for name in data if name not in FIELDS]


def unknown_reason(names: list[str]) -> str:
    """Why a body with these unknown fields is refused: their names, and the known ones."""
    shown = ", ".join(repr(name[:100]) for name in names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    known = ", ".join(sorted(FIELDS))
    return f"unknown field{'s' if len(names) > 1 else ''} {shown}{more}; the fields are: {known}"


def idempotency_key(request: Request, params: dict[str, str]) -> str:
    """The key from the header or the body field ("" for none); they may not differ."""
    header = request.headers.get(IDEMPOTENCY_HEADER)
    field = params.get("idempotencykey")
    if header is not None and field is not None and header != field:
        raise InvalidField("idempotency_key", f"differs from the {IDEMPOTENCY_HEADER} header")
    return checked_key(header if header is not None else field, "idempotency_key")


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidField(name, "must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: no text can hold it
        raise InvalidField(name, "not valid Unicode") from None
    return value


def _string_list(name: str, value: Any, separators: str) -> list[str]:
    # Items are joined with ';' for validate_send, so an item must not carry a separator.
    if not isinstance(value, list):
        raise InvalidField(name, "must be an array of strings")
    for item in value:
        if not _string(name, item).strip() or _splits(item, separators):
            shown = " or ".join(separators)
            raise InvalidField(name, f"each item must be a non-empty string without {shown}")
    return value


def _splits(item: str, separators: str) -> bool:
    if separators == ";,":  # an address: a quoted display name may hold either
        return len(split_list(item)) != 1
    return any(sep in item for sep in separators)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A name given twice could mean either value: refuse, as the Ozeki endpoint does.
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise ValueError(f"the key {name[:100]!r} is given more than once")
        found[name] = value
    return found


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# The body beyond plain JSON: multipart with file parts, base64 attachments, send_at.

LIST_FIELDS = ("recipients", "attachments", "cc", "bcc", "reply_to")
"""Form fields that may repeat, one item each (the JSON arrays)."""
_INLINE_KEYS = {"filename", "content", "content_type"}


def read_send_body(request: Request, settings: Settings) -> tuple[object, float | None]:
    """The JSON-shaped fields of a send request and its ``send_at``; uploads are spooled."""
    data: object
    if request.mimetype == MULTIPART_TYPE:
        data = _form_fields(request, settings)
    else:
        data = read_json(request, settings.max_request_bytes)
        if isinstance(data, dict) and isinstance(data.get("attachments"), list):
            data = {**data, "attachments": _spool_inline(data["attachments"], settings)}
    if not isinstance(data, dict):
        return data, None  # send_params names the fault
    send_at = _send_at(data.pop("send_at", None), settings)
    return data, send_at


def declared_limit(request: Request, settings: Settings) -> int:
    """The body size a request of this type may declare."""
    if request.mimetype == MULTIPART_TYPE:
        return body_limit(settings)
    return settings.max_request_bytes


def _form_fields(request: Request, settings: Settings) -> dict[str, Any]:
    fields = read_multipart(request, settings)
    declared = declared_charset(request.mimetype_params.get("charset"), fields)
    form = MultiDict(decode(fields, declared, settings.legacy_charset))
    data: dict[str, Any] = {}
    for name in form:
        values = form.getlist(name)
        if name in LIST_FIELDS:
            data[name] = values
        elif len(values) > 1:
            raise InvalidField(name[:100], "given more than once")
        else:
            data[name] = values[0]
    return data


def _spool_inline(items: list[Any], settings: Settings) -> list[Any]:
    """Spool each ``{"filename", "content" (base64), "content_type"}`` item; paths stay."""
    paths = []
    for item in items:
        if not isinstance(item, dict):
            paths.append(item)  # a path, or a wrong type send_params names
            continue
        if set(item) - _INLINE_KEYS or not {"filename", "content"} <= set(item):
            reason = "an object needs filename and content (base64), and may have content_type"
            raise InvalidField("attachments", reason)
        filename, content = item["filename"], item["content"]
        content_type = item.get("content_type", "")
        if not all(isinstance(v, str) for v in (filename, content, content_type)):
            raise InvalidField("attachments", "filename, content and content_type are strings")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidField("attachments", "content is not valid base64") from None
        try:
            spool_bytes(data, filename, content_type, settings)
        except InvalidParameter as exc:
            raise InvalidField("attachments", exc.reason or "invalid") from None
    return paths


def _send_at(raw: Any, settings: Settings) -> float | None:
    if raw is None:
        return None
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise InvalidField("send_at", "an ISO 8601 time with an offset, or seconds from now")
    try:
        return parse_send_at(raw, settings)
    except InvalidParameter as exc:
        raise InvalidField("send_at", exc.reason or "invalid") from None
