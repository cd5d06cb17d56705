"""Log helpers every process shares: secrets masked, query strings dropped, no forged lines."""

from __future__ import annotations

import pytest

from mailgate.logs import escape_controls, redact


@pytest.mark.parametrize(
    "text",
    ["Password=hunter2", "PASSWORD: hunter2", "Pass%77ord=hunter2", "%50assword%3Dhunter2",
     "p%41ssword='hunter2'"],
    ids=["plain", "colon", "encoded-letter", "encoded-first-and-equals", "quoted"],
)  # fmt: skip
def test_password_is_masked_in_any_spelling(text: str) -> None:
    assert "hunter2" not in redact(f"GET /api?x=1&{text}&y=2")


@pytest.mark.parametrize(
    "char", ["\n", "\r", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
)
def test_control_characters_are_escaped(char: str) -> None:
    escaped = escape_controls(f"a{char}FORGED")
    assert escaped.isprintable() and escaped.endswith("FORGED") and len(escaped) > 7
