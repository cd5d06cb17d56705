"""Decoding a form's text as browsers and Ozeki do: the declared charset, else UTF-8, else the
legacy charset.

A client declares its charset in the Content-Type (``charset=``) or in a ``_charset_``
parameter (what browsers fill in, and what Ozeki's HTTP APIs document); a declaration decides
for the query and the body alike. Labels are read as WHATWG reads them, so ``ISO-8859-1`` is
windows-1252. With none declared, each separately encoded part (the query string, the body) is
UTF-8 where it is valid UTF-8, else ``MAILGATE_LEGACY_CHARSET``: legacy PHP and ASP scripts and
Java's platform-charset ``URLEncoder`` send CP1252. Text that its charset cannot decode is
Code 300: never a guess, never a U+FFFD in place of what the client meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

import webencodings

from mailgate import parsers
from mailgate.errors import ParseError

CHARSET_PARAMETER = "_charset_"
Field = tuple[str | bytes, bytes, str | None]
"""A field as it arrived: its name (bytes, or the text a multipart header gave), its value's
bytes, and the charset its own part declares (a multipart part's Content-Type), if any."""


def split_urlencoded(raw: bytes, max_fields: int) -> list[Field]:
    """The fields of a query string or urlencoded body, still bytes (WHATWG's parser)."""
    pieces = [piece for piece in raw.split(b"&") if piece]
    if len(pieces) > max_fields:
        raise ParseError(f"more than {max_fields} fields")
    fields: list[Field] = []
    for piece in pieces:
        name, _, value = piece.partition(b"=")
        fields.append((_unquote(name), _unquote(value), None))
    return fields


def declared_charset(content_type: str | None, *parts: Sequence[Field]) -> str | None:
    """The charset the request declares (its canonical name), or None: the Content-Type's
    ``charset``, or the ``_charset_`` parameter; two that differ are refused. An empty one
    declares nothing (a form's hidden field that no browser filled in)."""
    found = {_name(content_type)} if content_type else set()
    for part in parts:
        for name, value, _ in part:
            if _is_declaration(name) and value.strip():
                found.add(_name(value.decode("ascii", "replace")))
    if len(found) > 1:
        raise ParseError(f"two different charsets declared: {' and '.join(sorted(found))}")
    return found.pop() if found else None


def decode(part: Sequence[Field], declared: str | None, legacy: str) -> list[tuple[str, str]]:
    """The (name, value) texts of one part; the ``_charset_`` declaration itself is dropped."""
    undeclared = [b for name, value, own in part if own is None for b in (name, value)]
    fallback = declared or ("utf-8" if all(_is_utf8(b) for b in undeclared) else legacy)
    texts = []
    for name, value, own in part:
        if _is_declaration(name):
            continue
        charset = _name(own) if own is not None else fallback
        name_text = _text(name, charset, declared, legacy)
        texts.append((name_text, _text(value, charset, declared, legacy)))
    return texts


def _unquote(raw: bytes) -> bytes:
    return unquote_to_bytes(raw.replace(b"+", b" "))


def _is_declaration(name: str | bytes) -> bool:
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return text.lower() == CHARSET_PARAMETER


def _name(label: str) -> str:
    try:
        return parsers.charset(label)
    except ValueError as exc:
        raise ParseError(f"cannot decode the request: {exc}") from None


def _is_utf8(data: bytes | str) -> bool:
    if isinstance(data, str) or data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text(data: bytes | str, charset: str, declared: str | None, legacy: str) -> str:
    if isinstance(data, str):
        return data
    try:
        if charset == "utf-8":
            return data.decode("utf-8")
        text: str = webencodings.lookup(charset).codec_info.decode(data, "strict")[0]
    except UnicodeDecodeError:
        if declared is None and charset == legacy:
            detail = f"neither UTF-8 nor {legacy} (MAILGATE_LEGACY_CHARSET): declare its charset"
        else:
            detail = f"not valid {charset}, the charset it declares"
        raise ParseError(f"the request is {detail}") from None
    return text
