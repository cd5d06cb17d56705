"""REST error responses: one JSON shape for all (each ApiError carries its status and code).

Every error body is ``{"error": {"code": ..., "field": ..., "message": ...}}``; ``field`` names
the JSON field at fault, or is null.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from limits import parse
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from api.rest_input import JSON_FIELDS
from mailgate.config import Settings
from mailgate.errors import ApiError, InvalidField, InvalidParameter, Unavailable

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
