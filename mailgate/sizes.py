"""The size of an e-mail as it goes on the wire, which is what a relay's limit measures.

Attachments travel in base64: four bytes for every three, plus CRLF after every 76 characters,
so a file of 25 MiB becomes about 34 MiB. The API refuses an e-mail whose estimate is over
``MAILGATE_MAX_EMAIL_BYTES``; the worker measures the real message before sending it.
"""

from __future__ import annotations

from collections.abc import Iterable

HEADROOM = 16 * 1024
"""Headers, MIME boundaries and part headers: generous for 50 recipients and 20 files."""
PART_OVERHEAD = 512
"""The headers and boundary line of one attachment part (file name included)."""


def base64_size(raw: int) -> int:
    """Bytes of ``raw`` bytes in base64 with a CRLF after every 76 characters."""
    encoded = 4 * -(-raw // 3)
    return encoded + 2 * -(-encoded // 76)


def encoded_size(message: str, attachments: Iterable[int]) -> int:
    """An upper estimate of the serialized e-mail: text body, attachments, headers."""
    # The email package sends text as 8bit, or quoted-printable or base64, whichever is
    # shorter: never more than base64 of its UTF-8 bytes.
    body = base64_size(len(message.encode("utf-8")))
    return HEADROOM + body + sum(PART_OVERHEAD + base64_size(size) for size in attachments)
