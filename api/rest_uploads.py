"""The REST body beyond plain JSON: ``multipart/form-data`` with file parts, base64 attachment
objects in JSON, and ``send_at``. Everything else goes on to :func:`api.rest_input.send_params`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Request
from werkzeug.datastructures import MultiDict

from api.charsets import declared_charset, decode
from api.rest_input import read_json
from api.uploads import MULTIPART_TYPE, body_limit, read_multipart, spool_bytes
from mailgate.config import Settings
from mailgate.errors import InvalidField, InvalidParameter
from mailgate.schedule import parse_send_at

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
            raise InvalidField("attachments", "an object needs filename and content (base64), "
                               "and may have content_type")  # fmt: skip
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
