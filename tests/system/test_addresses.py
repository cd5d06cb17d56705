"""Real clients end to end (issue 11, points 2-4): display names and internal domains, Cc, Bcc,
ReplyTo and HTML, unknown parameters, Windows attachment paths.

Each test goes over real HTTP to the API (`mailgate web`), through Redis and a Celery worker
process, to the
aiosmtpd server, and checks the delivered headers and the SMTP envelope there.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.header import decode_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SEED_PASSWORD, SEED_USER
from tests.support import Received, Service, SmtpServer, free_port, wait_for, web_args
from tests.system.test_clients import call, ozeki, sent, xml

pytestmark = pytest.mark.usefixtures("worker")
CREDS = {"Username": SEED_USER, "Password": SEED_PASSWORD}
BASIC = "Basic " + base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()


def send(base: str, **params: str) -> dict[str, str]:
    return ozeki(f"{base}/api", command="SendEmail", **params)


def rest(base: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, answer = call(
        f"{base}/api/v1/emails",
        json.dumps(body).encode(),
        "application/json",
        headers={"Authorization": BASIC},
    )
    return status, json.loads(answer)


def mailboxes(received: Received, field: str) -> list[tuple[str, str]]:
    """(display name, address) of each address in a delivered header field."""
    header = received.message[field]
    return [(a.display_name, a.addr_spec) for a in header.addresses] if header else []


def headers_text(received: Received) -> str:
    """Every header field of every part, as written on the wire (lower case)."""
    head = received.data.split(b"\r\n\r\n", 1)[0].decode().lower()
    parts = [str(v).lower() for part in received.message.walk() for v in part.values()]
    return "\n".join([head, *parts])


# 2. Display names and internal domains ---------------------------------------------------------


def test_display_names_in_headers_bare_addresses_in_the_envelope(
    api_url: str, smtp_server: SmtpServer
) -> None:
    answer = send(
        api_url,
        Sender="Acme IVR <ivr@domain.com>",
        Recipient='"Doe, Jane" <jane@corp.local>; ops@pbx.lan, Jörg Müller <jm@host.home.arpa>,'
        "=?utf-8?q?Z=C3=BCrich_Desk?= <desk@pbx>, x@y.internal",
        Subject="display names",
        Message="hello",
    )
    assert answer["Code"] == "200", answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert received.mail_from == "ivr@domain.com"
    assert received.rcpt_tos == [
        "jane@corp.local",
        "ops@pbx.lan",
        "jm@host.home.arpa",
        "desk@pbx",
        "x@y.internal",
    ]
    assert mailboxes(received, "From") == [("Acme IVR", "ivr@domain.com")]
    assert mailboxes(received, "To") == [
        ("Doe, Jane", "jane@corp.local"),
        ("", "ops@pbx.lan"),
        ("Jörg Müller", "jm@host.home.arpa"),
        ("Zürich Desk", "desk@pbx"),
        ("", "x@y.internal"),
    ]
    # A non-ASCII display name travels as an encoded word: the envelope stays plain ASCII.
    assert received.data.isascii()


def test_long_non_ascii_display_names_reach_the_reader_exactly(
    api_url: str, smtp_server: SmtpServer
) -> None:
    cjk = "山田太郎株式会社サンプル東京本社営業部第一課課長" * 2  # 52 characters
    accented = "Jörg Müller-Lüdenscheidt, Kundenservice Nordrhein-Westfalen Außenstelle Düren"
    answer = send(
        api_url,
        Recipient=f"{cjk} <yamada@example.com>",
        Cc=f'"{accented}" <service@example.com>',
        Message="x",
    )
    assert answer["Code"] == "200", answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert mailboxes(received, "To") == [(cjk, "yamada@example.com")]
    assert mailboxes(received, "Cc") == [(accented, "service@example.com")]
    assert received.data.isascii()
    assert all(len(line) <= 998 for line in received.data.split(b"\r\n"))


def test_rest_display_names_and_internal_domains(api_url: str, smtp_server: SmtpServer) -> None:
    status, body = rest(
        api_url,
        {
            "sender": "Acme IVR <ivr@domain.com>",
            "recipients": ['"Doe, Jane" <jane@corp.local>', "voicemail@pbx"],
            "subject": "rest display names",
            "text": "hi",
        },
    )
    assert status == 202, body
    received = sent(api_url, smtp_server, body["id"])
    assert (received.mail_from, received.rcpt_tos) == (
        "ivr@domain.com",
        ["jane@corp.local", "voicemail@pbx"],
    )
    assert mailboxes(received, "To") == [("Doe, Jane", "jane@corp.local"), ("", "voicemail@pbx")]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Recipient", "=?utf-8?q?a=0D=0ABcc:_evil@x.com?= <a@b.example>"),
        ("Recipient", "Line\u2028Break <a@b.example>"),
        ("Recipient", "Tab\tName <a@b.example>"),
        ("Recipient", "Name <not-an-address>"),
        ("Recipient", "Jane <a@b.example> trailing"),
        ("Recipient", "a@x.invalid"),
        ("Cc", "=?utf-8?b?QQ0KQmNjOiBldmlsQHguY29t?= <c@b.example>"),
        ("ReplyTo", "Name\x00 <r@b.example>"),
        ("Sender", "=?utf-8?q?=0A?= <ivr@domain.com>"),
    ],
    ids=["encoded-crlf", "u2028", "tab", "no-domain", "trailing-text", "invalid-tld",
         "cc-b-encoded-crlf", "nul-reply-to", "sender-encoded-lf"],
)  # fmt: skip
def test_a_display_name_that_could_inject_is_302_naming_the_parameter(
    api_url: str, name: str, value: str
) -> None:
    params = {"Recipient": "ok@b.example", "Message": "x", name: value}
    answer = send(api_url, **params)
    assert answer["Code"] == "302", answer
    assert f"'{name}'" in answer["Message"]


def test_the_sender_acl_matches_the_bare_address(api_url: str) -> None:
    # The display name is the allowed domain's, the address is not: 306.
    sender = '"IVR domain.com" <ivr@elsewhere.example>'
    answer = send(api_url, Sender=sender, Recipient="a@b.example", Message="x")
    assert answer["Code"] == "306", answer
    # A display name that shows another address is refused before the ACL is asked.
    sender = '"ivr@domain.com" <ivr@elsewhere.example>'
    answer = send(api_url, Sender=sender, Recipient="a@b.example", Message="x")
    assert answer["Code"] == "302" and "'Sender'" in answer["Message"], answer


# 3. Cc, Bcc, ReplyTo, HtmlMessage, unknown parameters ------------------------------------------


def test_cc_bcc_reply_to_and_html(api_url: str, smtp_server: SmtpServer) -> None:
    answer = send(
        api_url,
        Recipient="To Person <to@example.com>",
        Cc='"Copy, Carl" <cc@example.com>',
        Bcc="Hidden Hal <hidden-bcc@secret.example>; second-bcc@secret.example",
        ReplyTo="Desk <desk@domain.com>",
        Subject="cc bcc html",
        Message="plain text",
        HtmlMessage="<p>the <b>HTML</b></p>",
    )
    assert answer["Code"] == "200", answer
    assert "Warning" not in answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert received.rcpt_tos == [
        "to@example.com",
        "cc@example.com",
        "hidden-bcc@secret.example",
        "second-bcc@secret.example",
    ]
    assert mailboxes(received, "To") == [("To Person", "to@example.com")]
    assert mailboxes(received, "Cc") == [("Copy, Carl", "cc@example.com")]
    assert mailboxes(received, "Reply-To") == [("Desk", "desk@domain.com")]
    # Bcc: in the envelope, in no header of any part, under no name.
    assert received.message["Bcc"] is None
    assert "secret.example" not in headers_text(received)
    assert "hidden hal" not in headers_text(received)
    message = received.message
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content().strip()) for p in message.iter_parts()]
    assert parts == [("text/plain", "plain text"), ("text/html", "<p>the <b>HTML</b></p>")]


def test_html_only_with_an_empty_message(api_url: str, smtp_server: SmtpServer) -> None:
    answer = send(
        api_url, Recipient="html-only@example.com", Message="", HtmlMessage="<p>only html</p>"
    )
    assert answer["Code"] == "200", answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    html = received.message.get_body(("html",))
    assert html is not None and "only html" in html.get_content()


def test_an_empty_message_without_html_is_302(api_url: str) -> None:
    answer = send(api_url, Recipient="a@example.com", Message="")
    assert (answer["Code"], "'Message'" in answer["Message"]) == ("302", True)


@pytest.mark.parametrize(
    ("split", "ok"),
    [((48, 1, 1), True), ((40, 10, 1), False), ((1, 1, 49), False)],
    ids=["50-together", "51-with-cc", "51-with-bcc"],
)
def test_the_recipient_limit_counts_to_cc_and_bcc(
    api_url: str, split: tuple[int, int, int], ok: bool
) -> None:
    lists = [
        ";".join(f"{kind}{i}@limit.example" for i in range(count))
        for kind, count in zip(("to", "cc", "bcc"), split, strict=True)
    ]
    answer = send(api_url, Recipient=lists[0], Cc=lists[1], Bcc=lists[2], Message="x")
    assert answer["Code"] == ("200" if ok else "302"), answer


def metric(api_url: str, name: str) -> float:
    _, _, body = call(f"{api_url}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_unknown_ozeki_parameters_are_named_in_a_warning_and_counted(
    api_url: str, smtp_server: SmtpServer
) -> None:
    counted = 'mailgate_unknown_parameters_total{command="SendEmail"}'
    before = metric(api_url, counted)
    answer = send(
        api_url, Recipient="warned@example.com", Message="x", BCC_typo="b@x.example", OzekiField="1"
    )
    assert answer["Code"] == "200", answer
    assert "bcc_typo" in answer["Warning"] and "ozekifield" in answer["Warning"]
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert received.rcpt_tos == ["warned@example.com"]  # the typo dropped nothing silently
    # Every API process counts its own; a scrape may reach another: wait for the sum.
    wait_for(lambda: metric(api_url, counted) >= before + 2, 10, "the unknown-parameter count")
    # The REST API refuses them (tests/system/test_real_clients.py), and counts them too.
    status, body = rest(api_url, {"recipients": ["w@example.com"], "text": "x", "bcc_typo": []})
    assert (status, body["error"]["field"]) == (400, "bcc_typo")
    wait_for(lambda: metric(api_url, counted) >= before + 3, 10, "the unknown-field count")


def test_rest_cc_bcc_reply_to_html(api_url: str, smtp_server: SmtpServer) -> None:
    status, body = rest(
        api_url,
        {
            "recipients": ["r@example.com"],
            "cc": ["Cee <c@example.com>"],
            "bcc": ["hidden@bcc.example"],
            "reply_to": ['"Desk, The" <desk@domain.com>'],
            "text": "",
            "html": "<i>hi</i>",
        },
    )
    assert status == 202, body
    received = sent(api_url, smtp_server, body["id"])
    assert received.rcpt_tos == ["r@example.com", "c@example.com", "hidden@bcc.example"]
    assert mailboxes(received, "Reply-To") == [("Desk, The", "desk@domain.com")]
    assert "bcc.example" not in headers_text(received)
    assert received.message.get_content_type() == "multipart/alternative"


@pytest.fixture(scope="module")
def strict_api(env: dict[str, str], workdir: Path) -> Iterator[str]:
    """A second API process with strict parameters and a recipient domain allow list."""
    port = free_port()
    strict = {
        **env,
        "MAILGATE_PORT": str(port),
        "MAILGATE_STRICT_PARAMETERS": "1",
        "MAILGATE_RECIPIENT_DOMAINS": "*.Example.com, corp.local",
    }
    service = Service("strict-web", web_args(), strict, workdir / "strict-web.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: call(f"{url}/healthz")[0] == 200 if _listening(port) else False,
        30,
        "the strict API",
    )
    yield url
    service.stop()


def _listening(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
    except OSError:
        return False
    return True


def test_strict_parameters_make_an_unknown_parameter_302(strict_api: str) -> None:
    answer = send(strict_api, Recipient="a@mail.example.com", Message="x", Bcc_="b@x.example")
    assert answer["Code"] == "302", answer
    assert "'bcc_'" in answer["Message"] and "MAILGATE_STRICT_PARAMETERS" in answer["Reason"]
    status, body = rest(strict_api, {"recipients": ["a@mail.example.com"], "text": "x", "bcc_": []})
    assert (status, body["error"]["field"]) == (400, "bcc_")


@pytest.mark.parametrize(
    ("name", "address", "code"),
    [("Recipient", "a@mail.EXAMPLE.com", "200"), ("Recipient", "Jane <j@corp.local>", "200"),
     ("Recipient", "a@example.org", "302"), ("Cc", "c@evil.example", "302"),
     ("Bcc", "b@corp.local.evil", "302"), ("Recipient", "a@example.com", "302")],
    ids=["glob", "exact-with-name", "other-domain", "cc", "bcc-suffix", "glob-needs-a-label"],
)  # fmt: skip
def test_recipient_domains_restrict_to_cc_and_bcc(
    strict_api: str, smtp_server: SmtpServer, name: str, address: str, code: str
) -> None:
    params = {"Recipient": "base@x.example.com", "Message": "x", name: address}
    answer = send(strict_api, **params)
    assert answer["Code"] == code, answer
    if code == "302":
        assert f"'{name}'" in answer["Message"]
        assert "MAILGATE_RECIPIENT_DOMAINS" in answer["Reason"]


# 4. Windows paths mapped onto roots ------------------------------------------------------------


@pytest.fixture(scope="module")
def mapped(attachment_root: Path) -> Path:
    for folder in ("recordings", "pbx/share-sub"):
        (attachment_root / folder).mkdir(parents=True, exist_ok=True)
    (attachment_root / "recordings" / "vm-0001.wav").write_bytes(b"RIFF-voicemail")
    (attachment_root / "pbx" / "share-sub" / "call.txt").write_bytes(b"call notes")
    outside = attachment_root.parent / "outside.txt"
    outside.write_bytes(b"secret")
    link = attachment_root / "recordings" / "link.wav"
    if not link.exists():
        os.symlink(outside, link)
    return attachment_root


def attached(received: Received) -> list[tuple[str | None, bytes]]:
    message = received.message
    assert isinstance(message, EmailMessage)
    return [(p.get_filename(), p.get_payload(decode=True)) for p in message.iter_attachments()]


def test_windows_and_unc_paths_map_onto_the_roots(
    api_url: str, smtp_server: SmtpServer, mapped: Path
) -> None:
    answer = send(
        api_url,
        Recipient="files@example.com",
        Message="x",
        Attachments=r"c:\RECORDINGS\vm-0001.wav;\\PBX\Share\share-sub\call.txt",
    )
    assert answer["Code"] == "200", answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert attached(received) == [("vm-0001.wav", b"RIFF-voicemail"), ("call.txt", b"call notes")]


@pytest.mark.parametrize(
    ("path", "reason"),
    [(r"D:\Recordings\vm-0001.wav", "MAILGATE_ATTACHMENT_PATH_MAP"),
     (r"\\otherhost\share\x.txt", "MAILGATE_ATTACHMENT_PATH_MAP"),
     (r"C:\Recordings\..\..\outside.txt", "MAILGATE_ATTACHMENT_PATH_MAP"),  # C:\outside.txt
     (r"C:\Recordings\link.wav", "outside the attachment roots"),
     (r"C:\Recordings\missing.wav", "does not exist"),
     (r"C:\RecordingsX\vm-0001.wav", "MAILGATE_ATTACHMENT_PATH_MAP")],
    ids=["unmapped-drive", "unmapped-unc", "climb-out", "symlink-out", "missing", "prefix-only"],
)  # fmt: skip
def test_a_mapped_path_still_goes_through_the_sandbox(
    api_url: str, mapped: Path, path: str, reason: str
) -> None:
    answer = send(api_url, Recipient="a@example.com", Message="x", Attachments=path)
    assert answer["Code"] == "302", answer
    assert "'Attachments'" in answer["Message"] and reason in answer["Reason"], answer


def test_a_non_ascii_file_name_has_rfc_2231_and_an_encoded_word_fallback(
    api_url: str, smtp_server: SmtpServer, mapped: Path
) -> None:
    name = "Grüße vom Anrufbeantworter, Nachricht Nr. 3.wav"
    (mapped / "recordings" / name).write_bytes(b"RIFF-greeting")
    answer = send(
        api_url,
        Recipient="files@example.com",
        Message="x",
        Attachments=str(mapped / "recordings" / name),
    )
    assert answer["Code"] == "200", answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert attached(received) == [(name, b"RIFF-greeting")]
    part = next(iter(received.message.iter_attachments()))
    head = received.data.split(b"\r\n\r\n--", 2)[2].split(b"\r\n\r\n")[0].decode()
    assert "filename*0*=utf-8''Gr%C3%BC%C3%9Fe" in head  # RFC 2231, what current readers use
    fallback = re.search(r'name="(.*?)"', head.replace("\r\n ", " "), re.S)
    assert fallback is not None  # RFC 2047 in name=, what older ones fall back to
    assert (
        "".join(
            str(text, charset or "ascii") if isinstance(text, bytes) else text
            for text, charset in decode_header(fallback.group(1))
        )
        == name
    )
    assert part.get_param("name") == name


def test_a_windows_path_in_the_rest_api(
    api_url: str, smtp_server: SmtpServer, mapped: Path
) -> None:
    status, body = rest(
        api_url,
        {
            "recipients": ["f@example.com"],
            "text": "x",
            "attachments": [r"C:\Recordings\vm-0001.wav"],
        },
    )
    assert status == 202, body
    assert attached(sent(api_url, smtp_server, body["id"])) == [("vm-0001.wav", b"RIFF-voicemail")]


def test_ozeki_urlencoded_post_of_everything(api_url: str, smtp_server: SmtpServer) -> None:
    # The same as a POST body, as a PBX would send it.
    params = {
        "command": "SendEmail",
        **CREDS,
        "Recipient": "Jane <jane@corp.local>",
        "Cc": "c@pbx",
        "Message": "m",
    }
    status, _, body = call(
        f"{api_url}/", urllib.parse.urlencode(params).encode(), "application/x-www-form-urlencoded"
    )
    answer = xml(body)
    assert (status, answer["Code"]) == (200, "200"), answer
    received = sent(api_url, smtp_server, answer["EmailId"])
    assert received.rcpt_tos == ["jane@corp.local", "c@pbx"]
