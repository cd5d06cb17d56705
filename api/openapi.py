"""The OpenAPI 3.1 document of the REST API, built from the limits the running settings enforce."""

from __future__ import annotations

from typing import Any

from api import rest  # read when the document is built: api.rest serves it
from mailgate.config import Settings
from mailgate.schedule import max_ahead
from mailgate.status import ReportStatus, Status

Json = dict[str, Any]

_ERRORS: dict[str, str] = {
    "400": "The body is not JSON, or a field is invalid or unknown (`field` names it).",
    "401": "Credentials missing or wrong (HTTP Basic).",
    "403": "The account may not use this sender, or not call from this address.",
    "404": "No such e-mail of this account.",
    "409": "The idempotency key was used before with different content.",
    "413": "The body or the text is over the size limit.",
    "415": "The body is not `application/json` or `multipart/form-data`.",
    "422": "A recipient is suppressed: an e-mail of this account to it hard-bounced lately "
    "(`field` names it; the message says when and with which code).",
    "429": "Over the account's send rate or its quota of e-mails not yet final, or too many "
    "failed logins: see `Retry-After`.",
    "500": "An unexpected error; nothing was queued.",
    "503": "Redis or the broker is unavailable, or every password check of the API process "
    "is busy (then with `Retry-After`); nothing was queued.",
}
_HEADERS: dict[str, Json] = {
    "401": {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}},
    "429": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
    "503": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
}


def document(settings: Settings) -> Json:
    """The whole document; array limits come from ``settings`` so it never promises more."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailgate REST API",
            "version": "1",
            "description": "Send e-mail through mailgate and follow its delivery. Every error "
            "answers with the same JSON shape: `Error`.",
        },
        "security": [{"basicAuth": []}],
        "paths": {
            "/api/v1/emails": {"get": _list(), "post": _send()},
            "/api/v1/emails/{email_id}": {"get": _status(), "delete": _cancel()},
            "/api/v1/openapi.json": {"get": _self()},
        },
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "schemas": _schemas(settings),
            "responses": {
                status: _json(text, "Error", _HEADERS.get(status))
                for status, text in _ERRORS.items()
            },
            "headers": {
                "Location": _header("Where the e-mail's status is read.", {"type": "string"}),
                "WWW-Authenticate": _header('Always `Basic realm="mailgate"`.', {"type": "string"}),
                "Retry-After": _header(
                    "Seconds until a retry can succeed (after a 429 for a rate, an upper "
                    "bound: the length of the rate window that was exceeded).",
                    {"type": "integer", "minimum": 1},
                ),
            },
        },
    }


def _send() -> Json:
    located = {"Location": {"$ref": "#/components/headers/Location"}}
    return {
        "operationId": "sendEmail",
        "summary": "Queue an e-mail for delivery",
        "parameters": [
            {
                "name": rest.IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": "Same as the `idempotency_key` field; both may be given if equal.",
                "schema": {"type": "string", "minLength": 1, "maxLength": rest.MAX_KEY_LENGTH},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("SendRequest")},
                "multipart/form-data": {"schema": _ref("SendForm")},
            },
        },
        "responses": {
            "202": _json("Queued; nothing is sent yet.", "Accepted", located),
            "200": _json(
                "A repeat of an idempotency key with the same content: nothing new was "
                "queued; the first e-mail's id and current status.",
                "Accepted",
                located,
            ),
            **_refs("400", "401", "403", "409", "413", "415", "422", "429", "500", "503"),
            "404": _json("The e-mail a repeated idempotency key names has expired.", "Error"),
        },
    }


def _list() -> Json:
    default, most = rest.LIST_LIMIT
    return {
        "operationId": "listEmails",
        "summary": "List the account's own e-mails in one state, the latest change first",
        "parameters": [
            {
                "name": "status",
                "in": "query",
                "required": True,
                "description": "The state (any case). Sent e-mails are not listed: read each "
                "by its id.",
                "schema": {"type": "string", "enum": [status.value for status in rest.LISTED]},
            },
            {
                "name": "since",
                "in": "query",
                "required": False,
                "description": "Only e-mails whose last change is at or after this: an ISO 8601 "
                "time (UTC without an offset) or an age such as `90s`, `30m`, `2h`, `7d`.",
                "schema": {"type": "string", "minLength": 1},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "At most this many, the newest first; `more` says if there are "
                "others.",
                "schema": {"type": "integer", "minimum": 1, "maximum": most, "default": default},
            },
        ],
        "responses": {
            "200": _json("The e-mails, without their attempt history.", "EmailList"),
            **_refs("400", "401", "403", "429", "500", "503"),
        },
    }


EMAIL_ID: Json = {
    "name": "email_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
"""The path parameter of the operations on one e-mail."""


def _status() -> Json:
    return {
        "operationId": "getEmailStatus",
        "summary": "Read the status of one of the account's e-mails",
        "parameters": [EMAIL_ID],
        "responses": {
            "200": _json("The status record and its attempt history.", "EmailStatus"),
            **_refs("401", "403", "404", "429", "500", "503"),
        },
    }


def _cancel() -> Json:
    return {
        "operationId": "cancelEmail",
        "summary": "Cancel a Scheduled, Queued or Retrying e-mail; it is never sent",
        "parameters": [EMAIL_ID],
        "responses": {
            "200": _json("Cancelled (now, or earlier): the status record.", "EmailStatus"),
            "409": _json("Already Sending, Sent or Failed: no longer cancellable.", "Error"),
            **_refs("401", "403", "404", "429", "500", "503"),
        },
    }


def _self() -> Json:
    return {
        "operationId": "getOpenApi",
        "summary": "This document",
        "security": [],
        "responses": {
            "200": {
                "description": "The OpenAPI document.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **_refs("500"),
        },
    }


def _schemas(settings: Settings) -> Json:
    text = {"type": "string"}
    when = {"type": ["string", "null"], "format": "date-time"}
    path = {**text, "pattern": "^/", "minLength": 1}
    address = {
        **text,
        "minLength": 1,
        "description": "An address, with or without a display "
        'name: `jane@corp.local` or `"Doe, Jane" <jane@example.com>`.',
    }
    addresses = {"type": "array", "maxItems": settings.max_recipients, "items": address}
    send_at = {
        "oneOf": [{**text, "format": "date-time"}, {"type": "number", "minimum": 0}],
        "description": "Send then, not at once (status Scheduled until then): an ISO 8601 "
        "time with an offset, or seconds from now; at most "
        f"{int(max_ahead(settings))} seconds ahead.",
    }
    summary: Json = {
        "id": {**text, "format": "uuid"},
        "status": _ref("Status"),
        "attempts": {"type": "integer", "minimum": 0},
        "created_at": {**text, "format": "date-time"},
        "updated_at": {**text, "format": "date-time"},
        "sent_at": when,
        "next_attempt_at": when,
        "last_error": {"type": ["string", "null"]},
        "smtp_response": {"type": ["string", "null"]},
        "relay": {
            "type": ["string", "null"],
            "description": "host:port of the relay that took the e-mail.",
        },
        "bounce_code": {
            "type": ["string", "null"],
            "description": "The enhanced status code of the latest bounce (`5.1.1`).",
        },
        "bounce_reason": {"type": ["string", "null"], "description": "Its diagnostic."},
        "bounced_at": when,
        "delivery_report": {
            "enum": [*(r.value for r in ReportStatus), None],
            "description": "The report POSTed to callback_url; null: none.",
        },
    }
    return {
        "Status": {"type": "string", "enum": [s.value for s in Status]},
        "SendRequest": _object(
            {
                "sender": {
                    **text,
                    "description": "From (a display name allowed); its address must "
                    "match the account's allowed senders. Default: the gateway's default "
                    "sender.",
                },
                "recipients": {
                    **addresses,
                    "minItems": 1,
                    "description": "To. Recipients, cc and "
                    f"bcc together: at most {settings.max_recipients}.",
                },
                "cc": {**addresses, "description": "Cc: in the header and the envelope."},
                "bcc": {
                    **addresses,
                    "description": "Bcc: in the SMTP envelope only, never in a header.",
                },
                "reply_to": {**addresses, "description": "Reply-To."},
                "subject": {**text, "maxLength": 998},
                "text": {
                    **text,
                    "description": "The UTF-8 text body, at most "
                    f"{settings.max_message_bytes} bytes (else 413); required, and may be "
                    "empty only when html is given.",
                },
                "html": {
                    **text,
                    "description": "An HTML body: the message becomes "
                    "multipart/alternative (text first, then HTML).",
                },
                "attachments": {
                    "type": "array",
                    "maxItems": settings.max_attachments,
                    "items": {"oneOf": [path, _ref("InlineAttachment")]},
                    "description": "Absolute paths inside MAILGATE_ATTACHMENT_ROOTS, "
                    "or files given inline (base64; the body's size limit applies).",
                },
                "send_at": send_at,
                "idempotency_key": {**text, "minLength": 1, "maxLength": rest.MAX_KEY_LENGTH},
                "callback_url": {
                    **text,
                    "format": "uri",
                    "maxLength": 2000,
                    "description": "Delivery report URL; its host must be allowed.",
                },
            },
            required=["recipients"],
        ),
        "InlineAttachment": _object(
            {
                "filename": {
                    **text,
                    "minLength": 1,
                    "maxLength": 255,
                    "description": "The file name shown in the message.",
                },
                "content": {**text, "contentEncoding": "base64"},
                "content_type": {**text, "description": "Guessed from the file name when absent."},
            },
            required=["filename", "content"],
        ),
        "SendForm": {
            "type": "object",
            "description": "The SendRequest fields as form fields (recipients and attachments "
            "repeated, one item each); every file part is one attachment, its file name kept.",
            "properties": {
                "recipients": {"type": "array", "minItems": 1, "items": address},
                "cc": {"type": "array", "items": address},
                "bcc": {"type": "array", "items": address},
                "reply_to": {"type": "array", "items": address},
                "text": text,
                "html": text,
                "sender": text,
                "subject": {**text, "maxLength": 998},
                "attachments": {"type": "array", "items": path},
                "send_at": text,
                "idempotency_key": {**text, "minLength": 1, "maxLength": rest.MAX_KEY_LENGTH},
                "_charset_": {
                    **text,
                    "description": "The charset of the fields (as the part's "
                    "Content-Type charset would say): else UTF-8 where they are valid "
                    "UTF-8, else MAILGATE_LEGACY_CHARSET.",
                },
            },
            "additionalProperties": {
                **text,
                "format": "binary",
                "description": "A file to attach (any part with a file "
                "name); a field of another name is refused.",
            },
            "required": ["recipients"],
        },
        "Accepted": _object(
            {
                "id": {**text, "format": "uuid"},
                "status": _ref("Status"),
                "status_url": text,
            }
        ),
        "EmailList": _object(
            {
                "emails": {"type": "array", "items": _ref("EmailSummary")},
                "more": {"type": "boolean", "description": "The limit left out older ones."},
            }
        ),
        "EmailSummary": _object(summary),
        "EmailStatus": _object(
            {
                **summary,
                "recipients": {
                    "type": "array",
                    "items": _ref("Recipient"),
                    "description": "Each envelope recipient (to, cc, bcc): its RCPT "
                    "reply, then its bounce if one was reported.",
                },
                "history": {"type": "array", "items": _ref("Attempt")},
            }
        ),
        "Recipient": _object(
            {
                "address": text,
                "rcpt": {
                    "enum": ["accepted", "refused", None],
                    "description": "What the relay said to RCPT; null: not tried yet.",
                },
                "rcpt_reply": {"type": ["string", "null"]},
                "bounce": {
                    "enum": ["failed", "delayed", None],
                    "description": "The latest report: "
                    "failed (bounced) or delayed (still being tried); null: none.",
                },
                "bounce_code": {"type": ["string", "null"]},
                "bounce_reason": {"type": ["string", "null"]},
                "bounced_at": when,
            }
        ),
        "Attempt": _object(
            {
                "attempt": {"type": "integer", "minimum": 0},
                "at": {**text, "format": "date-time"},
                "outcome": _ref("Status"),
                "detail": text,
            }
        ),
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {**text, "enum": rest.CODES},
                        "field": {
                            "type": ["string", "null"],
                            "description": "The JSON field at fault, for invalid_parameter.",
                        },
                        "message": text,
                    }
                )
            }
        ),
    }


def _object(properties: Json, required: list[str] | None = None) -> Json:
    """A closed object (no property beyond these); every property is required unless
    ``required`` says otherwise."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _json(description: str, schema: str, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _ref(schema: str) -> Json:
    return {"$ref": f"#/components/schemas/{schema}"}


def _refs(*statuses: str) -> Json:
    return {status: {"$ref": f"#/components/responses/{status}"} for status in statuses}


def _header(description: str, schema: Json) -> Json:
    return {"description": description, "schema": schema}
