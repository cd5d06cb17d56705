"""Validation of a SendEmail request: every failure names the parameter at fault (Code 302)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from mailgate.attachments import AttachmentRefused, check_path
from mailgate.config import Settings, split_host_port
from mailgate.errors import InvalidParameter, TooLarge
from mailgate.headers import NotCarried, check_address, subject_text, wire_address
from mailgate.jobs import Attachment
from mailgate.sizes import encoded_size
from mailgate.text import control_reason, has_surrogate

COMMAND = "SendEmail"
_SPLIT_RECIPIENTS = re.compile(r"[;,]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
    if has_surrogate(message):
        raise _invalid("Message", "not valid Unicode (a lone surrogate)")
    if len(message.encode("utf-8")) > settings.max_message_bytes:
        raise TooLarge(f"Message is over {settings.max_message_bytes} bytes")
    if "\x00" in message:
        raise _invalid("Message", "NUL character in the text")
    sender = params.get("sender", "")
    if sender:
        sender = normalize_address(sender, "Sender")
    subject = check_subject(params.get("subject", ""))
    api_extension = params.get("apiextension", "")
    reason = control_reason(api_extension)
    if reason or len(api_extension) > 256:
        raise _invalid("ApiExtension", reason or "longer than 256 characters")
    attachments = parse_attachments(params.get("attachments", ""), settings)
    check_encoded_size(message, attachments, settings)
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


def check_encoded_size(message: str, attachments: Sequence[Attachment], settings: Settings) -> None:
    """302 when the e-mail, once encoded (base64 attachments), would be over the limit."""
    size = encoded_size(message, [a.size for a in attachments])
    if size > settings.max_email_bytes:
        raise _invalid(
            "Attachments" if attachments else "Message",
            f"the e-mail would be about {size} bytes once encoded, over the "
            f"{settings.max_email_bytes} bytes of MAILGATE_MAX_EMAIL_BYTES",
        )


def check_subject(raw: str) -> str:
    """The subject as the reader will see it (encoded words decoded), or 302 ``Subject``."""
    if len(raw) > 998:
        raise _invalid("Subject", "longer than 998 characters")
    try:
        return subject_text(raw)
    except NotCarried as exc:
        raise _invalid("Subject", str(exc)) from None


def normalize_address(raw: str, name: str) -> str:
    """Return one syntactically valid address (no DNS look-up) or raise 302 for ``name``.

    The one place that decides what an address may be. A domain given in ASCII (an A-label,
    ``xn--...``) stays in that form; the worker sends the ASCII form either way.
    """
    reason = control_reason(raw)
    if reason:
        raise _invalid(name, f"{reason} in an address")
    raw = raw.strip()
    try:
        checked = validate_email(raw, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as exc:
        raise _invalid(name, f"not a valid address: {exc}") from None
    address = str(checked.normalized)
    if checked.ascii_email and raw.rpartition("@")[2].isascii():
        address = str(checked.ascii_email)
    try:
        check_address(wire_address(address))
    except NotCarried as exc:
        raise _invalid(name, str(exc)) from None
    return address


def parse_recipients(raw: str, limit: int) -> tuple[str, ...]:
    """Split on ``;`` or ``,``, check each address, drop repeats (case-insensitively)."""
    reason = control_reason(raw)
    if reason:
        raise _invalid("Recipient", f"{reason} in an address")
    parts = [part.strip() for part in _SPLIT_RECIPIENTS.split(raw)]
    parts = [part for part in parts if part]
    if not parts:
        raise _invalid("Recipient", "at least one address is required")
    if len(parts) > limit:
        raise _invalid("Recipient", f"more than {limit} addresses")
    seen: dict[str, str] = {}
    for part in parts:
        address = normalize_address(part, "Recipient")
        seen.setdefault(wire_address(address).lower(), address)
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
    """1 to 200 characters, no control character (see :mod:`mailgate.text`)."""
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY and control_reason(key) is None


def check_callback_url(raw: str, allowed: tuple[str, ...]) -> str:
    """An http(s) URL whose host and port are on the operator's allow list (SSRF guard)."""
    reason = control_reason(raw)
    if reason or len(raw) > 2000:
        raise _invalid("DeliveryReportURL", reason or "longer than 2000 characters")
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
    port = port or _DEFAULT_PORTS[parts.scheme]
    if not any(_allows(entry, host, port, parts.scheme) for entry in allowed):
        raise _invalid("DeliveryReportURL", "host and port not in MAILGATE_CALLBACK_ALLOWED")
    return raw


def _allows(entry: str, host: str, port: int, scheme: str) -> bool:
    # "host" allows the scheme's default port only; "host:8080" that port; "host:*" any.
    pattern, wanted = split_host_port(entry)
    if wanted is None:
        return port == _DEFAULT_PORTS[scheme] and fnmatchcase(host, pattern)
    return (wanted == "*" or int(wanted) == port) and fnmatchcase(host, pattern)


def _invalid(name: str, reason: str) -> InvalidParameter:
    return InvalidParameter(name, reason, command=COMMAND)
