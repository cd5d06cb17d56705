"""The size of an e-mail as it goes on the wire, which is what a relay's limit measures.

Attachments travel in base64: four bytes for every three, plus CRLF after every 76 characters,
so a file of 25 MiB becomes about 34 MiB. Header texts (addresses with their display names,
the subject, file names) grow too: encoded words, RFC 2231 parameters and folding. The API
refuses an e-mail whose estimate is over ``MAILGATE_MAX_EMAIL_BYTES``, and the estimate is an
upper bound of what the worker writes (tests/test_hostile_input.py checks it on the largest
headers the API accepts), so nothing accepted fails the worker's own measure of the message.
"""

from __future__ import annotations

from collections.abc import Iterable

HEADROOM = 16 * 1024
"""The fixed header fields (Date, Message-ID, MIME-Version, content types) and MIME boundaries."""
PART_OVERHEAD = 512
"""The headers and boundary line of one attachment part, besides its file name."""
TEXT_FACTOR = 2
"""Bytes written per UTF-8 byte of an address or subject, at most (an encoded word takes 1.7)."""
NAME_FACTOR = 4
"""Bytes written per UTF-8 byte of a file name, at most: it appears twice, percent-encoded
(RFC 2231, 3 per byte) in Content-Disposition and as an encoded word in Content-Type."""
TEXT_OVERHEAD = 128
"""Per text: its field name, angle brackets, separators, an encoded word's frame, folding."""


def base64_size(raw: int) -> int:
    """Bytes of ``raw`` bytes in base64 with a CRLF after every 76 characters."""
    encoded = 4 * -(-raw // 3)
    return encoded + 2 * -(-encoded // 76)


def text_size(texts: Iterable[str], factor: int) -> int:
    """An upper bound of the header bytes that carry ``texts``, ``factor`` bytes per byte."""
    return sum(factor * len(text.encode("utf-8")) + TEXT_OVERHEAD for text in texts)


def encoded_size(
    message: str,
    attachments: Iterable[int],
    header_texts: Iterable[str] = (),
    file_names: Iterable[str] = (),
) -> int:
    """An upper estimate of the serialized e-mail: text body, attachments, headers.

    ``header_texts`` are the addresses (with display names) and the subject; ``file_names``
    the attachments' names.
    """
    # The email package sends text as 8bit, or quoted-printable or base64, whichever is
    # shorter: never more than base64 of its UTF-8 bytes.
    body = base64_size(len(message.encode("utf-8")))
    parts = sum(PART_OVERHEAD + base64_size(size) for size in attachments)
    headers = text_size(header_texts, TEXT_FACTOR) + text_size(file_names, NAME_FACTOR)
    return HEADROOM + headers + body + parts
