"""Property test (issue 9): whatever Unicode a caller puts in a free-text field, encoded words
included, a Code 200 always ends Sent, and the message that reaches the SMTP server parses back
to exactly what was accepted: one From, To and Subject, no other header field, the same
subject, recipients (display names included), Cc and Reply-To, attachment file names and bytes,
and no bare CR, LF or NUL on the wire."""

from __future__ import annotations

import base64
import re
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from email import message_from_bytes, message_from_string
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from mailgate.addresses import split
from mailgate.attachments import read_checked
from mailgate.config import Settings
from mailgate.errors import InvalidParameter, TooLarge
from mailgate.headers import wire_address
from mailgate.jobs import EmailJob
from mailgate.validation import SendRequest, validate_send
from tests.conftest import SEED_PASSWORD, SEED_USER
from tests.support import SmtpServer, wait_for
from worker.message import envelope, render
from worker.smtp import SmtpTransport

pytestmark = pytest.mark.integration  # real processes of its own

SENDER = "ivr@domain.com"  # one the seed account may use
FIELDS = {
    "Subject",
    "Message",
    "ApiExtension",
    "Attachments",
    "Recipient",
    "Sender",
    "Cc",
    "ReplyTo",
}
DANGEROUS = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\u2028",
    "\u2029",
    "\x85",
    "\x0b",
    "\x0c",
    "\x1c",
    "\t",
    " ",
    "  ",
    "=?",
    "?=",
    "?",
    ".",
    "\r\n.\r\n",
    "\r.\r",
    ":",
    ";",
    ",",
    '"',
    "<",
    ">",
    "\\",
    "=",
    "_",
    "From: x@evil.example",
    "\ud800",
]
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n|\x00")


def encoded_word(text: str, charset: str, encoding: str) -> str:
    """``=?charset?q|b?...?=`` holding ``text`` (whatever it contains)."""
    codec = charset if charset in ("utf-8", "iso-8859-1", "us-ascii") else "utf-8"
    raw = text.encode(codec, "surrogatepass" if codec == "utf-8" else "replace")
    if encoding in "bB":
        payload = base64.b64encode(raw).decode()
    else:
        payload = "".join(chr(b) if chr(b).isalnum() else f"={b:02X}" for b in raw)
    return f"=?{charset}?{encoding}?{payload}?="


chars = st.characters()  # every category but the surrogates, which DANGEROUS adds
clean_chars = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"])
SAFE = [d for d in DANGEROUS if not re.search("[\x00-\x1f\x85\u2028\u2029\ud800]", d)]


def encoded_words(inside: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        encoded_word,
        inside,
        st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "us-ascii", "x-unknown"]),
        st.sampled_from("qQbB"),
    )


def texts(letters: st.SearchStrategy[str], specials: list[str]) -> st.SearchStrategy[str]:
    """Text from ``letters`` mixed with ``specials`` and encoded words of the same."""
    plain = st.lists(
        st.one_of(st.text(letters, max_size=4), st.sampled_from(specials)), max_size=6
    ).map("".join)
    return st.lists(st.one_of(plain, encoded_words(plain)), max_size=4).map("".join)


# Two in three fields are free of controls, so that many examples are accepted and sent.
free_text = st.one_of(texts(clean_chars, SAFE), texts(clean_chars, SAFE), texts(chars, DANGEROUS))
file_names = st.one_of(
    st.none(), texts(clean_chars, SAFE).map(lambda name: f"{name}.pdf"), free_text
)
display_names = st.one_of(
    st.none(), st.sampled_from(["Acme IVR", '"Doe, Jane"', "Jörg Müller"]), free_text
)
"""None for a bare address; else the display name as a caller writes it (quoted or not)."""
local_parts = st.one_of(
    st.sampled_from(["r", "r.s+t", "Jürgen", "o'neil"]), st.just("r"), st.just("r"), free_text
)


def fill(params: dict[str, str], root: Path, name: str | None) -> None:
    """Create ``name`` in a fresh folder of ``root`` and name it in ``Attachments``."""
    if name is None:
        return
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    try:
        path = folder / name
        if path.parent != folder or name in (".", ".."):
            return
        path.write_bytes(name.encode("utf-8", "surrogatepass") + b"\x00\xff payload")
    except (OSError, ValueError, UnicodeEncodeError):
        return  # not a name this file system takes: no attachment then
    params["attachments"] = str(path)


def check_received(data: bytes, request: SendRequest) -> None:
    """The message on the wire says exactly what was accepted, and nothing else."""
    assert BARE.search(data) is None
    message = message_from_string(data.decode(), policy=default)
    assert isinstance(message, EmailMessage)
    expected = {"From", "To", "Date", "Message-ID", "MIME-Version", "Content-Type"}
    if request.subject:
        expected.add("Subject")
    for field, addresses in (("Cc", request.cc), ("Reply-To", request.reply_to)):
        if addresses:
            expected.add(field)
            assert mailboxes(message, field) == pairs(addresses)
    if not request.attachments:
        expected.add("Content-Transfer-Encoding")
    assert sorted(message.keys()) == sorted(expected)
    assert str(message.get("Subject", "")) == request.subject
    assert mailboxes(message, "To") == pairs(request.recipients)
    assert mailboxes(message, "From") == pairs([request.sender or SENDER])
    assert pairs([request.sender or SENDER])[0][1] == SENDER
    # Bodies from the bytes (an 8bit text is UTF-8 bytes), headers from the text (SMTPUTF8).
    message = message_from_bytes(data, policy=default)
    assert isinstance(message, EmailMessage)
    attachments = list(message.iter_attachments())
    assert [p.get_filename() for p in attachments] == [
        Path(a.path).name for a in request.attachments
    ]
    assert [p.get_content() for p in attachments] == [
        Path(a.path).read_bytes() for a in request.attachments
    ]
    body = message.get_body(("plain",))
    assert body is not None
    lines = request.message.encode().splitlines()
    # The text as a reader sees it: every line break (CR, LF or CRLF) one CRLF on the wire.
    assert body.get_content().replace("\r\n", "\n") == "".join(
        line.decode() + "\n" for line in lines
    )


def pairs(addresses: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(display name, address as sent) of each accepted address."""
    return [(name, wire_address(address)) for name, address in map(split, addresses)]


def mailboxes(message: EmailMessage, field: str) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in message[field].addresses]


def named(display: str | None, address: str) -> str:
    return address if display is None else f"{display} <{address}>"


def accepted(params: dict[str, str], settings: Settings) -> SendRequest | None:
    """What the API accepts for ``params``, or None when it refuses them (naming a field)."""
    try:
        return validate_send(params, settings)
    except InvalidParameter as exc:
        assert exc.name in FIELDS
        event(f"refused: {exc.name}: {exc.reason[:25]}")
    except TooLarge:
        pass
    return None


def examples(count: int) -> hyp_settings:
    return hyp_settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def transport(settings: Settings) -> Iterator[SmtpTransport]:
    sender = SmtpTransport(settings.smtp[0], settings.smtp_timeout_seconds)
    yield sender
    sender.close()


@examples(300)
@given(
    subject=free_text,
    message=free_text,
    extension=free_text,
    name=file_names,
    local=local_parts,
    to_name=display_names,
    from_name=display_names,
    cc_name=display_names,
    reply_name=display_names,
)
def test_the_builder_sends_exactly_what_the_api_accepted(
    settings: Settings,
    smtp_server: SmtpServer,
    transport: SmtpTransport,
    attachment_root: Path,
    subject: str,
    message: str,
    extension: str,
    name: str | None,
    local: str,
    to_name: str | None,
    from_name: str | None,
    cc_name: str | None,
    reply_name: str | None,
) -> None:
    params = {
        "recipient": named(to_name, f"{local}@x.example"),
        "message": message or "m",
        "subject": subject,
        "apiextension": extension,
        "sender": named(from_name, SENDER),
        "cc": named(cc_name, "cc@corp.local") if cc_name is not None else "",
        "replyto": named(reply_name, "desk@pbx") if reply_name is not None else "",
    }
    fill(params, attachment_root, name)
    request = accepted(params, settings)
    event("accepted" if request else "refused")
    if request is None:
        return
    event("with an attachment" if request.attachments else "without attachments")
    event("subject with an encoded word" if "=?" in subject else "plain subject")
    event("display names" if "<" in params["recipient"] + params["sender"] else "bare addresses")
    job = EmailJob(
        str(uuid.uuid4()),
        "o",
        request.sender or SENDER,
        request.recipients,
        request.message,
        request.subject,
        request.attachments,
        request.api_extension,
        cc=request.cc,
        reply_to=request.reply_to,
    )
    roots = settings.attachment_roots
    # A 200 must never be refused here.
    data = render(job, "test", lambda a: read_checked(a, roots), settings.max_email_bytes)
    assert transport.send(data, *envelope(job)).startswith("250")
    received = smtp_server.handler.find(job.email_id)
    assert received is not None
    check_received(received.data, request)


@pytest.mark.usefixtures("worker")
@examples(25)
@given(subject=free_text, message=free_text, extension=free_text, name=file_names)
def test_the_api_end_to_end_sends_exactly_what_it_accepted(
    api_url: str,
    settings: Settings,
    smtp_server: SmtpServer,
    attachment_root: Path,
    subject: str,
    message: str,
    extension: str,
    name: str | None,
) -> None:
    params = {
        "recipient": "r@x.example",
        "message": message or "m",
        "subject": subject,
        "apiextension": extension,
        "sender": SENDER,
    }
    fill(params, attachment_root, name)
    form = {"command": "SendEmail", "Username": SEED_USER, "Password": SEED_PASSWORD}
    form.update({key.capitalize(): value for key, value in params.items()})
    form["ApiExtension"] = form.pop("Apiextension")
    try:
        body = urllib.parse.urlencode(form).encode()
    except UnicodeEncodeError:
        return  # a lone surrogate: no HTTP client can send it
    with urllib.request.urlopen(f"{api_url}/api", data=body, timeout=10) as response:
        answer = ET.fromstring(response.read())
    request = accepted(params, settings)
    assert (answer.findtext("Code") == "200") == (request is not None), answer.findtext("Reason")
    if request is None:
        return
    email_id = answer.findtext("EmailId")
    status = wait_for(lambda: _final(api_url, str(email_id)), 20, "the e-mail to end")
    assert status == "Sent"
    received = smtp_server.handler.find(str(email_id))
    assert received is not None
    check_received(received.data, request)


def _final(api_url: str, email_id: str) -> str | None:
    query = urllib.parse.urlencode(
        {
            "command": "GetEmailStatus",
            "EmailId": email_id,
            "Username": SEED_USER,
            "Password": SEED_PASSWORD,
        }
    )
    with urllib.request.urlopen(f"{api_url}/api?{query}", timeout=10) as response:
        status = ET.fromstring(response.read()).findtext("Status")
    return status if status in ("Sent", "Failed") else None
