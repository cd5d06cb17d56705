"""The message writer: the bytes sent for every e-mail, whatever its shape, in one pass.

Every header field comes from the one encoder of :mod:`mailgate.headers` (printable ASCII
lines of legal length; encoded words for anything else), after the same checks the API ran,
so a record that skipped them gets no pass. Each body gets the transfer encoding the writer
picks: 7bit for ASCII text with lines of at most 78 characters, quoted-printable for other
mostly ASCII text, base64 for the rest. Attachments are base64-encoded straight from the
file, a chunk at a time, into the one buffer that holds the message: its size is known
before any file is read, so an e-mail over ``MAILGATE_MAX_EMAIL_BYTES`` is refused first,
and the buffer is never grown or copied (the SMTP transport sends it as it is).

Lines end in CRLF, none is over 998 bytes, and a MIME boundary (``=_`` and random letters)
cannot occur in base64 or quoted-printable text and is checked against 7bit text. The header
blocks are checked once more, cheaply (:func:`check_header`); nothing is parsed back. The
``email`` package is the oracle of the tests (tests/test_message.py), not of the hot path.

Shapes: a text part alone; text and HTML as multipart/alternative; either of them followed by
the attachments in a multipart/mixed.
"""

from __future__ import annotations

import binascii
import io
import mimetypes
import os
import re
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from mailgate.addresses import bare, split
from mailgate.attachments import AttachmentRefused
from mailgate.headers import (
    HARD_LINE,
    NotCarried,
    attachment_fields,
    check_address,
    check_filename,
    mailboxes,
    subject_text,
    unstructured,
    wire_address,
)
from mailgate.jobs import Attachment, EmailJob
from mailgate.text import first_control

Source = bytes | io.BufferedReader
"""An attachment's content: the bytes, or a file open for reading (closed by the writer)."""
Reader = Callable[[Attachment], Source]

CRLF = b"\r\n"
CHUNK = 57 * 64 * 64
"""Bytes of a file encoded at a time: 4,096 base64 lines (about 312 KB once encoded)."""
_LINE_BLOCK = struct.Struct("76s" * 64)
_LINE_BLOCK_OUT = struct.Struct("76s2s" * 64)
"""64 base64 lines of 76 characters, read from the encoded text and written with their CRLF
into the message: the lines are split without a Python loop over them."""
_HIGH = bytes(range(128, 256))
_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_ID_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_FIELD = re.compile(r"([!-9;-~]+):")
_ADDRESS_FIELDS = ("From", "To", "Cc", "Reply-To")
"""The fields that may hold raw UTF-8: an address whose local part needs SMTPUTF8."""


class MessageRefused(ValueError):
    """The message cannot be sent as intended; the text says why (no content)."""


def envelope(job: EmailJob) -> tuple[str, list[str]]:
    """MAIL FROM and RCPT TO: bare addresses as sent; Bcc here and nowhere else."""
    return wire_address(bare(job.sender)), [
        wire_address(bare(r)) for r in job.envelope_recipients()
    ]


def render(job: EmailJob, message_id_host: str, read: Reader, max_bytes: int) -> bytearray:
    """The bytes to send for ``job`` (CRLF line ends, not dot-stuffed); ``read`` gives each
    attachment's content (and checks the file again).

    Raises MessageRefused, NotCarried (a header the API would have refused) or
    AttachmentRefused. Every header field is written before any file is opened, and no file
    is read once the size is known to be over ``max_bytes``.
    """
    sender, recipients = envelope(job)
    reply_to = [wire_address(bare(address)) for address in job.reply_to]
    # Only an address with a non-ASCII local part is written as UTF-8 (SMTPUTF8).
    utf8 = not all(address.isascii() for address in [sender, *recipients, *reply_to])
    head = _top_fields(job, message_id_host)
    texts = [("plain", job.message), *([("html", job.html)] if job.html else [])]
    bodies = [(subtype, *text_body(text)) for subtype, text in texts]
    attachment_heads = [_attachment_fields(attachment) for attachment in job.attachments]
    sources: list[Source] = []
    try:
        for attachment in job.attachments:
            sources.append(read(attachment))
        pieces = _layout(head, bodies, zip(attachment_heads, sources, strict=True), utf8)
        size = sum(piece.size if isinstance(piece, _Encoded) else len(piece) for piece in pieces)
        if size > max_bytes:
            raise MessageRefused(
                f"the e-mail is {size} bytes once encoded, over the {max_bytes} bytes of "
                "MAILGATE_MAX_EMAIL_BYTES"
            )
        return _fill(pieces, size)
    finally:
        for source in sources:
            if not isinstance(source, bytes):
                source.close()


# --- header fields ------------------------------------------------------------------------------


def _top_fields(job: EmailJob, message_id_host: str) -> list[str]:
    """From, To, Cc, Reply-To, Subject, Date, Message-ID: each checked as the API checks it."""
    _mailbox_pairs(job.bcc)  # checked like the others, though only the envelope holds them
    fields = [mailboxes("From", _mailbox_pairs([job.sender]))]
    fields.append(mailboxes("To", _mailbox_pairs(job.recipients)))
    if job.cc:
        fields.append(mailboxes("Cc", _mailbox_pairs(job.cc)))
    if job.reply_to:
        fields.append(mailboxes("Reply-To", _mailbox_pairs(job.reply_to)))
    if job.subject:
        # The accepted subject is already the decoded text: this must leave it as it is.
        if subject_text(job.subject) != job.subject:
            raise MessageRefused("the subject would not reach the reader as accepted")
        fields.append(unstructured("Subject", job.subject))
    fields.append(f"Date: {format_datetime(datetime.now(UTC).replace(microsecond=0))}")
    if not (_ID_PART.fullmatch(job.email_id) and _ID_PART.fullmatch(message_id_host)):
        raise MessageRefused("the EmailId or MAILGATE_MESSAGE_ID_HOST cannot form a Message-ID")
    # A stable Message-ID lets receivers drop the rare duplicate of a crash after the 250.
    fields.append(f"Message-ID: <{job.email_id}@{message_id_host}>")
    fields.append("MIME-Version: 1.0")
    return fields


def _mailbox_pairs(texts: Sequence[str]) -> list[tuple[str, str]]:
    """(display name, address as sent) of each address, each checked again."""
    pairs = []
    for text in texts:
        display_name, address = split(text)
        address = wire_address(address)
        check_address(address, display_name)
        pairs.append((display_name, address))
    return pairs


def check_header(block: str, utf8: bool) -> list[str]:
    """The field names of a header block, after refusing any line that is not ``Name: value``
    or a folded continuation of printable text, or is over 998 bytes; raw UTF-8 only in an
    address field with ``utf8`` (SMTPUTF8). Linear in the block; the writer runs it on every
    block it writes."""
    names: list[str] = []
    for line in block.split("\r\n"):
        bad = first_control(line)
        if bad is not None:
            raise MessageRefused(f"the generated header holds {bad!r}")
        if len(line.encode()) > HARD_LINE:
            raise MessageRefused("the generated header holds a line over 998 bytes")
        if not line.startswith(" ") or not names or not line.strip():
            match = _FIELD.match(line)
            if match is None:
                raise MessageRefused("the generated header holds a malformed line")
            names.append(match.group(1))
        # else: a folded continuation of the field before
        if not line.isascii() and not (utf8 and names[-1] in _ADDRESS_FIELDS):
            raise MessageRefused("the generated header is not ASCII")
    return names


# --- bodies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """An attachment's base64 body, written straight into the message buffer."""

    source: Source
    raw_size: int

    @property
    def size(self) -> int:
        return base64_size(self.raw_size)


Piece = bytes | _Encoded


def base64_size(raw: int) -> int:
    """Bytes of ``raw`` bytes in base64 lines of 76 characters, each ending in CRLF."""
    encoded = 4 * -(-raw // 3)
    return encoded + 2 * -(-encoded // 76)


def text_body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body) of a text part: its lines (split on CR, LF or CRLF,
    as the ``email`` package does) end in CRLF."""
    try:
        data = text.encode()
    except UnicodeEncodeError:
        raise MessageRefused("the text is not valid Unicode") from None
    lines = data.splitlines()
    body = CRLF.join(lines) + CRLF
    if body.isascii() and b"\x00" not in body and max(map(len, lines), default=0) <= 78:
        return "7bit", body
    # Quoted-printable, readable as it stays, for mostly ASCII text; never longer than base64,
    # which the API's size estimate assumes (mailgate.sizes).
    high = len(body) - len(body.translate(None, _HIGH))
    if 4 * high <= len(body):
        encoded = binascii.b2a_qp(body, istext=True)
        if len(encoded) <= base64_size(len(body)):
            return "quoted-printable", encoded
    return "base64", base64_lines(body)


def base64_lines(data: bytes | memoryview) -> bytes:
    """``data`` in base64 lines of 76 characters, each ending in CRLF."""
    buffer = bytearray(base64_size(len(data)))
    with memoryview(buffer) as view:
        _write_base64(view, 0, data)
    return bytes(buffer)


def _write_base64(view: memoryview, at: int, data: bytes | memoryview) -> int:
    """Write ``data`` at ``at`` in base64 lines (a multiple of 57 bytes unless it is the end
    of the content); return where it ends. Held meanwhile: the encoded text, and 64 lines."""
    encoded = binascii.b2a_base64(data, newline=False)
    whole = len(encoded) // _LINE_BLOCK.size * _LINE_BLOCK.size
    lines_and_breaks = [CRLF] * 128
    for lines in _LINE_BLOCK.iter_unpack(memoryview(encoded)[:whole]):
        lines_and_breaks[0::2] = lines
        _LINE_BLOCK_OUT.pack_into(view, at, *lines_and_breaks)
        at += _LINE_BLOCK_OUT.size
    for start in range(whole, len(encoded), 76):
        line = encoded[start : start + 76] + CRLF
        view[at : at + len(line)] = line
        at += len(line)
    return at


# --- the MIME tree ------------------------------------------------------------------------------


def _layout(
    head: list[str],
    bodies: Sequence[tuple[str, str, bytes]],
    attachments: Iterable[tuple[list[str], Source]],
    utf8: bool,
) -> list[Piece]:
    """The message as pieces: header blocks, delimiters and text bodies as bytes, attachments
    to be encoded. ``bodies`` holds (subtype, transfer encoding, body) of each text part."""
    token = secrets.token_hex(12)
    while any(token.encode() in body for _, encoding, body in bodies if encoding == "7bit"):
        token = secrets.token_hex(12)  # a boundary must not occur in a part
    texts = [
        (
            [
                f'Content-Type: text/{subtype}; charset="utf-8"',
                f"Content-Transfer-Encoding: {encoding}",
            ],
            body,
        )
        for subtype, encoding, body in bodies
    ]
    content: list[Piece]
    if len(texts) == 1:
        content_fields, body = texts[0]
        content = [body]
    else:
        content, content_fields = _multipart("alternative", f"=_a{token}", texts, utf8)
    parts: list[tuple[list[str], Piece | list[Piece]]] = [(content_fields, content)]
    parts += [(fields, _Encoded(source, _size_of(source))) for fields, source in attachments]
    if len(parts) > 1:
        content, content_fields = _multipart("mixed", f"=_m{token}", parts, utf8)
    return [_block([*head, *content_fields], utf8), *content]


def _multipart(
    subtype: str,
    boundary: str,
    parts: Iterable[tuple[list[str], Piece | list[Piece]]],
    utf8: bool,
) -> tuple[list[Piece], list[str]]:
    """The body pieces and the Content-Type field of a multipart of ``parts``."""
    delimiter = f"--{boundary}\r\n".encode()
    pieces: list[Piece] = []
    for fields, body in parts:
        pieces += [delimiter, _block(fields, utf8)]
        pieces += body if isinstance(body, list) else [body]
        pieces.append(CRLF)  # the line break before a delimiter belongs to the delimiter
    pieces.append(f"--{boundary}--\r\n".encode())
    return pieces, [f'Content-Type: multipart/{subtype}; boundary="{boundary}"']


def _block(fields: list[str], utf8: bool) -> bytes:
    """A header block (the fields, then the empty line), checked: each field one field."""
    text = "\r\n".join(fields)
    if check_header(text, utf8) != [field.partition(":")[0] for field in fields]:
        raise MessageRefused("the generated header fields differ from those intended")
    return (text + "\r\n\r\n").encode()


def _attachment_fields(attachment: Attachment) -> list[str]:
    """An attachment's header fields: type (the upload's, else guessed), name, base64."""
    # An upload keeps its caller's name and type; a path attachment's come from the path.
    filename = attachment.filename or os.path.basename(attachment.path)
    try:
        check_filename(filename)
    except NotCarried as exc:
        raise MessageRefused(f"file name: {exc}") from None
    content_type = attachment.content_type.lower()
    if not content_type:
        guessed, encoding = mimetypes.guess_type(filename)
        content_type = guessed if guessed and not encoding else ""
    # message/* and multipart/* may not be base64-encoded (RFC 2046): sent as plain bytes.
    if not _TYPE.fullmatch(content_type) or content_type.startswith(("message/", "multipart/")):
        content_type = "application/octet-stream"
    content, disposition = attachment_fields(content_type, filename)
    return [content, "Content-Transfer-Encoding: base64", disposition]


def _size_of(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else os.fstat(source.fileno()).st_size


# --- the buffer ---------------------------------------------------------------------------------


def _fill(pieces: Sequence[Piece], size: int) -> bytearray:
    """The message: ``size`` bytes allocated once, each piece written into its place."""
    buffer = bytearray(size)
    at = 0
    with memoryview(buffer) as view:
        for piece in pieces:
            if isinstance(piece, _Encoded):
                at = _encode_into(view, at, piece)
            else:
                view[at : at + len(piece)] = piece
                at += len(piece)
    return buffer


def _encode_into(view: memoryview, at: int, piece: _Encoded) -> int:
    """Write ``piece``'s base64 lines at ``at``; refuse a file that is not the size it was."""
    source, end = piece.source, at + piece.size
    if isinstance(source, bytes):
        return _write_base64(view, at, source)
    chunk = memoryview(bytearray(min(CHUNK, piece.raw_size)))
    left = piece.raw_size
    while left:
        # Every chunk but the last is whole (a multiple of 57 bytes): no padding mid-stream.
        count = _read_into(source, chunk[: min(CHUNK, left)])
        if not count or at + base64_size(count) > end:
            break
        at = _write_base64(view, at, chunk[:count])
        left -= count
    if left or at != end or source.read(1):
        raise AttachmentRefused("file changed after the e-mail was accepted")
    return at


def _read_into(source: io.BufferedReader, view: memoryview) -> int:
    """Fill ``view`` from ``source`` (fewer bytes only at the end of the file)."""
    filled = 0
    while filled < len(view):
        count = source.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled
