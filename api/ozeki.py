"""The Ozeki-compatible endpoint (``/`` and ``/api``), top to bottom: the route, reading the
parameters, the three commands (SendEmail, GetEmailStatus, CancelEmail), the XML answers.

Every outcome is an XML document with HTTP 200 and the outcome in ``<Code>``. Parameters come
from the query string and a form body merged, names matched case-insensitively; parsing is strict
(a bounded number of fields; text decoded by the rules of :mod:`api.charsets`), so garbage gets
Code 300, not a guess. Every text is cleaned of characters XML 1.0 cannot carry, so the body is
well-formed whatever the request held.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TypeAlias
from xml.etree import ElementTree as ET

from flask import Blueprint, Request, Response, request

from api.auth import authenticate, client_address
from api.charsets import Field as RawField
from api.charsets import declared_charset, decode, split_urlencoded
from api.emails import api_error, cancel, checked_key, send, status_of
from api.metrics import ACCEPT_SECONDS, REQUESTS, UNKNOWN_PARAMETERS
from api.services import Services, services
from api.uploads import multipart_fields
from mailgate.errors import (
    ApiError,
    InvalidParameter,
    ParseError,
    TooLarge,
    Unavailable,
    UnknownCommand,
)
from mailgate.jobs import canonical_email_id
from mailgate.schedule import parse_send_at
from mailgate.status import Status
from mailgate.users import Account

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

Field: TypeAlias = tuple[str, "str | list[Field]"]
"""An element: a name and either its text or its child elements."""


ACTING_METHODS = frozenset({"GET", "POST"})

# Every method reaches the view (no automatic HEAD/OPTIONS answers from Flask), so whatever a
# client sends to /api is answered in XML; only GET and POST act.
_ANY_METHOD = ["GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]


# "/" is where Ozeki Phone System XE clients call.
@bp.route("/", methods=_ANY_METHOD, provide_automatic_options=False)
@bp.route("/api", methods=_ANY_METHOD, provide_automatic_options=False)
@bp.route("/api/", methods=_ANY_METHOD, provide_automatic_options=False)
def api() -> Response:
    """Parse, pick the command, authenticate, run it; every outcome is an XML document."""
    started = time.perf_counter()
    label = "other"
    try:
        if request.method not in ACTING_METHODS:
            # HEAD would act and drop the EmailId with the body; the rest mean nothing here.
            raise ParseError(f"method {request.method} not allowed: use GET or POST")
        svc = services()
        params = read_params(
            request, svc.settings.max_request_bytes, svc.settings.legacy_charset, multipart_fields
        )
        command = params.get("command", "")
        if not command:
            raise InvalidParameter("command", "the command is required")
        handler = COMMANDS.get(command.lower())
        if handler is None:
            raise UnknownCommand(echo(command))
        label = LABELS[command.lower()]
        address = client_address(request, svc.settings.trusted_proxies)
        account = authenticate(request, params, svc.users, svc.limits, address)
        unknown = unknown_params(params)
        if unknown:
            UNKNOWN_PARAMETERS.labels(label).inc(len(unknown))
            if svc.settings.strict_parameters:
                reason = "unknown parameter (MAILGATE_STRICT_PARAMETERS is on)"
                raise InvalidParameter(echo(unknown[0]), reason, label)
        fields = handler(params, account, svc)
        if unknown:
            fields.append(("Warning", unknown_warning(unknown)))
        code, response = 200, success(fields)
    except Exception as exc:
        failure = api_error(exc)
        if failure is None:
            # Never a 5xx page: log the fault (no locals, so no password) and answer in XML.
            log.exception("unexpected error in /api")
            failure = Unavailable("internal error")
        code, response = failure.code, error(failure)
    REQUESTS.labels(label, str(code)).inc()
    if label == "SendEmail":
        ACCEPT_SECONDS.observe(time.perf_counter() - started)
    return response


# The commands: each takes the merged parameters and the caller's account.

Fields = list[Field]


def send_email(params: dict[str, str], account: Account, svc: Services) -> Fields:
    """Validate, record as Queued, publish; the EmailId is the caller's receipt."""
    send_at = parse_send_at(params.get("sendat", ""), svc.settings)
    key = checked_key(params.get("idempotencykey"))
    accepted = send(svc, account, params, key, send_at)
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


def cancel_email(params: dict[str, str], account: Account, svc: Services) -> Fields:
    """Stop one of the caller's e-mails not yet sent: Code 200 with its EmailId and Status
    Cancelled."""
    email_id = canonical_email_id(params.get("emailid", ""))
    if not email_id:
        raise InvalidParameter("EmailId", "the EmailId is required", "CancelEmail")
    cancel(svc, account, email_id)
    return [("EmailId", email_id), ("Status", Status.CANCELLED.value)]


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


# Reading the request.

MAX_FIELDS = 100
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
MultipartReader = Callable[[Request], list[RawField]]


def read_params(
    request: Request, max_bytes: int, legacy_charset: str, multipart: MultipartReader | None = None
) -> dict[str, str]:
    """All parameters, keyed by lower-cased name. A name given twice must repeat its value.

    ``multipart`` reads a ``multipart/form-data`` body (its fields; it keeps the files).
    """
    if len(request.query_string) > max_bytes:
        raise TooLarge("query string too long")
    query = split_urlencoded(request.query_string, MAX_FIELDS)
    body: list[RawField] = []
    if request.method == "POST" and multipart is not None and request.mimetype == MULTIPART_TYPE:
        body = multipart(request)
    elif request.method == "POST":
        body = split_urlencoded(_read_body(request, max_bytes), MAX_FIELDS)
    # The query and the body are decoded each on its own: a client may build its URL from a
    # UTF-8 template and its body in CP1252. A declaration in either decides for both.
    declared = declared_charset(request.mimetype_params.get("charset"), query, body)
    pairs = decode(query, declared, legacy_charset) + decode(body, declared, legacy_charset)
    params: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in params and params[key] != value:
            command = params.get("command", "")
            raise InvalidParameter(name, "given more than once with different values", command)
        params[key] = value
    return params


def _read_body(request: Request, max_bytes: int) -> bytes:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise TooLarge("request body too large")
    mimetype = request.mimetype
    body = request.stream.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise TooLarge("request body too large")
    if body and mimetype != FORM_TYPE:
        raise ParseError(f"unsupported content type, use {FORM_TYPE} or {MULTIPART_TYPE}")
    return body


KNOWN = frozenset({
    "command", "username", "password", "recipient", "message", "sender", "subject",
    "attachments", "apiextension", "idempotencykey", "deliveryreporturl", "sendat", "emailid",
    "cc", "bcc", "replyto", "htmlmessage",
})  # fmt: skip
"""Every parameter some command reads (lower case)."""
MAX_NAMED = 10
"""Unknown names shown in one warning; the rest are counted, not listed."""


def unknown_params(params: dict[str, str]) -> list[str]:
    """The parameter names no command reads, in the order given."""
    return [name for name in params if name not in KNOWN]


def unknown_warning(names: list[str]) -> str:
    """The text of a warning that names unknown parameters (a bounded number of them)."""
    shown = ", ".join(names[:MAX_NAMED])
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return f"unknown parameters ignored: {shown}{more}"


# The XML answers.

SUCCESS_MESSAGE = "Command successfully executed"
_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'
_DECLARATION_TEXT = _DECLARATION.decode()
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_ECHO = 200


def clean(text: str) -> str:
    """Text safe to put in an XML element: invalid characters replaced, length bounded."""
    text = _NOT_XML.sub("\ufffd", text)
    return text if len(text) <= _MAX_ECHO * 5 else text[: _MAX_ECHO * 5] + "…"


def echo(text: str) -> str:
    """A caller's value shown back in a message: cleaned and shortened."""
    text = clean(text)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "…"


def render(code: int, message: str, fields: Iterable[Field] = ()) -> bytes:
    """The XML document for one response, byte for byte what ElementTree writes
    (:func:`render_etree`), built as text: about 4 x cheaper on every request."""
    parts = [_DECLARATION_TEXT, "<Response>"]
    _write(parts, [("Code", str(code)), ("Message", message), *fields])
    parts.append("</Response>")
    return "".join(parts).encode("utf-8")


def _write(parts: list[str], fields: Iterable[Field]) -> None:
    # Element names are this module's callers' constants; only texts need escaping, and
    # ElementTree escapes exactly &, < and > in text (not quotes, not CR).
    for name, value in fields:
        if isinstance(value, str):
            text = clean(value)
            if not text:
                parts.append(f"<{name} />")
                continue
            if "&" in text or "<" in text or ">" in text:
                text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            parts.append(f"<{name}>{text}</{name}>")
        elif value:
            parts.append(f"<{name}>")
            _write(parts, value)
            parts.append(f"</{name}>")
        else:
            parts.append(f"<{name} />")


def render_etree(code: int, message: str, fields: Iterable[Field] = ()) -> bytes:
    """The same document through ElementTree: the reference :func:`render` is tested against."""
    root = ET.Element("Response")
    _add(root, [("Code", str(code)), ("Message", message), *fields])
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8")


def _add(parent: ET.Element, fields: Iterable[Field]) -> None:
    for name, value in fields:
        element = ET.SubElement(parent, name)
        if isinstance(value, str):
            element.text = clean(value)
        else:
            _add(element, value)


def xml_response(code: int, message: str, fields: Iterable[Field] = ()) -> Response:
    """An HTTP 200 response carrying the XML document."""
    return Response(
        render(code, message, fields), 200, content_type="application/xml; charset=utf-8"
    )


def success(fields: Iterable[Field] = ()) -> Response:
    """Code 200 with the given extra elements."""
    return xml_response(200, SUCCESS_MESSAGE, fields)


def error(exc: ApiError) -> Response:
    """The response for an API error: its code, Ozeki's text, and a Reason when there is one."""
    fields: list[Field] = [("Reason", exc.reason)] if exc.reason else []
    return xml_response(exc.code, exc.message, fields)


def unknown_path(path: str) -> Response:
    """A path no route takes, answered in the Ozeki style (HTTP 404, Code 300, the path named)."""
    exc = ParseError("no such path")
    fields: list[Field] = [("Reason", f"no such path: {echo(path)}; use /api or /")]
    return Response(
        render(exc.code, exc.message, fields), 404, content_type="application/xml; charset=utf-8"
    )
