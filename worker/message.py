"""Building the MIME message with Python's ``email`` package, and checking what it generated.

The builder runs the same header checks as the API (:mod:`mailgate.headers`), then reads the
serialized bytes back and compares them with what it meant to write: the same header fields
with the same values in every part, no bare CR or LF, no NUL, no line over 998 bytes, and not
over ``MAILGATE_MAX_EMAIL_BYTES``. Any difference is a refusal, whatever the interpreter did.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from email import message_from_bytes, message_from_string
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import SMTP, SMTPUTF8, default
from email.utils import formatdate

from mailgate.addresses import bare, split
from mailgate.attachments import content_type
from mailgate.headers import (
    check_address,
    check_filename,
    header_address,
    subject_text,
    wire_address,
)
from mailgate.jobs import Attachment, EmailJob

Reader = Callable[[Attachment], bytes]
Shape = list[list[tuple[str, str]]]
"""Every part's header fields, in order, as (name, decoded value)."""

BAD_LINE = re.compile(rb"\r(?!\n)|(?<!\r)\n|\x00|[^\r\n]{999}")


class MessageRefused(ValueError):
    """The message cannot be sent as intended; the text says why (no content)."""


def envelope(job: EmailJob) -> tuple[str, list[str]]:
    """MAIL FROM and RCPT TO: bare addresses as sent; Bcc here and nowhere else."""
    return wire_address(bare(job.sender)), [wire_address(bare(r)) for r in
                                             job.envelope_recipients()]  # fmt: skip


def header_addresses(texts: Sequence[str]) -> tuple[Address, ...]:
    """Addresses for a From/To/Cc/Reply-To field, display names kept, each checked again."""
    found = []
    for text in texts:
        display_name, address = split(text)
        address = wire_address(address)
        check_address(address, display_name)
        found.append(header_address(display_name, address))
    return tuple(found)


def build_message(job: EmailJob, message_id_host: str, read: Reader) -> EmailMessage:
    """The message for ``job``; ``read`` loads each attachment (and checks it again)."""
    header_addresses(job.bcc)  # checked like the others, though only the envelope holds them
    # The accepted subject is already the decoded text: this must leave it as it is.
    if job.subject and subject_text(job.subject) != job.subject:
        raise MessageRefused("the subject would not reach the reader as accepted")
    message = EmailMessage(policy=SMTP)
    message["From"] = header_addresses([job.sender])
    message["To"] = header_addresses(job.recipients)
    if job.cc:
        message["Cc"] = header_addresses(job.cc)
    if job.reply_to:
        message["Reply-To"] = header_addresses(job.reply_to)
    if job.subject:
        message["Subject"] = job.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # A stable Message-ID lets receivers drop the rare duplicate of a crash after the 250.
    message["Message-ID"] = f"<{job.email_id}@{message_id_host}>"
    message.set_content(job.message)
    if job.html:
        # multipart/alternative: the text first, the HTML (preferred by most readers) last.
        message.add_alternative(job.html, subtype="html")
    for attachment in job.attachments:
        # An upload keeps its caller's name and type; a path attachment's come from the path.
        filename = attachment.filename or os.path.basename(attachment.path)
        check_filename(filename)
        maintype, subtype = content_type(attachment.content_type, filename).split("/", 1)
        # add_attachment encodes a non-ASCII file name as RFC 2231.
        message.add_attachment(
            read(attachment), maintype=maintype, subtype=subtype, filename=filename
        )
    return message


def render(job: EmailJob, message_id_host: str, read: Reader, max_bytes: int) -> bytes:
    """The bytes to send for ``job``, after checking they say exactly what was meant.

    Non-ASCII addresses (which need SMTPUTF8) are written as UTF-8; everything else as ASCII.
    Only one large copy of the message is kept at a time where it can be helped.
    """
    message = build_message(job, message_id_host, read)
    # Only a non-ASCII address needs SMTPUTF8; a non-ASCII display name is an encoded word.
    sender, recipients = envelope(job)
    policy = SMTP if all(a.isascii() for a in [sender, *recipients]) else SMTPUTF8
    data = message.as_bytes(policy=policy)
    intended = shape(message)  # after as_bytes, which chooses the MIME boundaries
    del message  # the encoded attachments: not needed while the bytes are read back
    if len(data) > max_bytes:
        raise MessageRefused(
            f"the e-mail is {len(data)} bytes once encoded, over the {max_bytes} bytes of "
            "MAILGATE_MAX_EMAIL_BYTES"
        )
    verify(data, intended)
    return data


def shape(message: Message) -> Shape:
    """Every part's header fields as (name, decoded value): what the reader will see."""
    return [[(name, str(value)) for name, value in part.items()] for part in message.walk()]


def verify(data: bytes, intended: Shape) -> None:
    """Refuse bytes with a bare CR or LF, a NUL, an overlong line, or other header fields."""
    bad = BAD_LINE.search(data)
    if bad is not None:
        what = "a line over 998 bytes" if len(bad.group()) > 1 else f"{bad.group()!r}"
        raise MessageRefused(f"the generated message holds {what}")
    try:
        # UTF-8 under SMTPUTF8 and in an 8bit text body: read as text, as a receiver would.
        back = message_from_string(data.decode(), policy=default)
    except UnicodeDecodeError:
        raise MessageRefused("the generated message is not UTF-8") from None
    # Read as bytes too, as Python-based receivers do: an encoded word inside raw UTF-8 text
    # is decoded there, and must not be.
    if shape(back) != intended or shape(message_from_bytes(data, policy=default)) != intended:
        raise MessageRefused("the generated message's header fields differ from those intended")
    for part in back.walk():
        if part.defects:
            raise MessageRefused(f"the generated message is malformed: {part.defects[0]!r}")
