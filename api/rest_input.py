"""Reading a REST request: a bounded JSON body, its shape, the parameters for ``validate_send``;
the query of a listing (:func:`list_query`).

The JSON fields are turned into the lower-cased Ozeki parameters, so both API styles share one
validation; :data:`JSON_FIELDS` maps the Ozeki names in its errors back to the JSON names.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request
from werkzeug.datastructures import MultiDict

from api.accept import checked_key
from mailgate.addresses import split_list
from mailgate.errors import InvalidField, ParseError, TooLarge, UnsupportedMediaType
from mailgate.schedule import parse_moment
from mailgate.status import Status
from mailgate.status.store import INDEXED
from mailgate.validation import MAX_IDEMPOTENCY_KEY

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
