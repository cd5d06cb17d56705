"""The XML responses stay well-formed whatever they echo."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest

from api.xml import render
from mailgate.errors import UnknownCommand


@pytest.mark.parametrize(
    "text",
    ["plain", "<b>&amp;</b>", "\x00\x01\x1b", "\ud800", "ü✓😀", "x" * 10_000],
    ids=["plain", "markup", "controls", "surrogate", "unicode", "long"],
)
def test_any_text_renders_well_formed(text: str) -> None:
    body = render(301, UnknownCommand(text).message, [("Reason", text)])
    root = ET.fromstring(body)
    assert root.find("Code") is not None
    assert root.findtext("Code") == "301"


def test_declaration_and_order_match_ozeki() -> None:
    assert render(200, "Command successfully executed", [("EmailId", "x")]) == (
        b'<?xml version="1.0" encoding="utf-8"?><Response><Code>200</Code>'
        b"<Message>Command successfully executed</Message><EmailId>x</EmailId></Response>"
    )
