"""Reading the request: query string and form body merged, names matched case-insensitively.

Parsing is strict (a bounded number of fields; text decoded by the rules of
:mod:`api.charsets`) so garbage gets Code 300, not a guess.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Request

from api.charsets import Field, declared_charset, decode, split_urlencoded
from mailgate.errors import InvalidParameter, ParseError, TooLarge

MAX_FIELDS = 100
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
MultipartReader = Callable[[Request], list[Field]]


def read_params(
    request: Request, max_bytes: int, legacy_charset: str, multipart: MultipartReader | None = None
) -> dict[str, str]:
    """All parameters, keyed by lower-cased name. A name given twice must repeat its value.

    ``multipart`` reads a ``multipart/form-data`` body (its fields; it keeps the files).
    """
    if len(request.query_string) > max_bytes:
        raise TooLarge("query string too long")
    query = split_urlencoded(request.query_string, MAX_FIELDS)
    body: list[Field] = []
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
