"""Validation of a SendEmail request: every failure names the parameter at fault (Code 302)."""

from __future__ import annotations

import os
import re
import socket
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from mailgate.addresses import (
    bare,
    envelope_key,
    has_display_name,
    mailbox,
    parse_mailbox,
    split,
    split_list,
)
from mailgate.attachments import AttachmentRefused, check_path, map_path
from mailgate.config import Settings
from mailgate.errors import InvalidParameter, TooLarge
from mailgate.headers import NotCarried, check_address, subject_text, wire_address
from mailgate.jobs import Attachment
from mailgate.parsers import split_host_port
from mailgate.sizes import encoded_size
from mailgate.text import control_reason, has_surrogate

COMMAND = "SendEmail"
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
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    html: str = ""


def validate_send(params: Mapping[str, str], settings: Settings) -> SendRequest:
    """Check every SendEmail parameter; raise the error for the first bad one."""
    recipients = parse_recipients(params.get("recipient", ""), settings.max_recipients)
    cc = parse_addresses(params.get("cc", ""), "Cc", settings.max_recipients)
    bcc = parse_addresses(params.get("bcc", ""), "Bcc", settings.max_recipients)
    # One RCPT per address: a Bcc address also in To or Cc stays only there (where the caller
    # showed it), and an address counts once toward the limit wherever it is given.
    shown = {envelope_key(address) for address in (*recipients, *cc)}
    bcc = tuple(address for address in bcc if envelope_key(address) not in shown)
    if len(shown) + len(bcc) > settings.max_recipients:
        raise _invalid(
            "Recipient",
            f"more than {settings.max_recipients} addresses in Recipient, Cc and Bcc together",
        )
    for name, addresses in (("Recipient", recipients), ("Cc", cc), ("Bcc", bcc)):
        check_recipient_domains(addresses, name, settings.recipient_domains)
    reply_to = parse_addresses(params.get("replyto", ""), "ReplyTo", settings.max_recipients)
    html = check_body(params.get("htmlmessage", ""), "HtmlMessage", settings)
    message = check_body(params.get("message", ""), "Message", settings)
    if not message and not html:
        raise _invalid("Message", "the text body is required (it may be empty with HtmlMessage)")
    if len((message + html).encode("utf-8")) > settings.max_message_bytes:
        raise TooLarge(f"Message and HtmlMessage are over {settings.max_message_bytes} bytes")
    sender = params.get("sender", "")
    if sender:
        sender = normalize_address(sender, "Sender")
        check_sender_name(sender)
    subject = check_subject(params.get("subject", ""))
    api_extension = params.get("apiextension", "")
    reason = control_reason(api_extension)
    if reason or len(api_extension) > 256:
        raise _invalid("ApiExtension", reason or "longer than 256 characters")
    attachments = parse_attachments(params.get("attachments", ""), settings)
    callback_url = params.get("deliveryreporturl", "")
    if callback_url:
        callback_url = check_callback_url(callback_url, settings.callback_allowed)
    request = SendRequest(
        sender=sender or None,
        recipients=recipients,
        message=message,
        subject=subject,
        attachments=attachments,
        api_extension=api_extension,
        callback_url=callback_url,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        html=html,
    )
    check_encoded_size(request, settings)
    return request


def check_body(text: str, name: str, settings: Settings) -> str:
    """A text or HTML body: valid Unicode, no NUL, within the size limit."""
    if has_surrogate(text):
        raise _invalid(name, "not valid Unicode (a lone surrogate)")
    if len(text.encode("utf-8")) > settings.max_message_bytes:
        raise TooLarge(f"{name} is over {settings.max_message_bytes} bytes")
    if "\x00" in text:
        raise _invalid(name, "NUL character in the text")
    return text


def check_recipient_domains(addresses: Sequence[str], name: str, globs: Sequence[str]) -> None:
    """302 for an address whose domain none of MAILGATE_RECIPIENT_DOMAINS allows (empty: any)."""
    if not globs:
        return
    for address in addresses:
        domain = bare(address).rpartition("@")[2].lower()
        forms = {domain, wire_address(bare(address)).rpartition("@")[2].lower()}
        if not any(fnmatchcase(form, glob) for form in forms for glob in globs):
            raise _invalid(name, f"the domain {domain} is not in MAILGATE_RECIPIENT_DOMAINS")


def check_encoded_size(request: SendRequest, settings: Settings) -> None:
    """302 when the e-mail, once encoded (base64 attachments, encoded header words), could be
    over the limit."""
    attachments = request.attachments
    names = [a.filename or os.path.basename(a.path) for a in attachments]
    sender = request.sender or settings.default_sender
    headers = [sender, *request.recipients, *request.cc, *request.reply_to, request.subject]
    sizes = [a.size for a in attachments]
    size = encoded_size(request.message + request.html, sizes, headers, names)
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


MAX_DISPLAY_NAME = 256
MAX_LOCAL_PART = 64
"""RFC 5321 and RFC 6531: octets before the @ (a non-ASCII character counts its UTF-8 bytes)."""


MAX_CACHED_ADDRESS = 600
"""A display name (256) and an address (254) with room for quotes and spaces."""


class _Refused(ValueError):
    """Why an address is refused (the caller names the parameter)."""


def normalize_address(raw: str, name: str) -> str:
    """Return one syntactically valid address (no DNS look-up) or raise 302 for ``name``."""
    # Only address-sized text is remembered; anything longer is refused or checked afresh.
    check = _normalized if len(raw) <= MAX_CACHED_ADDRESS else _normalized.__wrapped__
    try:
        return check(raw)
    except _Refused as exc:
        raise _invalid(name, str(exc)) from None


@lru_cache(maxsize=4096)
def _normalized(raw: str) -> str:
    """The address as kept, or :class:`_Refused`.

    The one place that decides what an address may be: ``user@domain`` or
    ``Display Name <user@domain>`` (kept as :func:`mailgate.addresses.mailbox` writes it).
    Internal domains (``.local``, ``.lan``, single-label hosts) are the relay's to judge. A
    domain given in ASCII (an A-label, ``xn--...``) stays in that form; the worker sends the
    ASCII form either way.

    Remembered: an IVR sends to the same few addresses all day, and the checks (the email
    package writing and reading the header back) cost more than the rest of the request.
    Refusals (exceptions) are not cached; at most 4,096 addresses of a request's size each.
    """
    reason = control_reason(raw)
    if reason:
        raise _Refused(f"{reason} in an address")
    raw, display = raw.strip(), ""
    if has_display_name(raw):
        try:
            display, raw = parse_mailbox(raw)
        except (ValueError, IndexError, TypeError) as exc:
            raise _Refused(f"not a valid address: {exc}") from None
        display = display.strip()
        if len(display) > MAX_DISPLAY_NAME:
            raise _Refused(f"display name longer than {MAX_DISPLAY_NAME} characters")
    try:
        # strict: RFC 5321's 64 characters before the @ (a relay may refuse a longer one).
        checked = validate_email(
            raw, check_deliverability=False, globally_deliverable=False, strict=True
        )
    except EmailNotValidError as exc:
        raise _Refused(f"not a valid address: {exc}") from None
    if len(checked.local_part.encode("utf-8")) > MAX_LOCAL_PART:
        raise _Refused(f"the part before the @ is longer than {MAX_LOCAL_PART} bytes")
    if numeric_host(str(checked.ascii_domain)):
        raise _Refused("the domain is an IP address (or reads as one): give a host name")
    address = str(checked.normalized)
    if checked.ascii_email and raw.rpartition("@")[2].isascii():
        address = str(checked.ascii_email)
    try:
        check_address(wire_address(address), display)
    except NotCarried as exc:
        raise _Refused(str(exc)) from None
    return mailbox(display, address)


def numeric_host(domain: str) -> bool:
    """True for a domain that is, or that a resolver reads as, an IPv4 address: an all-digit
    last label (``127.0.0.1``; no top-level domain is numeric) or any form ``inet_aton``
    takes (``127.1``, ``0x7f.1``, ``2130706433``). RFC 5321 wants an address literal in
    brackets, which mailgate does not accept: a relay would deliver to that host itself."""
    if domain.rstrip(".").rpartition(".")[2].isdigit():
        return True
    try:
        socket.inet_aton(domain)
    except (OSError, ValueError):
        return False
    return True


_ADDRESS_LIKE = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")
"""Text a reader takes for an address: something on either side of an @ (after NFKC, which
turns the full-width U+FF20 into @)."""


def check_sender_name(sender: str) -> None:
    """302 ``Sender`` for a display name that shows an address other than the real one:
    ``"boss@corp.example" <mailgate@localhost>`` reads as mail from the boss."""
    display_name, address = split(sender)
    own = {address.lower(), wire_address(address).lower()}
    for shown in _ADDRESS_LIKE.findall(unicodedata.normalize("NFKC", display_name)):
        if shown.strip(".").lower() not in own:
            raise _invalid("Sender", "the display name shows another address than the sender's")


def parse_recipients(raw: str, limit: int) -> tuple[str, ...]:
    """The ``Recipient`` list: at least one address."""
    found = parse_addresses(raw, "Recipient", limit)
    if not found:
        raise _invalid("Recipient", "at least one address is required")
    return found


def parse_addresses(raw: str, name: str, limit: int) -> tuple[str, ...]:
    """Split on ``;`` or ``,`` (not inside a quoted display name), check each address, drop
    repeats (the same bare address, case-insensitively)."""
    reason = control_reason(raw)
    if reason:
        raise _invalid(name, f"{reason} in an address")
    parts = split_list(raw)
    if len(parts) > limit:
        raise _invalid(name, f"more than {limit} addresses")
    seen: dict[str, str] = {}
    for part in parts:
        address = normalize_address(part, name)
        seen.setdefault(envelope_key(address), address)
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
            found.append(
                check_path(
                    map_path(path, settings.attachment_path_map, settings.attachment_roots),
                    settings.attachment_roots,
                )
            )
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
    if " " in raw or not raw.isascii():
        # An HTTP request line holds neither; percent-encode them (%20, UTF-8 as %C3%A9).
        raise _invalid("DeliveryReportURL", "a space or a non-ASCII character: percent-encode it")
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
