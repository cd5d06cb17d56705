"""One notion of "control character" for every free-text field, in the API and the worker.

A single-line field (a header, a URL, a key) may hold no character of Unicode's categories
Cc (C0 and C1 controls, TAB among them), Zl and Zp (the line and paragraph separators), and no
lone surrogate (Cs, which no UTF-8 text can hold). That covers every character
``str.splitlines`` breaks on, so no accepted text can ever start a line of its own.
"""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
"""Cc is exactly U+0000-U+001F and U+007F-U+009F; Zl is U+2028, Zp U+2029; Cs the surrogates."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """A lone surrogate: text no UTF-8 can hold (the body's only check beyond NUL)."""
    return _SURROGATE.search(text) is not None


def first_control(text: str) -> str | None:
    """The first control character in ``text``, or None."""
    found = _CONTROL.search(text)
    return found.group() if found else None


def control_reason(text: str) -> str | None:
    """``"control character U+000B"`` for text holding one, else None (for 302 reasons)."""
    found = first_control(text)
    return None if found is None else f"control character {codepoint(found)}"


def format_reason(text: str) -> str | None:
    """``"format character U+202E"`` for text holding one of Unicode's format characters (Cf:
    the bidi controls that show ``invoice\u202etxt.exe`` as ``invoiceexe.txt``, zero-width
    characters), else None. Refused where a reader must see the text as it is: file names and
    display names."""
    for char in text:
        if not char.isascii() and unicodedata.category(char) == "Cf":
            return f"format character {codepoint(char)}"
    return None


def codepoint(char: str) -> str:
    """``U+2028`` for a character: the name that shows an invisible one."""
    return f"U+{ord(char):04X}"
