"""REST error responses: one table from error class to HTTP status, one JSON shape for all.

Every error body is ``{"error": {"code": ..., "field": ..., "message": ...}}``; ``field`` names
the JSON field at fault, or is null.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from limits import parse
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from api.accept import IdempotencyMismatch
from api.cancel import NotCancellable
from api.rest_input import JSON_FIELDS, InvalidField, UnsupportedMediaType
from mailgate.config import Settings
from mailgate.errors import (
    AddressForbidden,
    ApiError,
    AuthFailed,
    AuthRequired,
    InvalidParameter,
    NotFound,
    ParseError,
    RateLimited,
    SenderNotAllowed,
    TooLarge,
    Unavailable,
    UnknownCommand,
)

STATUS: dict[type[Exception], tuple[int, str]] = {
    ParseError: (400, "invalid_json"),
    UnsupportedMediaType: (415, "unsupported_media_type"),
    UnknownCommand: (404, "not_found"),  # Ozeki-only; mapped so the tree is complete
    InvalidParameter: (400, "invalid_parameter"),
    IdempotencyMismatch: (409, "idempotency_conflict"),
    NotCancellable: (409, "not_cancellable"),
    AuthRequired: (401, "authentication_required"),
    AuthFailed: (401, "authentication_failed"),
    SenderNotAllowed: (403, "sender_not_allowed"),
    AddressForbidden: (403, "address_forbidden"),
    NotFound: (404, "not_found"),
    BadRequest: (400, "bad_request"),  # e.g. the client hung up while sending the body
    NoRoute: (404, "not_found"),
    MethodNotAllowed: (405, "method_not_allowed"),
    TooLarge: (413, "too_large"),
    RateLimited: (429, "rate_limited"),
    Unavailable: (503, "unavailable"),
}
"""Error class -> (HTTP status, error code); a subclass not listed takes its parent's entry."""

INTERNAL = (500, "internal_error")
CODES = sorted({code for _, code in STATUS.values()} | {INTERNAL[1]})
"""Every error code a body may carry (the OpenAPI document lists them)."""


def http_status(error: type[Exception]) -> tuple[int, str]:
    """The HTTP status and error code for an exception class: its nearest class in the table."""
    for cls in error.__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return INTERNAL


def error_response(exc: Exception, retry_after: int | None = None) -> Response:
    """The JSON error response for ``exc``, with the headers its status calls for."""
    status, code = http_status(type(exc))
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
    elif isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)
    return json_response({"error": {"code": code, "field": field, "message": message}},
                         status, headers)  # fmt: skip


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
    rates = [send_rate] if send_rate else [
        settings.login_failures_per_client, settings.login_failures_per_address,
        settings.login_failures_per_user,
    ]  # fmt: skip
    return max(parse(rate).get_expiry() for rate in rates)
