"""What a header field can carry exactly: the checks the API and the message builder share.

Python's ``email`` package decodes RFC 2047 encoded words (``=?utf-8?q?...?=``) in the text it
is given and folds the result back, so ``=0D=0A`` inside one would become a real line break.
Every client-supplied header text is therefore read the way the package reads it, refused if
that reading holds a control character (see :mod:`mailgate.text`), and refused unless it
survives a round trip through the package unchanged (an encoded word nested in another one
does not). The worker checks the message it generated once more before sending it.
"""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes, message_from_string
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import SMTP, SMTPUTF8, EmailPolicy, default
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from mailgate.text import codepoint, control_reason, first_control, format_reason

_POLICIES = (SMTP, SMTPUTF8)
"""The two ways the worker serializes a message (SMTPUTF8 for non-ASCII addresses)."""


class NotCarried(ValueError):
    """Text a header cannot carry exactly; the message says why."""


@lru_cache(maxsize=1024)  # an IVR sends a few subjects all day; the check is a round trip
def subject_text(raw: str) -> str:
    """The subject a reader will see for ``raw``: encoded words decoded, outer spaces dropped."""
    decoded = _decoded(raw).strip()
    # The text reaches the package again in the worker: it must read the same then.
    for policy in _POLICIES:
        back = _round_trip(policy, lambda message: message.__setitem__("Subject", decoded))
        if back.keys() != ["Subject"] or str(back["Subject"]) != decoded:
            raise NotCarried("holds an encoded word that would not reach the reader as given")
    return decoded


def check_filename(name: str) -> None:
    """Refuse an attachment file name that would not reach the reader exactly as it is, or
    that would show other than it is (a format character)."""
    _shown_as_is(_decoded(name))
    for policy in _POLICIES:
        back = _round_trip(
            policy,
            lambda message: message.set_content(
                b"", maintype="application", subtype="octet-stream", filename=name
            ),
        )
        if back.get_filename() != name or len(back.get_all("Content-Disposition", ())) != 1:
            raise NotCarried("the file name would not reach the reader as it is")


def check_address(address: str, display_name: str = "") -> None:
    """Refuse an address (as sent), with its display name, that a From/To header would not
    carry exactly as it is."""
    _decoded(address)
    if display_name:
        _shown_as_is(_decoded(display_name))
    ascii_only = address.isascii()
    policies = _POLICIES if ascii_only else (SMTPUTF8,)
    for policy in policies:
        try:
            back = _round_trip(policy, _filler("To", header_address(display_name, address)))
            found = [(a.display_name, a.addr_spec) for a in back["To"].addresses]
        except (ValueError, IndexError, TypeError, AttributeError) as exc:
            raise NotCarried(f"not an address a header can carry: {exc}") from None
        if back.keys() != ["To"] or found != [(display_name, address)]:
            raise NotCarried("holds an encoded word or quoting a header would not carry as is")


def _filler(name: str, value: Address) -> Callable[[EmailMessage], None]:
    return lambda message: message.__setitem__(name, value)


def header_address(display_name: str, address: str) -> Address:
    """The email package's Address for a display name and an address as sent.

    A non-ASCII local part (SMTPUTF8) is given in parts: the package will not parse one.
    """
    try:
        return Address(display_name=display_name, addr_spec=address)
    except (ValueError, IndexError, TypeError, AttributeError):
        if address.isascii():
            raise
    username, _, domain = address.rpartition("@")
    return Address(display_name=display_name, username=username, domain=domain)


def wire_address(address: str) -> str:
    """The form sent: the ASCII (A-label) domain unless the local part itself is not ASCII.

    Only a non-ASCII local part needs a relay with SMTPUTF8; ``user@bücher.de`` travels as
    ``user@xn--bcher-kva.de`` and reaches any relay.
    """
    if address.isascii():
        return address
    try:
        checked = validate_email(address, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError:
        return address
    return checked.ascii_email or address


def _shown_as_is(text: str) -> None:
    """Refuse text holding a format character (Cf): a bidi control or zero-width character
    makes a reader's program show something else than the text (``invoice\u202etxt.exe``)."""
    reason = format_reason(text)
    if reason:
        raise NotCarried(reason)


def _decoded(raw: str) -> str:
    reason = control_reason(raw)
    if reason:
        raise NotCarried(reason)
    try:
        decoded = str(SMTP.header_factory("Subject", raw))
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        raise NotCarried(f"cannot be read as a header: {exc}") from None
    bad = first_control(decoded)
    if bad is not None:
        raise NotCarried(f"an encoded word in it decodes to control character {codepoint(bad)}")
    return decoded


def _round_trip(
    policy: EmailPolicy[EmailMessage], fill: Callable[[EmailMessage], None]
) -> EmailMessage:
    """A one-field message as the worker would write it, read back as a receiver would."""
    message = EmailMessage(policy=SMTP)
    fill(message)
    data = message.as_bytes(policy=policy)
    # Receivers read UTF-8 headers (SMTPUTF8) as text, or as bytes (Python's own parser, and
    # the SMTP servers built on it, decode encoded words found in raw 8-bit text): both
    # readings must agree, or one of them sees something else than was meant.
    back = message_from_string(data.decode(), policy=default)
    as_bytes = message_from_bytes(data, policy=default)
    if _seen(back) != _seen(as_bytes):
        raise NotCarried("would read differently as bytes and as text (an encoded word in it)")
    assert isinstance(back, EmailMessage)  # policy=default makes EmailMessage objects
    return back


def _seen(message: Message) -> list[tuple[str, str, str | None]]:
    return [(name, str(value), part.get_filename()) for part in message.walk()
            for name, value in part.items()]  # fmt: skip
