"""Header fields: what a caller's text may be, and the one encoder that writes every field sent.

Reading (the API, and the worker again): Python's ``email`` package, like many readers, decodes
RFC 2047 encoded words (``=?utf-8?q?...?=``) wherever it finds them, so ``=0D=0A`` inside one
is a line break to such a reader. A caller's subject is decoded at acceptance (the decoded text
is what is kept and sent); any text is refused if it or its decoded form holds a control
character (see :mod:`mailgate.text`), or if the decoded form still holds an encoded word (a
reader could decode it once more). Addresses and file names may hold no encoded word at all.

Writing (the worker): :func:`unstructured`, :func:`mailboxes` and :func:`attachment_fields`
write header fields that can only be lines of printable ASCII (raw UTF-8 only in an address
that needs SMTPUTF8), folded before a space per RFC 5322, and at most 76 characters long
except where one token cannot be split (an address, a long display name: never over 998).
Anything else travels as RFC 2047 encoded words (UTF-8), and a non-ASCII file name also as an
RFC 2231 parameter. Each reads back exactly as given: tests/test_message.py checks the written
bytes with the ``email`` package. The API runs the same encoder on what it accepts, so the
worker can write whatever the API accepted.

One reader quirk shapes display names: Python's ``email`` package keeps the space between two
encoded words in a display name, where RFC 2047 (and mail clients) drop it. So a display name
never holds two adjacent encoded words: its plain ASCII words stay plain, and each run of the
other words is one encoded word (longer than RFC 2047's 75 characters if it must be; a line
of at most 998 characters, so about 240 CJK characters at most).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from email.policy import SMTP
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from mailgate.text import codepoint, control_reason, first_control, format_reason


class NotCarried(ValueError):
    """Text a header cannot carry exactly; the message says why."""


MAX_LINE = 76
"""Every folded line, as RFC 2047 asks of lines holding encoded words (RFC 5322 asks 78)."""
HARD_LINE = 998
"""RFC 5322's limit for any line: one token that cannot be folded may go up to it."""

_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bBqQ]\?.*?\?=", re.DOTALL)
"""Anything a lenient reader could take for an encoded word (whitespace inside included)."""
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_DOT_ATOM = rf"{_ATEXT.pattern}(?:\.{_ATEXT.pattern})*"
_ADDR_SPEC = re.compile(f"{_DOT_ATOM}@{_DOT_ATOM}")
_UTF8_ATEXT = r"[^\x00-\x20\x7f-\x9f\"(),.:;<>@\[\\\]\s]+"
_UTF8_DOT_ATOM = rf"{_UTF8_ATEXT}(?:\.{_UTF8_ATEXT})*"
_UTF8_ADDR_SPEC = re.compile(f"{_UTF8_DOT_ATOM}@{_UTF8_DOT_ATOM}")
"""An address with a non-ASCII local part (SMTPUTF8): written as UTF-8, as it is."""
_PRINTABLE = re.compile(r"[ -~]*")
_QUOTED_SPECIALS = re.compile(r'(["\\])')
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
"""What RFC 2047 lets a Q-encoded word in a display name hold as it is (the strictest place)."""
_Q_ASCII = [chr(c) if chr(c) in _Q_SAFE else f"={c:02X}" for c in range(128)]
_Q_ASCII[ord(" ")] = "_"
_PCT_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~")
"""RFC 2231 attribute-char: what an extended parameter value holds as it is."""
_EW_OVERHEAD = len("=?utf-8?q??=")


# --- reading what callers send ------------------------------------------------------------------


@lru_cache(maxsize=1024)  # an IVR sends a few subjects all day
def subject_text(raw: str) -> str:
    """The subject a reader will see for ``raw``: encoded words decoded, outer spaces dropped."""
    decoded = _decoded(raw).strip()
    _no_encoded_word(decoded, "holds an encoded word that would not reach the reader as given")
    unstructured("Subject", decoded)  # what the worker will write
    return decoded


def check_filename(name: str) -> None:
    """Refuse an attachment file name that would not reach the reader exactly as it is, or
    that would show other than it is (a format character)."""
    _shown_as_is(_decoded(name))
    _no_encoded_word(name, "the file name holds an encoded word")
    if name != name.strip():
        # Readers (Python's get_filename among them) drop the outer spaces of a file name.
        raise NotCarried("the file name starts or ends with a space")
    attachment_fields("application/octet-stream", name)


def check_address(address: str, display_name: str = "") -> None:
    """Refuse an address (as sent), with its display name, that a From/To header would not
    carry exactly as it is."""
    _decoded(address)
    _no_encoded_word(address, "the address holds an encoded word")
    if display_name:
        _shown_as_is(_decoded(display_name))
        _no_encoded_word(display_name, "the display name holds an encoded word")
    mailboxes("To", [(display_name, address)])


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
    """``raw`` as Python's ``email`` package reads it (encoded words decoded), or NotCarried
    when either form holds a control character."""
    reason = control_reason(raw)
    if reason:
        raise NotCarried(reason)
    if "=?" not in raw:
        return raw
    try:
        decoded = str(SMTP.header_factory("Subject", raw))
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        raise NotCarried(f"cannot be read as a header: {exc}") from None
    bad = first_control(decoded)
    if bad is not None:
        raise NotCarried(f"an encoded word in it decodes to control character {codepoint(bad)}")
    return decoded


def _no_encoded_word(text: str, reason: str) -> None:
    if "=?" in text and _ENCODED_WORD.search(text):
        raise NotCarried(reason)


# --- writing ------------------------------------------------------------------------------------


def unstructured(name: str, text: str) -> str:
    """The field ``Name: text`` (lines joined by CRLF, no final CRLF) for free text (Subject).

    Printable ASCII without ``=?`` is written as it is, folded at spaces; anything else as
    encoded words, which readers join back without the spaces between them.
    """
    _refuse_controls(text)
    head = f"{name}: "
    if _PRINTABLE.fullmatch(text) and "=?" not in text and text == text.strip():
        words = _spaced_words(text)
        if len(head) + len(words[0]) <= MAX_LINE and all(len(w) < MAX_LINE for w in words):
            return _fold(head, words)
    return _fold(head, _encoded_words(text, MAX_LINE - len(head)))


def mailboxes(name: str, pairs: Sequence[tuple[str, str]]) -> str:
    """The field ``Name: mailbox, mailbox...`` for (display name, address as sent) pairs."""
    tokens: list[str] = []
    for display_name, address in pairs:
        if tokens:
            tokens[-1] += ","
        _refuse_controls(display_name)
        if not (_ADDR_SPEC if address.isascii() else _UTF8_ADDR_SPEC).fullmatch(address):
            raise NotCarried("not an address a header can carry as it is (a dot-atom@domain)")
        if display_name:
            tokens += _phrase(display_name)
            tokens.append(f"<{address}>")
        else:
            tokens.append(address)
    return _fold(f"{name}: ", tokens)


def attachment_fields(content_type: str, filename: str) -> tuple[str, str]:
    """The Content-Type and Content-Disposition fields of an attachment named ``filename``.

    A plain short name is quoted; any other has an RFC 2231 ``filename*`` (what current
    readers use) and an RFC 2047 encoded ``name`` (what older ones fall back to).
    """
    _refuse_controls(filename)
    quoted = _quoted(filename)
    if _PRINTABLE.fullmatch(filename) and "=?" not in filename and len(quoted) < MAX_LINE - 9:
        return (
            _fold("Content-Type: ", [f"{content_type};", f"name={quoted}"]),
            _fold("Content-Disposition: ", ["attachment;", f"filename={quoted}"]),
        )
    words = _encoded_words(filename, MAX_LINE - len(' name=""'), MAX_LINE - 2)
    words[0] = f'name="{words[0]}'
    words[-1] += '"'
    content = _fold("Content-Type: ", [f"{content_type};", *words])
    return content, _fold("Content-Disposition: ", ["attachment;", *_rfc2231("filename", filename)])


def _refuse_controls(text: str) -> None:
    reason = control_reason(text)
    if reason:
        raise NotCarried(reason)


def _fold(head: str, tokens: Sequence[str]) -> str:
    """``head`` and the tokens with one space between each, a line break before a space
    wherever a line would pass MAX_LINE (a longer token gets a line of its own)."""
    lines: list[str] = []
    line = head.rstrip(" ")
    for token in tokens:
        if len(line) + 1 + len(token) > MAX_LINE and line != head.rstrip(" "):
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    if any(len(line.encode()) > HARD_LINE for line in lines):
        raise NotCarried("too long to be written in a header line")
    return "\r\n".join(lines)


def _spaced_words(text: str) -> list[str]:
    """The words of ``text`` (no outer spaces) for _fold, which puts one space, or a line
    break and a space, between each two: the other spaces of a run stay with the word before
    it, so that no line is only spaces."""
    words: list[str] = []
    for word in text.split(" "):
        if words and not word:
            words[-1] += " "
        else:
            words.append(word)
    return words


def _phrase(display_name: str) -> list[str]:
    """A display name as tokens: atoms, one quoted string, or atoms and encoded words."""
    if _PRINTABLE.fullmatch(display_name) and "=?" not in display_name:
        words = display_name.split(" ")
        if all(_ATEXT.fullmatch(word) for word in words):
            return words
        return [_quoted(display_name)]
    words = display_name.split(" ")
    if not all(words):  # a run of spaces: only one encoded word keeps it exactly
        return [_single_encoded_word(display_name)]
    tokens: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if word and word.isascii() and _ATEXT.fullmatch(word) and "=?" not in word:
            if run:
                tokens.append(_single_encoded_word(" ".join(run)))
                run = []
            tokens.append(word)
        elif word:
            run.append(word)
        elif run:
            tokens.append(_single_encoded_word(" ".join(run)))
    return tokens


def _quoted(text: str) -> str:
    return '"' + _QUOTED_SPECIALS.sub(r"\\\1", text) + '"'


def _q_encoded(text: str) -> str:
    return "".join(
        _Q_ASCII[ord(char)] if char < "\x80" else _q_bytes(char.encode()) for char in text
    )


def _q_bytes(data: bytes) -> str:
    return "".join(f"={byte:02X}" for byte in data)


def _b_encoded(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _single_encoded_word(text: str) -> str:
    """``text`` as one encoded word, Q or B, whichever is shorter."""
    q = _q_encoded(text)
    b = _b_encoded(text.encode())
    return f"=?utf-8?q?{q}?=" if len(q) <= len(b) else f"=?utf-8?b?{b}?="


def _encoded_words(text: str, first: int, rest: int = MAX_LINE - 1) -> list[str]:
    """``text`` as encoded words of whole characters: the first at most ``first`` characters
    long, the others at most ``rest``; Q for mostly ASCII text, else B."""
    q_size = sum(len(_Q_ASCII[ord(c)]) if c < "\x80" else 3 * len(c.encode()) for c in text)
    use_q = q_size <= 4 * -(-len(text.encode()) // 3)
    words: list[str] = []
    limit = first - _EW_OVERHEAD
    piece: list[str] = []  # Q: the encoded characters; B: the characters
    size = 0  # Q: encoded length; B: bytes before encoding
    for char in text:
        if use_q:
            encoded = _Q_ASCII[ord(char)] if char < "\x80" else _q_bytes(char.encode())
            added = len(encoded)
            fits = size + added <= limit
        else:
            encoded, added = char, len(char.encode())
            fits = 4 * -(-(size + added) // 3) <= limit
        if piece and not fits:
            words.append(_word(piece, use_q))
            piece, size, limit = [], 0, rest - _EW_OVERHEAD
        piece.append(encoded)
        size += added
    words.append(_word(piece, use_q))
    return words


def _word(piece: list[str], use_q: bool) -> str:
    if use_q:
        return f"=?utf-8?q?{''.join(piece)}?="
    return f"=?utf-8?b?{_b_encoded(''.join(piece).encode())}?="


def _rfc2231(name: str, value: str) -> list[str]:
    """``name*=utf-8''...`` (RFC 2231, percent-encoded UTF-8), split into ``name*0*``,
    ``name*1*``... sections of whole characters where one line would not hold it."""
    characters = [
        "".join(chr(b) if b in _PCT_SAFE else f"%{b:02X}" for b in char.encode()) for char in value
    ]
    single = f"{name}*=utf-8''{''.join(characters)}"
    if len(single) + 1 < MAX_LINE:
        return [single]
    sections: list[str] = []
    section = f"{name}*0*=utf-8''"
    for encoded in characters:
        if len(section) + len(encoded) + 2 > MAX_LINE:  # the space before, the ";" after
            sections.append(section + ";")
            section = f"{name}*{len(sections)}*="
        section += encoded
    return [*sections, section]
