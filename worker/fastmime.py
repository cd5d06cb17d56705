"""The common e-mail's wire bytes without the ``email`` package's build, parse and re-parse.

:func:`worker.message.render` builds the message through the header registry, serializes it,
and reads it back twice (as text and as bytes) to check it says what was meant: about 10 ms of
CPU per message, the largest single cost of a delivery. Most e-mails a phone system sends are
the simplest case: one bare ASCII sender, bare ASCII To addresses, a short ASCII subject, an
ASCII text body with short lines; no Cc, Bcc, Reply-To, HTML part, attachment or display
name. For those, :func:`wire_bytes` writes the very bytes ``render`` writes (tests/
test_fastmime.py compares the two over many inputs), and for anything else it returns None and
the caller renders the message with ``render``, checks and all. The accepted class is
deliberately narrow: no CR, LF or other control character anywhere in a header, no
encoded-word, no header long enough to be folded, no body line longer than 78 characters.

The fast bytes are still checked before they are sent (:func:`check`), structurally and
cheaply instead of by a full parse: no bare CR or LF, no NUL, no line over 998 bytes, ASCII
only, and a header block of exactly the expected fields, in order, each line ``Name: value``.
:func:`self_check` compares both builders once at start-up, so a Python whose ``email``
package writes these messages differently turns the fast path off rather than sending
different bytes.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from mailgate.jobs import EmailJob
from worker.message import BAD_LINE, MessageRefused, render

MAX_LINE = 78
"""policy SMTP's max_line_length: a longer header is folded, a longer body line re-encoded."""

# A dot-atom local part and a plain host name: what the header registry leaves as it is.
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                      r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")  # fmt: skip
_ID_PART = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# Printable ASCII words with single spaces between them, and no encoded-word ("=?").
_SUBJECT = re.compile(r"[!-~]+(?: [!-~]+)*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters other than tab, CR and LF: left to build_message."""
_BODY_TAIL = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\nMIME-Version: 1.0\r\n\r\n"
)

enabled = True
"""Turned off by :func:`self_check` when the two builders disagree."""


def wire_bytes(job: EmailJob, message_id_host: str, now: float | None = None) -> bytes | None:
    """The message's bytes as policy SMTP writes them, or None when ``job`` is not simple."""
    if not enabled or job.attachments or job.cc or job.bcc or job.reply_to or job.html:
        return None
    to = ", ".join(job.recipients)
    if not all(_ADDRESS.fullmatch(a) for a in (job.sender, *job.recipients)):
        return None
    if len(job.sender) + 6 > MAX_LINE or len(to) + 4 > MAX_LINE:
        return None
    subject = job.subject
    if subject and (
        not _SUBJECT.fullmatch(subject) or "=?" in subject or len(subject) + 9 > MAX_LINE
    ):
        return None
    if not _ID_PART.fullmatch(job.email_id) or not _ID_PART.fullmatch(message_id_host):
        return None
    if len(job.email_id) + len(message_id_host) + 15 > MAX_LINE:
        return None
    if not job.message.isascii() or _CONTROL.search(job.message):
        return None
    lines = job.message.encode("ascii").splitlines()
    if any(len(line) > MAX_LINE for line in lines):
        return None
    stamp = int(time.time() if now is None else now)
    date = format_datetime(datetime.fromtimestamp(stamp, UTC))
    head = [f"From: {job.sender}", f"To: {to}"]
    if subject:
        head.append(f"Subject: {subject}")
    head += [f"Date: {date}", f"Message-ID: <{job.email_id}@{message_id_host}>", ""]
    body = b"\r\n".join(lines) + b"\r\n"
    return "\r\n".join(head).encode("ascii") + _BODY_TAIL + body


_HEAD_LINE = re.compile(rb"([!-9;-~]+):(?: [ -~]*)?")
"""A field's first line: its name, a colon, and printable ASCII after a space (or nothing,
when the value is folded onto the next lines)."""
_TAIL_NAMES = (b"Content-Type", b"Content-Transfer-Encoding", b"MIME-Version")


def expected_names(job: EmailJob) -> tuple[bytes, ...]:
    """The header fields of ``job``'s fast message, in order."""
    subject = (b"Subject",) if job.subject else ()
    return (b"From", b"To", *subject, b"Date", b"Message-ID", *_TAIL_NAMES)


def check(data: bytes, names: tuple[bytes, ...]) -> None:
    """Refuse fast bytes that are not a plain message with exactly the header fields ``names``:
    a bare CR or LF, a NUL, a line over 998 bytes, anything not ASCII, a header line that is
    neither ``Name: value`` nor a folded continuation, or other fields or another order."""
    if not data.isascii():
        raise MessageRefused("the generated message is not ASCII")
    bad = BAD_LINE.search(data)
    if bad is not None:
        what = "a line over 998 bytes" if len(bad.group()) > 1 else f"{bad.group()!r}"
        raise MessageRefused(f"the generated message holds {what}")
    head, blank, _ = data.partition(b"\r\n\r\n")
    if not blank:
        raise MessageRefused("the generated message has no end of header")
    found: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and found:
            continue  # a folded continuation of the field before
        match = _HEAD_LINE.fullmatch(line)
        if match is None:
            raise MessageRefused("the generated message holds a malformed header line")
        found.append(match.group(1))
    if tuple(found) != names:
        raise MessageRefused("the generated message's header fields differ from those intended")


def self_check(host: str) -> bool:
    """Compare with :func:`worker.message.render` on sample e-mails (all but the Date line,
    which holds the time), and check the fast bytes; turn the fast path off on any difference."""
    global enabled
    samples = [
        EmailJob("0a1b2c", "o", "mailgate@localhost", ("someone@example.com",),
                 "Line one\nline two\r\n\n.\nend", "Voicemail from +44 20 7946 0000 (0:42)"),
        EmailJob("x-1", "o", "a.b@c.d", ("e@f.g", "h+i@j.k"), "x" * MAX_LINE, ""),
    ]  # fmt: skip
    enabled, ok = True, True
    try:
        for job in samples:
            fast = wire_bytes(job, host)
            slow = render(job, host, lambda a: b"", 1 << 20)
            ok = ok and fast is not None and _undated(fast) == _undated(slow)
            if fast is not None:
                check(fast, expected_names(job))
    except Exception:
        ok = False
    enabled = ok
    return ok


def _undated(wire: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\n", wire, count=1)
