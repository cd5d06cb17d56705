"""The common e-mail's wire bytes without the ``email`` package's per-header parsing.

:func:`worker.message.build_message` (policy SMTP) parses every header it is given through
the header registry and folds it again on output: about 1 ms of CPU per message, the largest
single cost of a delivery. Most e-mails a phone system sends are the simplest case: plain ASCII
addresses, a short ASCII subject, an ASCII text body with short lines, no attachment. For those,
:func:`wire_bytes` writes the very bytes ``build_message(...).as_bytes(policy=SMTP)`` writes
(tests/test_fastmime.py compares the two over many inputs), and for anything else it returns
None and the caller builds the message with ``build_message``, checks and all. The accepted
class is deliberately narrow: no CR, LF or other control character anywhere in a header, no
encoded-word, no header long enough to be folded, no body line longer than 78 characters.
:func:`self_check` compares both builders once at start-up, so a Python whose ``email``
package writes these messages differently turns the fast path off rather than sending
different bytes.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime

from mailgate.jobs import EmailJob

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
    if not enabled or job.attachments:
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


class WireMessage(EmailMessage):
    """A message already written out: ``as_bytes`` returns those bytes (for ASCII-only
    content policy SMTP and SMTPUTF8 write the same), everything else is as built."""

    def __init__(self, wire: bytes) -> None:
        super().__init__()
        self.wire = wire

    def as_bytes(self, unixfrom: bool = False, policy: Policy | None = None) -> bytes:
        return self.wire


def self_check(host: str) -> bool:
    """Compare with ``build_message`` on sample e-mails (all but the Date line, which holds the
    time); turn the fast path off on any difference."""
    global enabled
    from email.policy import SMTP

    from worker.message import build_message

    samples = [
        EmailJob("0a1b2c", "o", "mailgate@localhost", ("someone@example.com",),
                 "Line one\nline two\r\n\n.\nend", "Voicemail from +44 20 7946 0000 (0:42)"),
        EmailJob("x-1", "o", "a.b@c.d", ("e@f.g", "h+i@j.k"), "x" * MAX_LINE, ""),
    ]  # fmt: skip
    enabled, ok = True, True
    try:
        for job in samples:
            fast = wire_bytes(job, host)
            slow = build_message(job, host, lambda a: b"").as_bytes(policy=SMTP)
            ok = ok and fast is not None and _undated(fast) == _undated(slow)
    except Exception:
        ok = False
    enabled = ok
    return ok


def _undated(wire: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\n", wire, count=1)
