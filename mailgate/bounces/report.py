"""Reading a bounce report: which recipients failed or are delayed, why, and which e-mail.

RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``,
what Postfix, Microsoft 365, Gmail and most MTAs send) are read with the ``email`` package:
each per-recipient block's ``Action``, ``Status`` and ``Diagnostic-Code``. Other formats (qmail,
classic Exim, older Exchange, Yahoo and more) go to ``flufl.bounce``'s detectors, which name
the failed addresses; the code and diagnostic are then taken from the text beside each address.
Auto-replies and out-of-office answers are not bounces, nor are success notifications.

The e-mail is named by the VERP return path the report was sent to, else by the original
``Message-ID`` (``<EmailId@MAILGATE_MESSAGE_ID_HOST>``) wherever the report carries it: the
returned message or its headers, ``In-Reply-To``/``References``, or text quoting it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parsedate_to_datetime

from flufl.bounce import all_failures

from mailgate.bounces.verp import UUID, email_id_of
from mailgate.status import Bounce, Reported

log = logging.getLogger(__name__)

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"\b([45])\d\d\b")
_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
_DAEMONS = re.compile(
    r"^(mailer-daemon|postmaster|mail-daemon|microsoftexchange[0-9a-f]*)@", re.IGNORECASE
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|"
    r"abwesenheitsnotiz|r[ée]ponse automatique|absence|vacation|away from)",
    re.IGNORECASE,
)
_HEADER_LINE = re.compile(r"^\s*[A-Za-z][A-Za-z-]*:\s")
_CONTINUATION = re.compile(r"(?<![\w.])([245]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3}\b)?")
"""An SMTP reply code and its enhanced status code, as each line of a multi-line reply starts."""
MAX_REASON = 500
"""Characters of a diagnostic kept."""


@dataclass(frozen=True)
class Report:
    """What one bounce report says: each recipient's failure or delay, and the e-mails it may
    be about (EmailIds, the most certain first)."""

    recipients: tuple[Reported, ...]
    email_ids: tuple[str, ...]


def read(
    data: bytes,
    message_id_host: str,
    bounce_address: str = "",
    envelope_to: Sequence[str] = (),
    now: float | None = None,
) -> Report | None:
    """The report in ``data``, or None when it is no bounce (an auto-reply, a success notice,
    a person's mail). ``envelope_to``: the recipients it was sent to (the listener's RCPT)."""
    message = message_from_bytes(data)
    at = time.time() if now is None else now
    recipients = _dsn(message, at)
    if recipients is None:
        if _auto_reply(message):
            return None
        recipients = _detected(message, at)
    if not recipients:
        return None
    return Report(
        tuple(recipients), tuple(_email_ids(message, message_id_host, bounce_address, envelope_to))
    )


def _dsn(message: Message, at: float) -> list[Reported] | None:
    """The failed and delayed recipients of a delivery status notification; None when the
    message holds no ``message/delivery-status`` part."""
    blocks = [block for part in message.walk() for block in _status_blocks(part)]
    if not blocks:
        return None
    found = []
    for block in blocks:
        action = str(block.get("Action", "")).strip().lower()
        if action not in ("failed", "delayed"):
            continue  # delivered, relayed, expanded: not a bounce
        addresses = [
            _typed_address(block.get(name))
            for name in ("Final-Recipient", "Original-Recipient", "X-Actual-Recipient")
        ]
        named = tuple(dict.fromkeys(a for a in addresses if a))
        if not named:
            continue
        diagnostic = _one_reply(_typed_value(block.get("Diagnostic-Code")))
        code = _code(str(block.get("Status", "")), diagnostic, action == "failed")
        when = _date(block.get("Last-Attempt-Date"), at)
        found.append(Reported(named, Bounce(action, code, diagnostic[:MAX_REASON], when)))
    return found


def _status_blocks(part: Message) -> Iterator[Message]:
    """The header blocks of a ``message/delivery-status`` part (per-message, per-recipient)."""
    if part.get_content_type() != "message/delivery-status":
        return
    payload = part.get_payload()
    if isinstance(payload, list):
        yield from (block for block in payload if isinstance(block, Message))
        return
    # Some reports are encoded (base64) or not split into blocks by the parser.
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        if chunk.strip():
            yield HeaderParser().parsestr(chunk.strip() + "\n")


def _typed_address(value: object) -> str:
    """``rfc822; user@example.com`` -> ``user@example.com``."""
    address = _typed_value(value).strip().strip("<>")
    return address if "@" in address else ""


def _typed_value(value: object) -> str:
    """A DSN field's text after its type (``smtp;``, ``X-Postfix;``), on one line."""
    text = " ".join(str(value or "").split())
    kind, sep, rest = text.partition(";")
    return rest.strip() if sep and re.fullmatch(r"[A-Za-z0-9.-]+", kind.strip()) else text


def _code(status: str, diagnostic: str, failed: bool) -> str:
    """The enhanced status code: the Status field's, else the diagnostic's, else a generic
    one from the SMTP reply code or the action."""
    for text in (status, diagnostic):
        found = _STATUS.search(text)
        if found:
            return found.group(0)
    reply = _REPLY_CODE.search(diagnostic)
    if reply:
        return f"{reply.group(1)}.0.0"
    return "5.0.0" if failed else "4.0.0"


def _date(value: object, default: float) -> float:
    try:
        return parsedate_to_datetime(str(value)).timestamp() if value else default
    except (TypeError, ValueError, IndexError):
        return default


def _auto_reply(message: Message) -> bool:
    """An auto-reply, vacation or out-of-office answer (RFC 3834 and the usual vendor marks),
    not a report from a mail system."""
    if any(message.get(name) for name in ("X-Autoreply", "X-Autorespond", "X-Vacation")):
        return True
    if str(message.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    sender = " ".join(a for _, a in getaddresses([str(message.get("From", ""))]))
    if _DAEMONS.search(sender) or message.get("X-Failed-Recipients"):
        return False  # a mail system's report: read it
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    return auto.startswith("auto-replied") or bool(
        _AUTO_SUBJECT.search(str(message.get("Subject", "")))
    )


def _detected(message: Message, at: float) -> list[Reported]:
    """The failures flufl.bounce finds in a report that is no DSN, each with the code and
    diagnostic beside its address in the text."""
    if not message.get("From"):
        return []  # no mail system's report; and flufl.bounce 6.0's Yale detector fails on it
    try:
        temporary, permanent = all_failures(message)
    except Exception as exc:  # one detector's failure ends its scan: no bounce found
        log.info("bounce detectors could not read a message: %s", type(exc).__name__)
        return []
    text = _text(message)
    found = []
    for raw, failed in [
        *((a, True) for a in sorted(permanent)),
        *((a, False) for a in sorted(temporary - permanent)),
    ]:
        address = raw.decode("ascii", "replace").strip().strip("<>")
        diagnostic = _beside(text, address)
        code = _code("", diagnostic, failed)
        action = "failed" if failed else "delayed"
        found.append(Reported((address,), Bounce(action, code, diagnostic[:MAX_REASON], at)))
    return found


def _text(message: Message) -> str:
    """The report's human-readable text: its text/plain parts, decoded."""
    texts = []
    for part in message.walk():
        if part.get_content_type() != "text/plain":
            continue
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes):
            texts.append(raw.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(texts)


def _beside(text: str, address: str) -> str:
    """The diagnostic paragraph that names ``address`` (its line and those after it up to a
    blank line), on one line, without the address itself: the first that holds a status or
    reply code, else the first that is not a quoted header line (``To: ...``)."""
    lines = text.splitlines()
    lowered = address.lower()
    paragraphs = []
    for index, line in enumerate(lines):
        if lowered not in line.lower() or _HEADER_LINE.match(line):
            continue
        paragraph = [line]
        for following in lines[index + 1 :]:
            if not following.strip():
                break
            paragraph.append(following)
        words = " ".join(" ".join(paragraph).split())
        rest = re.sub(rf"^<?{re.escape(address)}>?:?\s*", "", words, flags=re.IGNORECASE)
        if rest:
            paragraphs.append(rest)
    coded = [p for p in paragraphs if _STATUS.search(p) or _REPLY_CODE.search(p)]
    return _one_reply((coded or paragraphs or [""])[0])


def _one_reply(text: str) -> str:
    """A multi-line SMTP reply on one line: ``550-5.1.1 a 550-5.1.1 b`` -> ``550 5.1.1 a b``."""
    first = _CONTINUATION.search(text)
    if first is None:
        return text
    code, enhanced = first.group(1), first.group(2) or ""
    again = re.compile(
        rf"(?<![\w.]){code}[ -]{re.escape(enhanced)}" if enhanced else rf"(?<![\w.]){code}-"
    )
    head = f"{code} {enhanced}"
    tail = again.sub(" ", text[first.end() :])
    return " ".join((text[: first.start()] + head + tail).split())


def _email_ids(
    message: Message, host: str, bounce_address: str, envelope_to: Sequence[str]
) -> list[str]:
    """Candidate EmailIds, most certain first, without repeats."""
    found: list[str] = []
    # 1. The VERP return path the report was sent to.
    headers = [str(v) for name in _ENVELOPE_HEADERS for v in message.get_all(name, [])]
    for address in [*envelope_to, *(a for _, a in getaddresses(headers))]:
        email_id = email_id_of(address, bounce_address)
        if email_id:
            found.append(email_id)
    # 2. The original Message-ID: in the returned message or headers, or replied to.
    own = re.compile(rf"<({UUID.pattern})@{re.escape(host)}>", re.IGNORECASE)
    for original in _returned_headers(message):
        found += own.findall(str(original.get("Message-ID", "")))
    for name in ("In-Reply-To", "References"):
        found += own.findall(str(message.get(name, "")))
    # 3. Anywhere in the text (a copy of the message quoted inline, as qmail and Exim do).
    for part in message.walk():
        raw = part.get_payload(decode=True) if not part.is_multipart() else None
        if isinstance(raw, bytes):
            found += own.findall(raw.decode("utf-8", "replace"))
    seen: dict[str, None] = {}
    for email_id in found:
        seen.setdefault(email_id.lower(), None)
    return list(seen)


def _returned_headers(message: Message) -> Iterator[Message]:
    """The header blocks of the returned message (``message/rfc822``) or of its headers alone
    (``text/rfc822-headers``)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list):
                yield from (p for p in payload if isinstance(p, Message))
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                yield HeaderParser().parsestr(raw.decode("utf-8", "replace"))
