"""Real clients end to end (issue 11): the root path, uploads, scheduled send and cancel, $PORT.

Each test goes over real HTTP to the API (`mailgate web`), through Redis and a Celery worker
process, to the
aiosmtpd server, and checks the message and its SMTP envelope there.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from xml.etree import ElementTree as ET

import pytest

from mailgate.broker import make_celery, publish
from mailgate.config import Settings
from tests.conftest import OTHER_PASSWORD, OTHER_USER, SEED_PASSWORD, SEED_USER
from tests.support import VENV_BIN, Received, Service, SmtpServer, answers, free_port, wait_for

pytestmark = pytest.mark.usefixtures("worker")
CREDS = {"Username": SEED_USER, "Password": SEED_PASSWORD}
BASIC = "Basic " + base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()
UPLOAD_LIMIT = 300_000
"""MAILGATE_MAX_ATTACHMENT_BYTES of the session (conftest.py)."""
ROOT = Path(__file__).resolve().parents[2]
File = tuple[str, bytes, str]
"""An uploaded file: its name, content and declared type ("" for none)."""


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, File]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, built as curl -F does."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, (filename, data, content_type) in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\n'
        )
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        chunks.append(head.encode() + b"\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def call(
    url: str,
    data: bytes | None = None,
    content_type: str = "",
    method: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    """One HTTP request: status, Content-Type and body (error statuses included)."""
    request = urllib.request.Request(url, data, dict(headers or {}), method=method or None)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def xml(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    assert root.tag == "Response"
    return {child.tag: child.text or "" for child in root}


def ozeki(base: str, **params: str) -> dict[str, str]:
    status, content_type, body = call(f"{base}?{urllib.parse.urlencode({**CREDS, **params})}")
    assert (status, content_type) == (200, "application/xml; charset=utf-8")
    return xml(body)


def status_of(api_url: str, email_id: str) -> dict[str, str]:
    return ozeki(f"{api_url}/api", command="GetEmailStatus", EmailId=email_id)


def sent(api_url: str, smtp_server: SmtpServer, email_id: str, timeout: float = 30) -> Received:
    """The delivered message, once the status record says Sent."""
    wait_for(lambda: status_of(api_url, email_id)["Status"] == "Sent", timeout, f"{email_id} Sent")
    found = smtp_server.handler.find(email_id)
    assert found is not None
    return found


def spooled(settings: Settings) -> set[str]:
    folder = Path(os.path.realpath(settings.spool_dir))
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


# 1. The root path ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_root_path_is_the_ozeki_endpoint(
    api_url: str, smtp_server: SmtpServer, method: str
) -> None:
    params = {
        "command": "SendEmail",
        "Sender": "ivr@domain.com",
        "Subject": f"root {method}",
        "Recipient": f"root-{method.lower()}@example.com",
        "Message": "from /",
        **CREDS,
    }
    query = urllib.parse.urlencode(params)
    if method == "GET":
        status, content_type, body = call(f"{api_url}/?{query}")
    else:
        form = "application/x-www-form-urlencoded"
        status, content_type, body = call(f"{api_url}/", query.encode(), form)
    assert (status, content_type) == (200, "application/xml; charset=utf-8")
    answer = xml(body)
    assert answer["Code"] == "200", answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert received.mail_from == "ivr@domain.com"
    assert received.rcpt_tos == [f"root-{method.lower()}@example.com"]
    assert received.message["Subject"] == f"root {method}"
    # GetEmailStatus over the root path too.
    assert (
        ozeki(f"{api_url}/", command="GetEmailStatus", EmailId=answer["EmailId"])["Status"]
        == "Sent"
    )


@pytest.mark.parametrize(
    ("path", "style"),
    [("/nope", "xml"), ("/api/v2/emails", "xml"), ("/favicon.ico", "xml"),
     ("/api/v1/nope", "json"), ("/api/v1/emails/x/y", "json")],
    ids=["ozeki-side", "api-v2", "favicon", "rest-side", "rest-deep"],
)  # fmt: skip
def test_an_unknown_path_answers_in_the_style_of_its_api(
    api_url: str, path: str, style: str
) -> None:
    status, content_type, body = call(api_url + path)
    assert status == 404
    if style == "xml":
        assert content_type == "application/xml; charset=utf-8"
        answer = xml(body)
        assert answer["Code"] == "300"
        assert path in answer["Reason"]
    else:
        assert content_type == "application/json"
        assert json.loads(body)["error"]["code"] == "not_found"


# 5. Uploads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api", "/"], ids=["api", "root"])
def test_a_multipart_post_attaches_each_file_part(
    api_url: str, smtp_server: SmtpServer, settings: Settings, attachment_root: Path, path: str
) -> None:
    recording = os.urandom(40_000)
    on_disk = attachment_root / f"notes-{path.strip('/') or 'root'}.txt"
    on_disk.write_text("from the shared disk\n")
    fields = [
        ("command", "SendEmail"),
        ("Recipient", f"upload-{len(path)}@example.com"),
        ("Message", "Voicemail attached"),
        ("Subject", "Voicemail"),
        ("Attachments", str(on_disk)),
        *CREDS.items(),
    ]
    files = [
        ("file1", ("vm-0001.wav", recording, "audio/x-wav")),
        ("file2", ("Zählerstand.csv", b"a;b\n1;2\n", "")),
    ]
    body, content_type = multipart(fields, files)
    status, _, answer = call(api_url + path, body, content_type)
    result = xml(answer)
    assert (status, result["Code"]) == (200, "200"), result
    received = sent(api_url, smtp_server, result["EmailId"])
    assert received.rcpt_tos == [f"upload-{len(path)}@example.com"]
    assert received.mail_from == settings.default_sender
    parts = {p.get_filename(): p for p in received.message.iter_attachments()}
    assert list(parts) == [on_disk.name, "vm-0001.wav", "Zählerstand.csv"]
    assert parts["vm-0001.wav"].get_content_type() == "audio/x-wav"  # the part's own type
    assert parts["vm-0001.wav"].get_content() == recording
    assert parts["Zählerstand.csv"].get_content_type() == "text/csv"  # guessed from the name
    assert parts["Zählerstand.csv"].get_content() == "a;b\n1;2\n"
    # Sent: the spooled copies are gone.
    wait_for(lambda: not spooled(settings), 10, "the spool to be emptied")


@pytest.mark.parametrize(
    ("fields", "files", "code"),
    [
        ([("Recipient", "not an address")], [("f", ("a.txt", b"x", ""))], "302"),
        ([("Recipient", "x@example.com"), ("Password", "wrong")], [("f", ("a.txt", b"x", ""))],
         "305"),
        ([("Recipient", "x@example.com")], [("f", ("big.bin", b"x" * UPLOAD_LIMIT, "")),
                                            ("g", ("one-more.bin", b"x", ""))], "302"),
        ([("Recipient", "x@example.com")], [("f", ("bad\x01name.txt", b"x", ""))], "302"),
        ([("Recipient", "x@example.com"), ("SendAt", "yesterday")], [("f", ("a.txt", b"x", ""))],
         "302"),
    ],
    ids=["bad-recipient", "bad-password", "over-the-size-limit", "control-in-name", "bad-sendat"],
)  # fmt: skip
def test_a_refused_upload_leaves_nothing_spooled(
    api_url: str,
    smtp_server: SmtpServer,
    settings: Settings,
    fields: list[tuple[str, str]],
    files: list[tuple[str, File]],
    code: str,
) -> None:
    before = len(smtp_server.handler.received)
    names = {name for name, _ in fields}
    creds = [(k, v) for k, v in CREDS.items() if k not in names]
    body, content_type = multipart(
        [("command", "SendEmail"), ("Message", "m"), *creds, *fields], files
    )
    answer = xml(call(f"{api_url}/api", body, content_type)[2])
    assert answer["Code"] == code, answer
    assert not spooled(settings)
    assert len(smtp_server.handler.received) == before


def test_rest_uploads_multipart_and_base64(
    api_url: str, smtp_server: SmtpServer, settings: Settings
) -> None:
    # multipart/form-data: JSON field names as form fields, file parts as attachments.
    body, content_type = multipart(
        [
            ("recipients", "rest-a@example.com"),
            ("recipients", "rest-b@example.com"),
            ("text", "two files"),
            ("subject", "REST upload"),
        ],
        [("attachment", ("report.pdf", b"%PDF-1.4 fake", "application/pdf"))],
    )
    status, _, raw = call(
        f"{api_url}/api/v1/emails", body, content_type, headers={"Authorization": BASIC}
    )
    assert status == 202, raw
    first = json.loads(raw)["id"]
    # JSON with a base64 content object.
    payload = {
        "recipients": ["rest-c@example.com"],
        "text": "inline",
        "attachments": [
            {
                "filename": "hello.txt",
                "content": base64.b64encode(b"hi there").decode(),
                "content_type": "text/plain",
            }
        ],
    }
    status, _, raw = call(
        f"{api_url}/api/v1/emails",
        json.dumps(payload).encode(),
        "application/json",
        headers={"Authorization": BASIC},
    )
    assert status == 202, raw
    second = json.loads(raw)["id"]

    one = sent(api_url, smtp_server, first)
    assert sorted(one.rcpt_tos) == ["rest-a@example.com", "rest-b@example.com"]
    [pdf] = one.message.iter_attachments()
    assert (pdf.get_filename(), pdf.get_content_type()) == ("report.pdf", "application/pdf")
    assert pdf.get_content() == b"%PDF-1.4 fake"
    two = sent(api_url, smtp_server, second)
    assert two.rcpt_tos == ["rest-c@example.com"]
    [text] = two.message.iter_attachments()
    assert (text.get_filename(), text.get_content()) == ("hello.txt", "hi there")
    wait_for(lambda: not spooled(settings), 10, "the spool to be emptied")


@pytest.mark.parametrize(
    "attachment",
    [
        {"filename": "a.txt", "content": "not base64!"},
        {"content": "aGk="},
        {"filename": "a.txt", "content": "aGk=", "extra": 1},
    ],
    ids=["bad-base64", "no-filename", "unknown-key"],
)
def test_rest_bad_inline_attachment_is_400_naming_attachments(
    api_url: str, settings: Settings, attachment: dict[str, Any]
) -> None:
    payload = {"recipients": ["x@example.com"], "text": "t", "attachments": [attachment]}
    status, _, raw = call(
        f"{api_url}/api/v1/emails",
        json.dumps(payload).encode(),
        "application/json",
        headers={"Authorization": BASIC},
    )
    assert status == 400
    assert json.loads(raw)["error"]["field"] == "attachments"
    assert not spooled(settings)


# 7. Scheduled send and cancel -------------------------------------------------------------------


def test_send_at_keeps_the_email_scheduled_until_then(
    api_url: str, smtp_server: SmtpServer
) -> None:
    when = datetime.fromtimestamp(time.time() + 3, UTC)
    answer = ozeki(
        f"{api_url}/api",
        command="SendEmail",
        Recipient="later@example.com",
        Message="on time",
        SendAt=when.isoformat(),
    )
    assert answer["Code"] == "200", answer
    email_id = answer["EmailId"]
    scheduled = status_of(api_url, email_id)
    assert scheduled["Status"] == "Scheduled"
    assert scheduled["NextAttemptAt"].startswith(when.strftime("%Y-%m-%dT%H:%M:%S"))
    received = sent(api_url, smtp_server, email_id)
    assert time.time() >= when.timestamp()
    assert received.rcpt_tos == ["later@example.com"]
    assert received.message.get_content().strip() == "on time"


def test_rest_send_at_in_seconds_then_delivered(api_url: str, smtp_server: SmtpServer) -> None:
    payload = {"recipients": ["rest-later@example.com"], "text": "soon", "send_at": 2}
    started = time.time()
    status, _, raw = call(
        f"{api_url}/api/v1/emails",
        json.dumps(payload).encode(),
        "application/json",
        headers={"Authorization": BASIC},
    )
    assert status == 202, raw
    body = json.loads(raw)
    assert body["status"] == "Scheduled"
    received = sent(api_url, smtp_server, body["id"])
    assert time.time() - started >= 2
    assert received.rcpt_tos == ["rest-later@example.com"]


@pytest.mark.parametrize(
    "send_at",
    ["2001-01-01T00:00:00+00:00", "2030-01-01T10:00:00", "tomorrow", "99999999999", "-5"],
    ids=["past", "no-offset", "words", "beyond-the-record-lifetime", "negative"],
)
def test_a_bad_send_at_is_302_naming_it(api_url: str, send_at: str) -> None:
    answer = ozeki(
        f"{api_url}/api",
        command="SendEmail",
        Recipient="x@example.com",
        Message="m",
        SendAt=send_at,
    )
    assert answer["Code"] == "302"
    assert "'SendAt'" in answer["Message"]


def test_a_cancelled_email_is_never_sent(
    api_url: str, smtp_server: SmtpServer, settings: Settings, env: dict[str, str]
) -> None:
    def schedule(recipient: str, send_at: str = "2") -> str:
        answer = ozeki(
            f"{api_url}/api", command="SendEmail", Recipient=recipient, Message="m", SendAt=send_at
        )
        assert answer["Code"] == "200", answer
        return answer["EmailId"]

    body, content_type = multipart(
        [
            ("command", "SendEmail"),
            ("Recipient", "cancelled@example.com"),
            ("Message", "no"),
            ("SendAt", "2"),
            *CREDS.items(),
        ],
        [("f", ("gone.txt", b"never sent", ""))],
    )
    doomed = xml(call(f"{api_url}/api", body, content_type)[2])["EmailId"]
    assert spooled(settings)
    kept = schedule("kept@example.com")

    # Only the owner may cancel: anyone else gets 404 and changes nothing.
    other = {"Username": OTHER_USER, "Password": OTHER_PASSWORD}
    query = urllib.parse.urlencode({"command": "CancelEmail", "EmailId": doomed, **other})
    assert xml(call(f"{api_url}/api?{query}")[2])["Code"] == "404"
    answer = ozeki(f"{api_url}/api", command="CancelEmail", EmailId=doomed)
    assert (answer["Code"], answer["Status"]) == ("200", "Cancelled")
    assert not spooled(settings)  # its upload went with it
    # A task already on the broker for it does nothing either.
    publish(make_celery(settings), doomed)

    sent(api_url, smtp_server, kept)
    late = schedule("after-cancel@example.com", "0")
    sent(api_url, smtp_server, late)
    assert smtp_server.handler.find(doomed) is None
    record = status_of(api_url, doomed)
    assert (record["Status"], record["Attempts"]) == ("Cancelled", "0")
    # Cancelling again is a no-op; a Sent e-mail can no longer be cancelled.
    assert ozeki(f"{api_url}/api", command="CancelEmail", EmailId=doomed)["Code"] == "200"
    answer = ozeki(f"{api_url}/api", command="CancelEmail", EmailId=kept)
    assert answer["Code"] == "302"
    assert "'EmailId'" in answer["Message"] and "Sent" in answer["Reason"]


def test_rest_delete_cancels(api_url: str, smtp_server: SmtpServer) -> None:
    auth = {"Authorization": BASIC}
    payload = json.dumps(
        {"recipients": ["rest-cancel@example.com"], "text": "no", "send_at": 2}
    ).encode()
    status, _, raw = call(f"{api_url}/api/v1/emails", payload, "application/json", headers=auth)
    email_id = json.loads(raw)["id"]
    status, _, raw = call(f"{api_url}/api/v1/emails/{email_id}", method="DELETE", headers=auth)
    assert (status, json.loads(raw)["status"]) == (200, "Cancelled")
    payload = json.dumps(
        {"recipients": ["rest-after@example.com"], "text": "yes", "send_at": 3}
    ).encode()
    status, _, raw = call(f"{api_url}/api/v1/emails", payload, "application/json", headers=auth)
    later = json.loads(raw)["id"]
    sent(api_url, smtp_server, later)
    # Sent: no longer cancellable (409); anyone's unknown id: 404.
    status, _, raw = call(f"{api_url}/api/v1/emails/{later}", method="DELETE", headers=auth)
    assert (status, json.loads(raw)["error"]["code"]) == (409, "not_cancellable")
    status, _, _ = call(f"{api_url}/api/v1/emails/{uuid.uuid4()}", method="DELETE", headers=auth)
    assert status == 404
    assert smtp_server.handler.find(email_id) is None  # its time came before the later one's


# 8. $PORT ------------------------------------------------------------------------------------


def test_the_procfile_web_process_binds_port(
    env: dict[str, str], workdir: Path, smtp_server: SmtpServer, users: object
) -> None:
    [web] = [
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    ]
    port = free_port()
    platform = {**env, "PORT": str(port), "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"}
    service = Service(
        "procfile-web",
        ["sh", "-c", web.removeprefix("web:").strip()],
        platform,
        workdir / "procfile-web.log",
        cwd=ROOT,
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{url}/healthz"), 30, "the web process on $PORT")
        answer = ozeki(
            f"{url}/api", command="SendEmail", Recipient="port@example.com", Message="via $PORT"
        )
        received = sent(url, smtp_server, answer["EmailId"])
        assert received.rcpt_tos == ["port@example.com"]
        assert received.message.get_content().strip() == "via $PORT"
    finally:
        service.stop()
    assert f"Listening at: http://127.0.0.1:{port}" in service.output()
