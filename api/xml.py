"""Ozeki-style XML responses: HTTP 200 always, the outcome in ``<Code>``.

Every text is cleaned of characters XML 1.0 cannot carry, so the body is well-formed whatever
the request held.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeAlias
from xml.etree import ElementTree as ET

from flask import Response

from mailgate.errors import ApiError, ParseError

SUCCESS_MESSAGE = "Command successfully executed"
_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'
_DECLARATION_TEXT = _DECLARATION.decode()
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_ECHO = 200

Field: TypeAlias = tuple[str, "str | list[Field]"]
"""An element: a name and either its text or its child elements."""


def clean(text: str) -> str:
    """Text safe to put in an XML element: invalid characters replaced, length bounded."""
    text = _NOT_XML.sub("\ufffd", text)
    return text if len(text) <= _MAX_ECHO * 5 else text[: _MAX_ECHO * 5] + "…"


def echo(text: str) -> str:
    """A caller's value shown back in a message: cleaned and shortened."""
    text = clean(text)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "…"


def render(code: int, message: str, fields: Iterable[Field] = ()) -> bytes:
    """The XML document for one response, byte for byte what ElementTree writes
    (:func:`render_etree`), built as text: about 4 x cheaper on every request."""
    parts = [_DECLARATION_TEXT, "<Response>"]
    _write(parts, [("Code", str(code)), ("Message", message), *fields])
    parts.append("</Response>")
    return "".join(parts).encode("utf-8")


def _write(parts: list[str], fields: Iterable[Field]) -> None:
    # Element names are this module's callers' constants; only texts need escaping, and
    # ElementTree escapes exactly &, < and > in text (not quotes, not CR).
    for name, value in fields:
        if isinstance(value, str):
            text = clean(value)
            if not text:
                parts.append(f"<{name} />")
                continue
            if "&" in text or "<" in text or ">" in text:
                text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            parts.append(f"<{name}>{text}</{name}>")
        elif value:
            parts.append(f"<{name}>")
            _write(parts, value)
            parts.append(f"</{name}>")
        else:
            parts.append(f"<{name} />")


def render_etree(code: int, message: str, fields: Iterable[Field] = ()) -> bytes:
    """The same document through ElementTree: the reference :func:`render` is tested against."""
    root = ET.Element("Response")
    _add(root, [("Code", str(code)), ("Message", message), *fields])
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8")


def _add(parent: ET.Element, fields: Iterable[Field]) -> None:
    for name, value in fields:
        element = ET.SubElement(parent, name)
        if isinstance(value, str):
            element.text = clean(value)
        else:
            _add(element, value)


def xml_response(code: int, message: str, fields: Iterable[Field] = ()) -> Response:
    """An HTTP 200 response carrying the XML document."""
    return Response(
        render(code, message, fields), 200, content_type="application/xml; charset=utf-8"
    )


def success(fields: Iterable[Field] = ()) -> Response:
    """Code 200 with the given extra elements."""
    return xml_response(200, SUCCESS_MESSAGE, fields)


def error(exc: ApiError) -> Response:
    """The response for an API error: its code, Ozeki's text, and a Reason when there is one."""
    fields: list[Field] = [("Reason", exc.reason)] if exc.reason else []
    return xml_response(exc.code, exc.message, fields)


def unknown_path(path: str) -> Response:
    """A path no route takes, answered in the Ozeki style (HTTP 404, Code 300, the path named)."""
    exc = ParseError("no such path")
    fields: list[Field] = [("Reason", f"no such path: {echo(path)}; use /api or /")]
    return Response(
        render(exc.code, exc.message, fields), 404, content_type="application/xml; charset=utf-8"
    )
