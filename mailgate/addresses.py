"""Addresses as callers write them: lists, display names, and the bare address in each.

A job keeps every address in its header form, ``Jane Doe <jane@x.com>`` or just
``jane@x.com`` (older records hold only the latter). The header shows the display name; the
SMTP envelope and the sender ACL use the bare address, :func:`bare`.
"""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.policy import SMTP

import email_validator

from mailgate.headers import wire_address

# Internal mail domains (corp.local, host.home.arpa, localhost, x.test) are the relay's to
# judge, not ours: email-validator reads this list at each call (its documented switch).
# .invalid and .onion stay refused: no relay delivers there.
for _allowed in ("local", "arpa", "localhost", "test"):
    if _allowed in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        email_validator.SPECIAL_USE_DOMAIN_NAMES.remove(_allowed)

_SEPARATORS = ",;"
_ATOM = r'[^\x00-\x20\x7f()<>@,:;.\\"\[\]]+'
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED = r'[^ "\\\x00-\x1f\x7f](?:[^"\\\x00-\x1f\x7f]|\\["\\])*'
_WRITTEN = re.compile(
    rf'(?:(?P<plain>{_ATOM}(?: {_ATOM})*)|"(?P<quoted>{_QUOTED})") '
    rf"<(?P<address>{_DOT_ATOM}@{_DOT_ATOM})>"
)
"""``Name <address>`` as :func:`mailbox` writes it for a display name of single-spaced words, or
one quoted without outer spaces: read without the email package's parser (tests check that
both read it the same)."""
_QUOTED_PAIR = re.compile(r"\\(.)")


def split_list(raw: str) -> list[str]:
    """Split an address list on ``,`` or ``;`` outside quotes, comments and angle brackets.

    ``"Doe, Jane" <jane@x.com>; ops@pbx`` is two addresses, not three.
    """
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = {"<": 0, "(": 0}
    for char in raw:
        current.append(char)
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth["("]):
            escaped = True
        elif char == '"' and not depth["("]:
            quoted = not quoted
        elif quoted:
            continue
        elif char in "<(":
            depth[char] += 1
        elif char in ">)":
            opener = "<" if char == ">" else "("
            depth[opener] = max(0, depth[opener] - 1)
        elif char in _SEPARATORS and not any(depth.values()):
            current.pop()
            parts.append("".join(current))
            current = []
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def has_display_name(part: str) -> bool:
    """True for the ``Name <address>`` form (a bare address never ends in ``>``)."""
    return part.rstrip().endswith(">")


def parse_mailbox(part: str) -> tuple[str, str]:
    """(display name, address) of one ``Name <address>``, read as the email package reads it.

    Encoded words in the name are decoded, as a reader's program would; ValueError when the
    text is not exactly one mailbox.
    """
    try:
        header = SMTP.header_factory("To", part)
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        # The package's parser fails on some inputs with errors of its own (AttributeError).
        raise ValueError(f"cannot be read as an address: {type(exc).__name__}") from None
    addresses = header.addresses
    groups = header.groups
    if len(addresses) != 1 or len(groups) != 1 or groups[0].display_name is not None:
        raise ValueError("not exactly one address")
    if header.defects:
        raise ValueError(str(header.defects[0]))
    found: Address = addresses[0]
    if not found.addr_spec or "@" not in found.addr_spec:
        raise ValueError("no address inside the angle brackets")
    return found.display_name, found.addr_spec


def mailbox(display_name: str, address: str) -> str:
    """The header form kept in a job: the bare address, or ``Name <address>`` quoted as needed."""
    if not display_name:
        return address
    return str(Address(display_name=display_name, addr_spec=address))


def split(text: str) -> tuple[str, str]:
    """(display name, bare address) of a form :func:`mailbox` wrote (or a bare address)."""
    if not has_display_name(text):
        return "", text
    written = _WRITTEN.fullmatch(text)
    if written is None or "=?" in text or (written["quoted"] or "").endswith(" "):
        return parse_mailbox(text)  # encoded words, runs of spaces, comments: as readers parse
    name = written["plain"] or _QUOTED_PAIR.sub(r"\1", written["quoted"])
    return name, written["address"]


def bare(text: str) -> str:
    """The address alone: what the envelope and the sender ACL use."""
    return split(text)[1]


def envelope_key(text: str) -> str:
    """What makes two addresses one recipient: the address as sent, case-insensitively. One
    RCPT TO per key, and one count toward the recipient limit."""
    return wire_address(bare(text)).lower()
