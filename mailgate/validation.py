"""Validation of a SendEmail request: every failure names the parameter at fault (Code 302)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from mailgate.attachments import AttachmentRefused, check_path
from mailgate.config import Settings
from mailgate.errors import InvalidParameter, TooLarge
from mailgate.jobs import Attachment

COMMAND = "SendEmail"
_HEADER_BREAKERS = re.compile(r"[\r\n\x00]")
_SPLIT_RECIPIENTS = re.compile(r"[;,]")


@dataclass(frozen=True)
class SendRequest:
    """The checked content of a SendEmail request, before the sender ACL and an EmailId."""

    sender: str | None
    recipients: tuple[str, ...]
    message: str
    subject: str
    attachments: tuple[Attachment, ...]
    api_extension: str
    callback_url: str = ""


def validate_send(params: Mapping[str, str], settings: Settings) -> SendRequest:
    """Check every SendEmail parameter; raise the error for the first bad one."""
    recipients = parse_recipients(params.get("recipient", ""), settings.max_recipients)
    message = params.get("message", "")
    if not message:
        raise _invalid("Message", "the text body is required")
    if len(message.encode("utf-8")) > settings.max_message_bytes:
        raise TooLarge(f"Message is over {settings.max_message_bytes} bytes")
    if "\x00" in message:
        raise _invalid("Message", "NUL character in the text")
    sender = params.get("sender", "")
    if sender:
        sender = normalize_address(sender, "Sender")
    subject = params.get("subject", "")
    if _HEADER_BREAKERS.search(subject):
        raise _invalid("Subject", "CR, LF or NUL in a header field")
    if len(subject) > 998:
        raise _invalid("Subject", "longer than 998 characters")
    api_extension = params.get("apiextension", "")
    if _HEADER_BREAKERS.search(api_extension) or len(api_extension) > 256:
        raise _invalid("ApiExtension", "control character or longer than 256 characters")
    attachments = parse_attachments(params.get("attachments", ""), settings)
    callback_url = params.get("deliveryreporturl", "")
    if callback_url:
        callback_url = check_callback_url(callback_url, settings.callback_allowed)
    return SendRequest(
        sender=sender or None,
        recipients=recipients,
        message=message,
        subject=subject,
        attachments=attachments,
        api_extension=api_extension,
        callback_url=callback_url,
    )


def normalize_address(raw: str, name: str) -> str:
    """Return one syntactically valid address (no DNS look-up) or raise 302 for ``name``."""
    if _HEADER_BREAKERS.search(raw):
        raise _invalid(name, "CR, LF or NUL in an address")
    try:
        return _normalized(raw.strip())
    except EmailNotValidError as exc:
        raise _invalid(name, f"not a valid address: {exc}") from None


@lru_cache(maxsize=4096)
def _normalized(address: str) -> str:
    """email-validator's verdict, remembered: an IVR sends to the same few addresses all day,
    and the check costs more than the rest of the request's parsing. Refusals (exceptions) are
    not cached; the cache holds at most 4,096 addresses of at most a request's size each."""
    checked = validate_email(address, check_deliverability=False, globally_deliverable=False)
    return str(checked.normalized)


def parse_recipients(raw: str, limit: int) -> tuple[str, ...]:
    """Split on ``;`` or ``,``, check each address, drop repeats (case-insensitively)."""
    if _HEADER_BREAKERS.search(raw):
        raise _invalid("Recipient", "CR, LF or NUL in an address")
    parts = [part.strip() for part in _SPLIT_RECIPIENTS.split(raw)]
    parts = [part for part in parts if part]
    if not parts:
        raise _invalid("Recipient", "at least one address is required")
    if len(parts) > limit:
        raise _invalid("Recipient", f"more than {limit} addresses")
    seen: dict[str, str] = {}
    for part in parts:
        address = normalize_address(part, "Recipient")
        seen.setdefault(address.lower(), address)
    return tuple(seen.values())


def parse_attachments(raw: str, settings: Settings) -> tuple[Attachment, ...]:
    """Check each ``;``-separated path against the sandbox and the size limits."""
    paths = [part.strip() for part in raw.split(";")]
    paths = [part for part in paths if part]
    if len(paths) > settings.max_attachments:
        raise _invalid("Attachments", f"more than {settings.max_attachments} files")
    found = []
    for path in paths:
        try:
            found.append(check_path(path, settings.attachment_roots))
        except AttachmentRefused as exc:
            raise _invalid("Attachments", str(exc)) from None
    if sum(a.size for a in found) > settings.max_attachment_bytes:
        raise _invalid("Attachments", f"over {settings.max_attachment_bytes} bytes in total")
    return tuple(found)


MAX_IDEMPOTENCY_KEY = 200


def idempotency_key_ok(key: str) -> bool:
    """1 to 200 characters, none of them CR, LF or NUL."""
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY and not _HEADER_BREAKERS.search(key)


def check_callback_url(raw: str, allowed: tuple[str, ...]) -> str:
    """An http(s) URL whose host is on the operator's allow list (no SSRF to anything else)."""
    if _HEADER_BREAKERS.search(raw) or len(raw) > 2000:
        raise _invalid("DeliveryReportURL", "control character or too long")
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise _invalid("DeliveryReportURL", "invalid port")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("DeliveryReportURL", "must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise _invalid("DeliveryReportURL", "must not carry credentials")
    host = parts.hostname.lower()
    if not any(fnmatchcase(host, pattern) for pattern in allowed):
        raise _invalid("DeliveryReportURL", "host not in MAILGATE_CALLBACK_ALLOWED")
    return raw


def _invalid(name: str, reason: str) -> InvalidParameter:
    return InvalidParameter(name, reason, command=COMMAND)
