"""Multipart uploads (api/uploads.py): every file part with content is attached, or the request
is refused naming it; only a form's unused file input (no name, no bytes) is skipped. Both API
styles, the Flask app over real Redis, the spool checked on disk."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.status import StatusStore
from tests.conftest import SEED_PASSWORD, SEED_USER

BASIC = "Basic " + base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()
Part = tuple[str, str | None, bytes]
"""A form part: its field name, its file name (None: a plain field) and its bytes."""


def body_of(parts: list[Part]) -> tuple[bytes, str]:
    """A multipart/form-data body as a browser or curl writes it, and its Content-Type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, filename, data in parts:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if filename is not None:
            head += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'
        chunks.append(head.encode() + b"\r\n\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def ozeki_fields(recipient: str) -> list[Part]:
    fields = {
        "command": "SendEmail",
        "Recipient": recipient,
        "Message": "m",
        "Username": SEED_USER,
        "Password": SEED_PASSWORD,
    }
    return [(name, None, value.encode()) for name, value in fields.items()]


def rest_fields(recipient: str) -> list[Part]:
    return [("recipients", None, recipient.encode()), ("text", None, b"m")]


def spooled(settings: Settings) -> set[str]:
    folder = Path(os.path.realpath(settings.spool_dir))
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def post(client: FlaskClient, style: str, files: list[Part]) -> tuple[str, str, str]:
    """Send one e-mail with ``files``: (outcome code, what the refusal names, EmailId)."""
    recipient = f"upload-{uuid.uuid4().hex[:8]}@example.com"
    if style == "ozeki":
        data, content_type = body_of(ozeki_fields(recipient) + files)
        answer = ET.fromstring(client.post("/api", data=data, content_type=content_type).data)
        named = f"{answer.findtext('Message')} {answer.findtext('Reason')}"
        return str(answer.findtext("Code")), named, answer.findtext("EmailId") or ""
    data, content_type = body_of(rest_fields(recipient) + files)
    headers = {"Authorization": BASIC}
    response = client.post("/api/v1/emails", data=data, content_type=content_type, headers=headers)
    body = response.get_json()
    if response.status_code == 202:
        return "200", "", body["id"]
    error = body["error"]
    return str(response.status_code), f"{error['field']} {error['message']}", ""


def attached(settings: Settings, email_id: str) -> list[tuple[str, int]]:
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    record = store.get(email_id)
    assert record is not None and record.job is not None
    return [(a.filename, a.size) for a in record.job.attachments]


STYLES = pytest.mark.parametrize("style", ["ozeki", "rest"])


@STYLES
@pytest.mark.parametrize("size", [1, 24, 70_000], ids=["1-byte", "24-bytes", "70-kB"])
def test_a_file_part_with_content_but_no_file_name_is_refused_naming_it(
    client: FlaskClient, settings: Settings, style: str, size: int
) -> None:
    before = spooled(settings)
    code, named, email_id = post(client, style, [("voicemail", "", os.urandom(size))])
    assert (code, email_id) == ("302" if style == "ozeki" else "400", "")
    assert ("Attachments" if style == "ozeki" else "attachments") in named
    assert "'voicemail'" in named and f"{size} bytes" in named
    assert spooled(settings) == before


@STYLES
def test_a_form_s_unused_file_input_is_skipped(
    client: FlaskClient, settings: Settings, style: str
) -> None:
    code, _, email_id = post(client, style, [("upload", "", b"")])
    assert code == "200"
    assert attached(settings, email_id) == []


@STYLES
def test_an_empty_file_with_a_name_is_attached(
    client: FlaskClient, settings: Settings, style: str
) -> None:
    code, _, email_id = post(client, style, [("upload", "empty.txt", b"")])
    assert code == "200"
    assert attached(settings, email_id) == [("empty.txt", 0)]


@STYLES
def test_every_part_of_a_repeated_file_field_is_attached(
    client: FlaskClient, settings: Settings, style: str
) -> None:
    files: list[Part] = [
        ("file", "a.txt", b"first"),
        ("file", "b.txt", b"second!"),
        ("other", "c.txt", b"3"),
    ]
    code, _, email_id = post(client, style, files)
    assert code == "200"
    assert attached(settings, email_id) == [("a.txt", 5), ("b.txt", 7), ("c.txt", 1)]
