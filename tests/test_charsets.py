"""Decoding a form's text (api.charsets) as plain functions: the end-to-end cases, with the
delivered text, are in tests/system/test_real_clients.py."""

from __future__ import annotations

import pytest

from api.charsets import Field, declared_charset, decode, split_urlencoded
from mailgate.errors import ParseError

LEGACY = "windows-1252"


def fields(raw: bytes) -> list[Field]:
    return split_urlencoded(raw, 100)


def test_split_keeps_bytes_and_reads_plus_as_space() -> None:
    assert fields(b"a=%E9+t&&b&c=x%3Dy=z") == [
        (b"a", b"\xe9 t", None),
        (b"b", b"", None),
        (b"c", b"x=y=z", None),
    ]


def test_too_many_fields_is_300() -> None:
    with pytest.raises(ParseError, match="more than 2 fields"):
        split_urlencoded(b"a=1&b=2&c=3", 2)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"m=%E2%82%AC", "€"),  # valid UTF-8: UTF-8
        (b"m=%80", "€"),  # not UTF-8: windows-1252
        (b"m=%E2%82%AC&n=%80", "\u00e2\u201a\u00ac"),  # one is not UTF-8: all legacy
    ],
    ids=["utf-8", "legacy", "one-part-one-charset"],
)
def test_undeclared_text_is_utf8_else_legacy(raw: bytes, expected: str) -> None:
    assert decode(fields(raw), None, LEGACY)[0] == ("m", expected)


def test_a_declaration_anywhere_decides_every_part_and_is_dropped() -> None:
    query, body = fields(b"s=%C3%A9"), fields(b"_CHARSET_=ISO-8859-1&m=%C3%A9")
    declared = declared_charset(None, query, body)
    assert declared == "windows-1252"  # as WHATWG reads the label
    assert decode(query, declared, LEGACY) + decode(body, declared, LEGACY) == [
        ("s", "Ã©"),
        ("m", "Ã©"),
    ]


def test_an_empty_declaration_declares_nothing() -> None:
    assert declared_charset("", fields(b"_charset_=&m=%80")) is None
    assert decode(fields(b"_charset_=&m=%80"), None, LEGACY) == [("m", "€")]


def test_a_multipart_part_s_own_charset_comes_first() -> None:
    part: list[Field] = [("a", b"\xe9", "iso-8859-2"), ("b", b"\xe9", None)]
    assert decode(part, "koi8-r", LEGACY) == [("a", "é"), ("b", "И")]


@pytest.mark.parametrize(
    ("content_type", "raw", "reason"),
    [
        ("utf-8", b"_charset_=koi8-r", "two different charsets"),
        (None, b"_charset_=ebcdic-nonsense", "unknown charset"),
        (None, b"_charset_=utf-16le", "not ASCII-compatible"),
    ],
)
def test_a_declaration_that_cannot_be_used_is_300(
    content_type: str | None, raw: bytes, reason: str
) -> None:
    with pytest.raises(ParseError, match=reason):
        declared_charset(content_type, fields(raw))


def test_text_its_charset_cannot_decode_is_300() -> None:
    with pytest.raises(ParseError, match="not valid utf-8, the charset it declares"):
        decode(fields(b"m=%E9"), "utf-8", LEGACY)
    with pytest.raises(ParseError, match="neither UTF-8 nor windows-1252"):
        decode(fields(b"m=%81"), None, LEGACY)
