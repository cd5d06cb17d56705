"""Real clients, round 2 (issue 19): legacy charsets, EmailIds and paths in any case, Windows
file names in any case, the first account's sender, a strict REST body.

Each test goes over real HTTP to the API (`mailgate web`), through Redis and a Celery worker
process, to the aiosmtpd server, and checks what was delivered there: the text a client meant,
decoded from the message, not the bytes it sent.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import Received, SmtpServer
from tests.system.test_addresses import BASIC, CREDS, attached, rest
from tests.system.test_clients import call, multipart, ozeki, sent, status_of, xml

pytestmark = pytest.mark.usefixtures("worker")
FORM = "application/x-www-form-urlencoded"


def form(params: dict[str, str], charset: str) -> bytes:
    """A urlencoded form as a client on ``charset`` builds it (PHP, Java's URLEncoder, ...)."""
    return urllib.parse.urlencode(params, encoding=charset).encode("ascii")


def mail(subject: str, message: str, recipient: str) -> dict[str, str]:
    return {
        "command": "SendEmail",
        **CREDS,
        "Recipient": recipient,
        "Subject": subject,
        "Message": message,
    }


def ok(url: str, data: bytes | None = None, content_type: str = "") -> bytes:
    """The XML body of an Ozeki request, which always answers HTTP 200."""
    status, _, body = call(url, data, content_type)
    assert status == 200, body
    return body


def delivered(api_url: str, smtp_server: SmtpServer, body: bytes) -> Received:
    """The message an accepted Ozeki request was delivered as."""
    answer = xml(body)
    assert answer["Code"] == "200", answer
    assert "Warning" not in answer, answer  # _charset_ is a declaration, not an unknown name
    return sent(api_url, smtp_server, answer["EmailId"])


def assert_text(received: Received, subject: str, message: str) -> None:
    """The delivered Subject and text body, decoded, are exactly what the client meant."""
    assert received.message["Subject"] == subject
    # SMTP carries lines ending in CRLF; the text is the same line for line.
    assert received.message.get_content().replace("\r\n", "\n") == message + "\n"


def raw_request(api_url: str, head: bytes, body: bytes = b"") -> bytes:
    """One request written byte for byte, as a hand-written client does."""
    host, port = urllib.parse.urlsplit(api_url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(head + b"\r\n\r\n" + body)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    assert answer.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), answer[:200]
    return answer.split(b"\r\n\r\n", 1)[1]


# 1. Charsets ----------------------------------------------------------------------------------

LATIN1 = ("Rückruf für Müller", "Grüße aus Zürich: ½ Stunde, 5 °C, Größe »XL«")
CP1252 = ("Angebot \u2013 5 €", "„Preis“: 5 € … Œuvre, œ, Š")


def test_a_latin1_get_is_delivered_exactly(api_url: str, smtp_server: SmtpServer) -> None:
    # commcare-hq: ISO-8859-1 whenever the text fits, percent-encoded in the query.
    subject, message = LATIN1
    query = form(mail(subject, message, "latin1-get@example.com"), "latin-1").decode()
    body = ok(f"{api_url}/api?{query}")
    assert_text(delivered(api_url, smtp_server, body), subject, message)


def test_raw_latin1_bytes_in_an_http10_body(api_url: str, smtp_server: SmtpServer) -> None:
    # A hand-written HTTP/1.0 client that puts the text into its form body unescaped.
    subject, message = "Büro", "Nachricht für Jürgen & Co"
    fields = urllib.parse.urlencode(mail("SUBJECT", "MESSAGE", "raw-latin1@example.com"))
    body = fields.encode().replace(b"SUBJECT", subject.encode("latin-1"))
    body = body.replace(b"MESSAGE", message.replace("&", "%26").encode("latin-1"))
    head = f"POST /api HTTP/1.0\r\nContent-Type: {FORM}\r\nContent-Length: {len(body)}"
    answer = raw_request(api_url, head.encode(), body)
    assert_text(delivered(api_url, smtp_server, answer), subject, message)


@pytest.mark.parametrize(
    ("declared", "encoding", "subject", "message"),
    [
        ("windows-1252", "cp1252", *CP1252),
        ("ISO-8859-1", "cp1252", *CP1252),  # WHATWG: the label ISO-8859-1 is windows-1252
        ("cp1252", "cp1252", "Ã© is not é", "valid UTF-8 bytes, and still CP1252: Ã©"),
        ("KOI8-R", "koi8-r", "Голосовое сообщение", "Перезвоните, пожалуйста"),
        ("Shift_JIS", "shift_jis", "留守番電話", "折り返しお電話ください"),
    ],
    ids=["windows-1252", "iso-8859-1-label", "declared-over-utf8", "koi8-r", "shift-jis"],
)
def test_a_post_with_a_declared_charset_is_delivered_exactly(
    api_url: str,
    smtp_server: SmtpServer,
    declared: str,
    encoding: str,
    subject: str,
    message: str,
) -> None:
    params = mail(subject, message, f"declared-{encoding}@example.com")
    body = ok(f"{api_url}/api", form(params, encoding), f"{FORM}; charset={declared}")
    assert_text(delivered(api_url, smtp_server, body), subject, message)


@pytest.mark.parametrize("where", ["body", "query"])
def test_the_charset_parameter_declares_the_charset(
    api_url: str, smtp_server: SmtpServer, where: str
) -> None:
    # Ozeki's HTTP APIs document _charset_; browsers fill a hidden _charset_ field.
    subject, message = CP1252
    params = {"_charset_": "windows-1252", **mail(subject, message, f"charset-{where}@x.example")}
    if where == "body":
        body = ok(f"{api_url}/api", form(params, "cp1252"), FORM)
    else:
        body = ok(f"{api_url}/api?{form(params, 'cp1252').decode()}")
    assert_text(delivered(api_url, smtp_server, body), subject, message)


def test_a_declared_charset_decides_the_query_too(api_url: str, smtp_server: SmtpServer) -> None:
    subject, message = LATIN1
    query = form({"Subject": subject}, "latin-1").decode()
    body = form(
        {**mail("", message, "query-declared@example.com"), "_charset_": "latin1"}, "latin-1"
    )
    body = body.replace(b"Subject=&", b"")
    answer = ok(f"{api_url}/api?{query}", body, FORM)
    assert_text(delivered(api_url, smtp_server, answer), subject, message)


def test_a_mixed_request_decodes_each_part_on_its_own(
    api_url: str, smtp_server: SmtpServer
) -> None:
    # The URL from a UTF-8 template, the body from a CP1252 script, no charset declared: each
    # part is UTF-8 where it is valid UTF-8, else the legacy charset (windows-1252).
    subject, message = "Rückruf \u2013 5 €", CP1252[1]
    query = urllib.parse.urlencode({"Subject": subject, "command": "SendEmail", **CREDS})
    body = form({"Recipient": "mixed@example.com", "Message": message}, "cp1252")
    answer = ok(f"{api_url}/api?{query}", body, FORM)
    assert_text(delivered(api_url, smtp_server, answer), subject, message)


def test_undeclared_cp1252_in_the_query_is_the_legacy_charset(
    api_url: str, smtp_server: SmtpServer
) -> None:
    # Java's one-argument URLEncoder.encode on a Windows JVM before Java 18: Cp1252.
    subject, message = CP1252
    query = form(mail(subject, message, "java-cp1252@example.com"), "cp1252").decode()
    assert_text(
        delivered(api_url, smtp_server, call(f"{api_url}/api?{query}")[2]), subject, message
    )


@pytest.mark.parametrize("how", ["part-charset", "charset-field", "undeclared"])
def test_multipart_fields_follow_the_charset_rules(
    api_url: str, smtp_server: SmtpServer, how: str
) -> None:
    subject, message = CP1252
    boundary = uuid.uuid4().hex
    fields = [(k, v) for k, v in mail(subject, message, f"multipart-{how}@x.example").items()]
    if how == "charset-field":
        fields.append(("_charset_", "windows-1252"))
    chunks = []
    for name, value in fields:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
        if how == "part-charset":
            head += "Content-Type: text/plain; charset=windows-1252\r\n"
        chunks.append(head.encode() + b"\r\n" + value.encode("cp1252") + b"\r\n")
    data = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    answer = ok(f"{api_url}/api", data, f"multipart/form-data; boundary={boundary}")
    assert_text(delivered(api_url, smtp_server, answer), subject, message)


def test_rest_multipart_with_a_charset(api_url: str, smtp_server: SmtpServer) -> None:
    subject, message = LATIN1
    data, content_type = multipart(
        [
            ("recipients", "rest-charset@example.com"),
            ("subject", subject),
            ("text", message),
            ("_charset_", "ISO-8859-1"),
        ],
        [],
    )
    data = data.replace(subject.encode(), subject.encode("latin-1"))
    data = data.replace(message.encode(), message.encode("latin-1"))
    status, _, raw = call(
        f"{api_url}/api/v1/emails", data, content_type, headers={"Authorization": BASIC}
    )
    assert status == 202, raw
    assert_text(sent(api_url, smtp_server, json.loads(raw)["id"]), subject, message)


@pytest.mark.parametrize(
    ("content_type", "data", "reason"),
    [
        (f"{FORM}; charset=x-klingon", b"Message=a", "unknown charset"),
        (f"{FORM}; charset=utf-8", b"Message=%E9t%E9", "not valid utf-8"),
        (FORM, b"Message=a&_charset_=utf-16", "utf-16"),
        (f"{FORM}; charset=utf-8", b"Message=a&_charset_=koi8-r", "koi8-r"),
        (FORM, b"Message=%81", "windows-1252"),
    ],
    ids=[
        "unknown-charset",
        "not-what-it-declares",
        "not-ascii-compatible",
        "two-declarations",
        "neither-utf8-nor-legacy",
    ],
)
def test_a_charset_that_cannot_decode_the_request_is_300(
    api_url: str, smtp_server: SmtpServer, content_type: str, data: bytes, reason: str
) -> None:
    before = len(smtp_server.handler.received)
    query = urllib.parse.urlencode({"command": "SendEmail", "Recipient": "x@example.com", **CREDS})
    answer = xml(call(f"{api_url}/api?{query}", data, content_type)[2])
    assert answer["Code"] == "300", answer
    assert reason.lower() in answer["Message"].lower(), answer
    assert len(smtp_server.handler.received) == before


# 2. EmailIds in any case, 3. the paths in any case --------------------------------------------


def test_email_ids_match_in_any_case(api_url: str, smtp_server: SmtpServer) -> None:
    answer = ozeki(f"{api_url}/API", command="SendEmail", Recipient="guid@example.com", Message="m")
    email_id = answer["EmailId"]
    sent(api_url, smtp_server, email_id)
    for shown in (email_id.upper(), f"  {email_id.upper()} ", f"{{{email_id.upper()}}}"):
        status = ozeki(f"{api_url}/api", command="GetEmailStatus", EmailId=shown)
        assert (status["Code"], status["EmailId"], status["Status"]) == ("200", email_id, "Sent")
        rest_status, _, raw = call(
            f"{api_url}/api/v1/emails/{urllib.parse.quote(shown)}", headers={"Authorization": BASIC}
        )
        assert (rest_status, json.loads(raw)["id"]) == (200, email_id)
    # Cancel by an upper-case id, Ozeki and REST.
    for how in ("ozeki", "rest"):
        later = ozeki(
            f"{api_url}/api",
            command="SendEmail",
            Recipient="guid-later@example.com",
            Message="m",
            SendAt="600",
        )["EmailId"]
        if how == "ozeki":
            answer = ozeki(f"{api_url}/api", command="CancelEmail", EmailId=later.upper())
            assert (answer["Code"], answer["EmailId"]) == ("200", later), answer
        else:
            code, _, raw = call(
                f"{api_url}/api/v1/emails/{later.upper()}",
                method="DELETE",
                headers={"Authorization": BASIC},
            )
            assert code == 200, raw
        assert status_of(api_url, later)["Status"] == "Cancelled"


@pytest.mark.parametrize("path", ["/API", "/Api/", "/aPi"])
def test_the_ozeki_path_matches_in_any_case(
    api_url: str, smtp_server: SmtpServer, path: str
) -> None:
    answer = ozeki(
        f"{api_url}{path}",
        command="SendEmail",
        Recipient="path-case@example.com",
        Message=f"via {path}",
    )
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert received.message.get_content().strip() == f"via {path}"
    # Other methods there answer as on /api: XML, Code 300.
    status, content_type, body = call(f"{api_url}{path}", method="PUT")
    assert (status, content_type, xml(body)["Code"]) == (
        200,
        "application/xml; charset=utf-8",
        "300",
    )


# 4. Windows paths find the file in any case ---------------------------------------------------


@pytest.fixture(scope="module")
def recordings(attachment_root: Path) -> Path:
    folder = attachment_root / "recordings" / "Case-Test"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vm-0001.wav").write_bytes(b"RIFF-lower")
    (folder / "Twice.txt").write_bytes(b"one")
    (folder / "TWICE.TXT").write_bytes(b"two")
    (attachment_root / "pbx").mkdir(exist_ok=True)
    (attachment_root / "pbx" / "sibling.txt").write_bytes(b"in the roots, not under C:\\Recordings")
    (attachment_root / "recordings" / "top.txt").write_bytes(b"top")
    return folder


@pytest.mark.parametrize(
    ("path", "name", "content"),
    [
        (r"C:\RECORDINGS\CASE-TEST\VM-0001.WAV", "vm-0001.wav", b"RIFF-lower"),
        (r"c:\recordings\case-test\Vm-0001.Wav", "vm-0001.wav", b"RIFF-lower"),
        (r"C:\Recordings\Case-Test\Twice.txt", "Twice.txt", b"one"),  # the exact name is the file
        (r"C:\Recordings\Case-Test\sub\..\.\vm-0001.wav", "vm-0001.wav", b"RIFF-lower"),
        (r"\\PBX\SHARE\..\SIBLING.TXT", "sibling.txt", b"in the roots, not under C:\\Recordings"),
    ],
    ids=["upper", "mixed", "exact-wins", "dots-inside-the-prefix", "no-climb-above-a-share"],
)
def test_a_mapped_windows_path_finds_the_file_in_any_case(
    api_url: str, smtp_server: SmtpServer, recordings: Path, path: str, name: str, content: bytes
) -> None:
    answer = ozeki(
        f"{api_url}/api",
        command="SendEmail",
        Recipient="wincase@example.com",
        Message="x",
        Attachments=path,
    )
    assert answer["Code"] == "200", answer
    assert attached(sent(api_url, smtp_server, answer["EmailId"])) == [(name, content)]


@pytest.mark.parametrize(
    ("path", "reasons"),
    [
        (r"C:\Recordings\Case-Test\twice.TXT", ["TWICE.TXT", "Twice.txt"]),
        (
            r"C:\Recordings\..\pbx\sibling.txt",
            ["MAILGATE_ATTACHMENT_PATH_MAP", r"C:\pbx\sibling.txt"],
        ),
        (r"C:\Recordings\Case-Test\..\..\pbx\sibling.txt", ["MAILGATE_ATTACHMENT_PATH_MAP"]),
        (r"C:\RECORDINGS\LINK.WAV", ["outside the attachment roots"]),
        (r"C:\Recordings\Case-Test\none.wav", ["does not exist"]),
    ],
    ids=[
        "several-match",
        "climb-to-a-sibling-in-the-roots",
        "climb-twice",
        "symlink-out",
        "missing",
    ],
)
def test_a_mapped_windows_path_is_refused_where_windows_would_not_read_it(
    api_url: str,
    smtp_server: SmtpServer,
    recordings: Path,
    attachment_root: Path,
    path: str,
    reasons: list[str],
) -> None:
    link = attachment_root / "recordings" / "link.wav"
    if not link.is_symlink():
        outside = attachment_root.parent / "outside.txt"
        outside.write_bytes(b"secret")
        link.symlink_to(outside)
    before = len(smtp_server.handler.received)
    answer = ozeki(
        f"{api_url}/api",
        command="SendEmail",
        Recipient="wincase@example.com",
        Message="x",
        Attachments=path,
    )
    assert answer["Code"] == "302", answer
    assert "'Attachments'" in answer["Message"]
    for reason in reasons:
        assert reason in answer["Reason"], answer
    assert len(smtp_server.handler.received) == before


# 7. REST refuses unknown fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"recipients": ["a@example.com"], "text": "x", "bc": ["hidden@example.com"]},
        {"recipients": ["a@example.com"], "text": "x", "bc": [], "Subject": "typo"},
    ],
    ids=["one", "two"],
)
def test_rest_refuses_unknown_fields_naming_them(
    api_url: str, smtp_server: SmtpServer, body: dict[str, Any]
) -> None:
    before = len(smtp_server.handler.received)
    status, answer = rest(api_url, body)
    unknown = [name for name in body if name not in ("recipients", "text")]
    assert status == 400, answer
    assert (answer["error"]["code"], answer["error"]["field"]) == ("invalid_parameter", unknown[0])
    for name in unknown:
        assert name in answer["error"]["message"]
    # The same as form fields of a multipart body.
    data, content_type = multipart(
        [("recipients", "a@example.com"), ("text", "x"), ("bc", "hidden@example.com")], []
    )
    status, _, raw = call(
        f"{api_url}/api/v1/emails", data, content_type, headers={"Authorization": BASIC}
    )
    assert (status, json.loads(raw)["error"]["field"]) == (400, "bc")
    assert len(smtp_server.handler.received) == before


def test_the_openapi_schema_closes_the_send_request(api_url: str) -> None:
    status, _, raw = call(f"{api_url}/api/v1/openapi.json")
    schemas = json.loads(raw)["components"]["schemas"]
    assert status == 200
    assert schemas["SendRequest"]["additionalProperties"] is False
    # A multipart body's parts of other names are files, never fields.
    assert schemas["SendForm"]["additionalProperties"]["format"] == "binary"
