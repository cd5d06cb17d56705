"""Hostile input (issue 9): every text a header would carry is refused at acceptance (302,
naming the field) unless it reaches the reader exactly as accepted; what still fails in the
worker ends Failed at once with its cause. Real files, real Redis, a real SMTP server."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import sys
import time
import unicodedata
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from mailgate.addresses import mailbox
from mailgate.attachments import AttachmentRefused, check_path, read_checked
from mailgate.config import Settings
from mailgate.errors import ConfigError, InvalidParameter
from mailgate.jobs import Attachment, EmailJob
from mailgate.relays import parse_route
from mailgate.sizes import base64_size, encoded_size
from mailgate.status import Outcome, StatusStore
from mailgate.status.records import Status
from mailgate.text import first_control
from mailgate.users import UserStore
from mailgate.validation import (
    check_callback_url,
    check_encoded_size,
    idempotency_key_ok,
    validate_send,
)
from tests.conftest import SEED_PASSWORD, SEED_USER, MakeApp
from tests.support import SmtpServer, examples, wait_for
from worker.delivery import Delivery
from worker.message import MessageRefused, check_header, render
from worker.smtp import SmtpTransport

INJECTION = (
    "=?utf-8?q?Invoice=0D=0AFrom:_CEO_<ceo@bank.example>=0D=0AReply-To:_attacker@evil.example"
    "=0D=0AContent-Type:_text/html=0D=0A=0D=0A<a_href=3Dhttp://evil.example>pay_here</a>?="
)
LINE_BREAKS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\t", "\x7f"]
BREAK_IDS = ["LS", "PS", "NEL", "VT", "FF", "FS", "GS", "RS", "TAB", "DEL"]


def base(**params: str) -> dict[str, str]:
    return {"recipient": "a@x.example", "message": "m", **params}


def refused_field(params: dict[str, str], settings: Settings) -> str:
    with pytest.raises(InvalidParameter) as caught:
        validate_send(params, settings)
    return caught.value.name


def test_one_notion_of_control_character() -> None:
    # Every character str.splitlines breaks on, and every one of Cc, Zl, Zp, Cs: no other.
    breaks = {c for c in map(chr, range(0x110000)) if len(f"a{c}b".splitlines()) > 1}
    controls = {
        c for c in map(chr, range(0x110000)) if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs")
    }
    assert breaks <= controls
    assert {c for c in map(chr, range(0x110000)) if first_control(c)} == controls


@pytest.mark.parametrize("char", LINE_BREAKS, ids=BREAK_IDS)
@pytest.mark.parametrize(
    "field", ["Subject", "Recipient", "Sender", "ApiExtension", "DeliveryReportURL"]
)
def test_line_breaks_and_controls_are_302_naming_the_field(
    settings: Settings, field: str, char: str
) -> None:
    value = {
        "Subject": f"a{char}b",
        "Recipient": f"a{char}b@x.example",
        "Sender": f"a{char}b@domain.com",
        "ApiExtension": f"ext{char}1",
        "DeliveryReportURL": f"https://hooks.example/a{char}b",
    }[field]
    allowed = replace(settings, callback_allowed=("hooks.example",))
    assert refused_field(base(**{field.lower(): value}), allowed) == field


@pytest.mark.parametrize("char", LINE_BREAKS, ids=BREAK_IDS)
def test_idempotency_key_refuses_every_control(char: str) -> None:
    assert not idempotency_key_ok(f"key{char}1")
    assert idempotency_key_ok("key-1 ok")


@pytest.mark.parametrize(
    "subject",
    [INJECTION, "=?utf-8?q?a=0D.=0D=0Ab?=", "=?utf-8?q?a=00b?=", "=?utf-8?b?YQ0KYg==?=",
     "=?utf-8?q?a=E2=80=A8b?=", "=?iso-8859-1?q?a=85b?=", "=?utf-8?q?a=0Bb?=",
     "x =?utf-8?q?=3D=3Futf-8=3Fq=3Fa=3F=3D?=",
     "=?utf-8?q?=3D=3Futf-8=3Fq=3F=C3=82=3DA0=3F=3D?="],
    ids=["issue-example", "smuggling-cr-dot", "nul", "base64-crlf", "line-separator",
         "latin1-nel", "vt", "nested-encoded-word", "nested-word-with-raw-utf8"],
)  # fmt: skip
def test_encoded_words_that_decode_to_controls_are_302(settings: Settings, subject: str) -> None:
    assert refused_field(base(subject=subject), settings) == "Subject"


@pytest.mark.parametrize(
    ("field", "value"),
    [("recipient", "=?utf-8?q?a=0D=0AX:_1?=@x.example"), ("recipient", "=?utf-8?q?a?=@x.example"),
     ("sender", "=?utf-8?q?a=0D=0ABcc:_v@x.example?=@domain.com"),
     ("sender", "=?utf-8?b?YQ==?=@domain.com")],
    ids=["recipient-crlf", "recipient-rewritten", "sender-crlf", "sender-rewritten"],
)  # fmt: skip
def test_encoded_words_in_addresses_are_302(settings: Settings, field: str, value: str) -> None:
    assert refused_field(base(**{field: value}), settings) == field.capitalize()


def test_a_clean_encoded_word_is_accepted_as_the_text_the_reader_sees(settings: Settings) -> None:
    request = validate_send(base(subject="  =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Wien "), settings)
    assert request.subject == "Grüße aus Wien"


@pytest.mark.parametrize(
    "name",
    ["a\x0bb.txt", "a\u2028b.txt", "a\x85b.txt", "a\tb.txt", "=?utf-8?q?a=0D=0AX-Inj=3A_1?=.txt",
     "=?utf-8?q?a?=.txt", " leading.txt", "=?utf-8?q?\u00c2=A0?=.pdf"],
    ids=["vt", "line-separator", "nel", "tab", "encoded-crlf", "encoded-rewritten",
         "leading-space", "encoded-word-with-raw-utf8"],
)  # fmt: skip
def test_attachment_names_a_header_cannot_carry_are_302(
    tmp_path: Path, settings: Settings, name: str
) -> None:
    (tmp_path / name).write_bytes(b"data")
    roots = replace(settings, attachment_roots=(tmp_path.resolve(),))
    params = base(attachments=str(tmp_path / name))
    assert refused_field(params, roots) == "Attachments"


def test_an_attachment_with_a_second_hard_link_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    os.link(outside / "secret.txt", root / "report.txt")
    with pytest.raises(AttachmentRefused, match="hard link"):
        check_path(str(root / "report.txt"), (root.resolve(),))
    # Linked after acceptance: refused at send time.
    (root / "ok.txt").write_bytes(b"fine")
    accepted = check_path(str(root / "ok.txt"), (root.resolve(),))
    os.link(root / "ok.txt", outside / "copy.txt")
    with pytest.raises(AttachmentRefused, match="hard link"):
        read_checked(accepted, (root.resolve(),))


def test_a_replacement_with_the_same_size_and_mtime_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"original")
    accepted = check_path(str(tmp_path / "a.txt"), (tmp_path.resolve(),))
    (tmp_path / "b.txt").write_bytes(b"replaced")
    os.utime(tmp_path / "b.txt", ns=(accepted.mtime_ns, accepted.mtime_ns))
    os.replace(tmp_path / "b.txt", tmp_path / "a.txt")
    assert os.stat(tmp_path / "a.txt").st_mtime_ns == accepted.mtime_ns
    with pytest.raises(AttachmentRefused, match="changed"):
        read_checked(accepted, (tmp_path.resolve(),))


def test_records_without_file_identity_still_load_and_send(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    info = os.stat(tmp_path / "a.txt")
    old = {
        "email_id": "e",
        "owner": "o",
        "sender": "s@x.example",
        "recipients": ["r@x.example"],
        "message": "m",
        "attachments": [{"path": str(tmp_path / "a.txt"), "size": 5, "mtime_ns": info.st_mtime_ns}],
    }
    job = EmailJob.from_json(json.dumps(old))
    assert job.attachments[0].inode is None
    assert read_checked(job.attachments[0], (tmp_path.resolve(),)) == b"hello"


# --- sizes --------------------------------------------------------------------------------------


def test_the_limit_is_on_the_encoded_size(tmp_path: Path, settings: Settings) -> None:
    limit = 30_000
    (tmp_path / "exact.bin").write_bytes(os.urandom(limit))
    small = replace(
        settings,
        attachment_roots=(tmp_path.resolve(),),
        max_attachment_bytes=limit,
        max_email_bytes=limit,
    )
    assert refused_field(base(attachments=str(tmp_path / "exact.bin")), small) == "Attachments"
    # The estimate is an upper bound of what the worker really writes.
    job = EmailJob(
        "e",
        "o",
        "s@x.example",
        ("r@x.example",),
        "m",
        attachments=(Attachment(str(tmp_path / "exact.bin"), limit, 0),),
    )
    data = render(job, "h", lambda a: Path(a.path).read_bytes(), 10 * limit)
    assert base64_size(limit) < len(data) < base64_size(limit) + 2000
    with pytest.raises(MessageRefused, match="MAILGATE_MAX_EMAIL_BYTES"):
        render(job, "h", lambda a: Path(a.path).read_bytes(), limit)


# --- the worker's own check of the headers it generated -----------------------------------------


GOOD = "From: s@x.example\r\nTo: r@x.example\r\nSubject: hi\r\nContent-Type: text/plain"


@pytest.mark.parametrize(
    ("block", "reason"),
    [(GOOD.replace("hi", "hi\nX-Inj: 1"), "'\\\\n'"),
     (GOOD.replace("hi", "hi\r."), "'\\\\r'"),
     (GOOD.replace("hi", "h\x00i"), "x00"),
     (GOOD.replace("hi", "hi\r\nFrom: ceo@bank.example"), "differ"),
     (GOOD.replace("hi", "h" * 999), "998")],
    ids=["bare-lf", "bare-cr", "nul", "extra-header", "long-line"],
)  # fmt: skip
def test_generated_headers_are_checked(block: str, reason: str) -> None:
    intended = ["From", "To", "Subject", "Content-Type"]
    assert check_header(GOOD, utf8=False) == intended
    with pytest.raises(MessageRefused, match=reason):
        if check_header(block, utf8=False) != intended:
            raise MessageRefused("the generated header fields differ from those intended")


def test_the_builder_runs_the_api_checks_on_a_record_that_skipped_them() -> None:
    # A record from before these checks, or written by anything but the API.
    job = EmailJob("e", "o", "s@x.example", ("r@x.example",), "m", subject=INJECTION)
    with pytest.raises(ValueError, match="control character U\\+000D"):
        render(job, "h", lambda a: b"", 1 << 20)


@pytest.fixture
def store(settings: Settings) -> StatusStore:
    return StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)


def deliver_now(store: StatusStore, settings: Settings, smtp: SmtpServer, job: EmailJob) -> str:
    store.create(job, watchdog_at=time.time() + 3600)  # no task: only this test delivers it
    transport = SmtpTransport(settings.smtp[0], settings.smtp_timeout_seconds)
    try:
        outcome = Delivery(store, transport, settings).deliver(job.email_id)
    finally:
        transport.close()
    record = store.get(job.email_id)
    assert record is not None
    assert outcome.value == record.status.value.lower() or outcome is Outcome.FAILED
    return f"{record.status.value}: {record.last_error}"


def new_job(**fields: object) -> EmailJob:
    return replace(EmailJob(str(uuid.uuid4()), "o", "s@x.example", ("r@x.example",), "m"), **fields)


@pytest.mark.parametrize(
    ("change", "reason"),
    [(lambda p: (p.unlink(), p.mkdir()), "attachment refused: not a regular file"),
     (lambda p: (p.unlink(), p.write_bytes(b"other")), "attachment refused: file changed"),
     (lambda p: os.link(p, p.with_suffix(".2")), "attachment refused: the file has more than")],
    ids=["became-directory", "replaced", "hard-linked"],
)  # fmt: skip
def test_an_attachment_changed_after_acceptance_fails_at_once_with_its_cause(
    store: StatusStore,
    settings: Settings,
    smtp_server: SmtpServer,
    attachment_root: Path,
    change: object,
    reason: str,
) -> None:
    path = attachment_root / f"{uuid.uuid4().hex}.txt"
    path.write_bytes(b"hello")
    job = new_job(attachments=(check_path(str(path), settings.attachment_roots),))
    change(path)  # type: ignore[operator]
    outcome = deliver_now(store, settings, smtp_server, job)
    assert outcome.startswith(f"Failed: {reason}")
    assert smtp_server.handler.find(job.email_id) is None


@pytest.mark.parametrize(
    "job",
    [new_job(subject=INJECTION), new_job(subject="a\u2028b"),
     new_job(recipients=("=?utf-8?q?a=0D=0AX:_1?=@x.example",)),
     new_job(attachments=(Attachment("/nowhere/a\x0bb.txt", 1, 0),))],
    ids=["encoded-injection", "line-separator", "encoded-recipient", "vt-file-name"],
)  # fmt: skip
def test_what_the_worker_refuses_is_failed_at_once_with_its_cause(
    store: StatusStore, settings: Settings, smtp_server: SmtpServer, job: EmailJob
) -> None:
    job = replace(job, email_id=str(uuid.uuid4()))
    outcome = deliver_now(store, settings, smtp_server, job)
    assert outcome.startswith("Failed: message refused: ") and "control character" in outcome
    record = store.get(job.email_id)
    assert record is not None and record.attempts == 1 and record.status is Status.FAILED
    assert smtp_server.handler.find(job.email_id) is None


# --- IDN ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_smtp() -> Iterator[SmtpServer]:
    """An SMTP server that does not offer SMTPUTF8 (aiosmtpd's Controller offers it)."""
    server = SmtpServer()
    server.controller = Controller(
        server.handler,
        hostname="127.0.0.1",
        port=server.port,
        decode_data=False,
        enable_SMTPUTF8=False,
    )
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("given", "kept"),
    [("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"), ("user@Bücher.de", "user@bücher.de")],
    ids=["a-label", "u-label"],
)
def test_an_idn_domain_is_sent_in_ascii_to_a_server_without_smtputf8(
    store: StatusStore, settings: Settings, plain_smtp: SmtpServer, given: str, kept: str
) -> None:
    smtp_server, settings = plain_smtp, replace(settings, smtp=parse_route(plain_smtp.url))
    request = validate_send(base(recipient=given), settings)
    assert request.recipients == (kept,)  # the caller's form is kept in the record
    job = new_job(recipients=request.recipients, sender="s@bücher.de")
    assert deliver_now(store, settings, smtp_server, job) == "Sent: None"
    received = wait_for(lambda: smtp_server.handler.find(job.email_id), 5, "the message")
    assert received.rcpt_tos == ["user@xn--bcher-kva.de"]
    assert received.mail_from == "s@xn--bcher-kva.de"
    message = message_from_bytes(received.data, policy=default)
    assert (message["To"], message["From"]) == ("user@xn--bcher-kva.de", "s@xn--bcher-kva.de")


def test_a_non_ascii_local_part_still_needs_smtputf8(
    store: StatusStore, settings: Settings, plain_smtp: SmtpServer
) -> None:
    smtp_server, settings = plain_smtp, replace(settings, smtp=parse_route(plain_smtp.url))
    job = new_job(recipients=("jürgen@bücher.de",))
    outcome = deliver_now(store, settings, smtp_server, job)
    assert outcome == "Failed: the SMTP server cannot take international addresses"


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("the attachment checks need Linux", allow_module_level=True)


# --- both API styles over the app ----------------------------------------------------------------


@pytest.fixture(scope="module")
def app(make_app: MakeApp, users: UserStore) -> Flask:
    return make_app(callback_allowed=("hooks.example",))


@pytest.mark.parametrize(
    ("field", "json_field", "value"),
    [("Subject", "subject", INJECTION), ("Subject", "subject", "a\u2028b"),
     ("Recipient", "recipients", ["=?utf-8?q?a=0D=0AX:_1?=@x.example"]),
     ("DeliveryReportURL", "callback_url", "https://hooks.example/a\tb"),
     ("IdempotencyKey", "idempotency_key", "key\x0b1")],
    ids=["subject-encoded", "subject-line-separator", "recipient-encoded", "url-tab", "key-vt"],
)  # fmt: skip
def test_both_api_styles_refuse_naming_the_field(
    client: FlaskClient, field: str, json_field: str, value: str | list[str]
) -> None:
    auth = {"Username": SEED_USER, "Password": SEED_PASSWORD}
    form = {"command": "SendEmail", "Recipient": "a@x.example", "Message": "m", **auth}
    form[field] = value if isinstance(value, str) else value[0]
    answer = ET.fromstring(client.post("/api", data=form).data)
    assert answer.findtext("Code") == "302"
    assert f"'{field}'" in str(answer.findtext("Message"))
    token = base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()
    body = {"recipients": ["a@x.example"], "text": "m", json_field: value}
    response = client.post("/api/v1/emails", json=body, headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == json_field


# --- the callback allow list by host and port ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [("https://hooks.example/x", ("hooks.example",), True),
     ("http://hooks.example/x", ("hooks.example",), True),
     ("https://hooks.example:8443/x", ("hooks.example",), False),
     ("http://hooks.example:6379/x", ("hooks.example",), False),
     ("https://hooks.example:8443/x", ("hooks.example:8443",), True),
     ("https://hooks.example/x", ("hooks.example:8443",), False),
     ("http://a.crm.example:9000/x", ("*.crm.example:*",), True),
     ("http://[::1]:8080/x", ("[::1]:8080",), True),
     ("http://[::1]:8081/x", ("[::1]:8080",), False),
     ("http://[::1]/x", ("::1",), True)],
    ids=["default-https", "default-http", "other-port-refused", "redis-port-refused",
         "listed-port", "default-not-listed", "any-port", "v6-port", "v6-other-port",
         "v6-bare"],
)  # fmt: skip
def test_callback_allow_list_matches_host_and_port(
    url: str, allowed: tuple[str, ...], ok: bool
) -> None:
    if ok:
        assert check_callback_url(url, allowed) == url
    else:
        with pytest.raises(InvalidParameter) as caught:
            check_callback_url(url, allowed)
        assert caught.value.reason == "host and port not in MAILGATE_CALLBACK_ALLOWED"


@pytest.mark.parametrize("value", ["h.example:0", "h.example:70000", "h.example:x", "h/x"])
def test_bad_allow_list_entries_stop_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="MAILGATE_CALLBACK_ALLOWED"):
        Settings.from_env({"MAILGATE_CALLBACK_ALLOWED": value})
    allowed = Settings.from_env({"MAILGATE_CALLBACK_ALLOWED": "h.example:8443 [::1]:80 *.x:*"})
    assert allowed.callback_allowed == ("h.example:8443", "[::1]:80", "*.x:*")


# --- addresses a relay would read otherwise -----------------------------------------------------

ADDRESS_FIELDS = ["Recipient", "Cc", "Bcc", "ReplyTo", "Sender"]


@pytest.mark.parametrize(
    "address",
    [
        "a" * 65 + "@x.example",
        "\u00fc" * 33 + "@x.example",
        "u@127.0.0.1",
        "u@10.1.2.3",
        "u@127.1",
        "u@2130706433",
        "u@0x7f.1",
        "Jane <u@192.168.0.1>",
    ],
    ids=[
        "local-65",
        "local-66-bytes",
        "loopback",
        "private",
        "short-form",
        "one-number",
        "hex",
        "with-display-name",
    ],
)
@pytest.mark.parametrize("field", ADDRESS_FIELDS)
def test_long_local_parts_and_numeric_hosts_are_302(
    settings: Settings, field: str, address: str
) -> None:
    assert refused_field(base(**{field.lower(): address}), settings) == field


@pytest.mark.parametrize(
    "address",
    [
        "a" * 64 + "@x.example",
        "\u00fc" * 32 + "@x.example",
        "u@pbx",
        "u@123.example",
        "u@host-1.local",
    ],
    ids=["local-64", "local-64-bytes", "single-label", "numeric-label", "internal"],
)
def test_the_limits_leave_ordinary_addresses_alone(settings: Settings, address: str) -> None:
    assert validate_send(base(recipient=address), settings).recipients == (address,)


@pytest.mark.parametrize(
    "sender",
    [
        '"boss@corp.example" <mailgate@localhost>',
        '"CEO (boss@corp.example)" <mailgate@localhost>',
        '"boss\uff20corp.example" <mailgate@localhost>',
        "=?utf-8?q?boss=40corp.example?= <a@b.c>",
        '"mailgate@localhost.evil.example" <mailgate@localhost>',
    ],
    ids=["address", "inside-text", "full-width-at", "encoded-word", "longer-lookalike"],
)
def test_a_sender_display_name_showing_another_address_is_302(
    settings: Settings, sender: str
) -> None:
    assert refused_field(base(sender=sender), settings) == "Sender"


@pytest.mark.parametrize(
    "sender",
    [
        '"IVR" <mailgate@localhost>',
        '"mailgate@localhost" <mailgate@localhost>',
        '"Mailgate (MAILGATE@LOCALHOST)" <mailgate@localhost>',
        '"Sales @ Shop" <s@shop.example>',
    ],
    ids=["plain", "the-same-address", "the-same-in-capitals", "an-at-sign-alone"],
)
def test_a_sender_display_name_may_show_its_own_address(settings: Settings, sender: str) -> None:
    assert validate_send(base(sender=sender), settings).sender is not None


FORMAT_CHARACTERS = ["\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u00ad", "\U000e0041"]
FORMAT_IDS = ["RLO", "LRI", "ZWSP", "ZWJ", "BOM", "SHY", "TAG-A"]


@pytest.mark.parametrize("char", FORMAT_CHARACTERS, ids=FORMAT_IDS)
@pytest.mark.parametrize("field", ADDRESS_FIELDS)
def test_format_characters_in_display_names_are_302(
    settings: Settings, field: str, char: str
) -> None:
    value = f'"Invoice{char}Dept" <billing@x.example>'
    assert refused_field(base(**{field.lower(): value}), settings) == field
    encoded = "=?utf-8?b?" + base64.b64encode(f"Invoice{char}Dept".encode()).decode() + "?="
    assert refused_field(base(**{field.lower(): f"{encoded} <b@x.example>"}), settings) == field


@pytest.mark.parametrize("char", FORMAT_CHARACTERS, ids=FORMAT_IDS)
def test_format_characters_in_file_names_are_302(
    tmp_path: Path, settings: Settings, client: FlaskClient, char: str
) -> None:
    name = f"invoice{char}txt.exe"
    (tmp_path / name).write_bytes(b"MZ")
    roots = replace(settings, attachment_roots=(tmp_path.resolve(),))
    assert refused_field(base(attachments=str(tmp_path / name)), roots) == "Attachments"
    form = {
        "command": "SendEmail",
        "Recipient": "a@x.example",
        "Message": "m",
        "Username": SEED_USER,
        "Password": SEED_PASSWORD,
        "file": (io.BytesIO(b"MZ"), name),
    }
    answer = ET.fromstring(client.post("/api", data=form, content_type="multipart/form-data").data)
    assert answer.findtext("Code") == "302"
    assert "format character" in str(answer.findtext("Reason"))


# --- one RCPT per address -------------------------------------------------------------------------


def test_an_address_in_to_or_cc_and_again_in_bcc_gets_one_rcpt_and_stays_shown(
    store: StatusStore, settings: Settings, smtp_server: SmtpServer
) -> None:
    request = validate_send(
        base(
            recipient="Jane <jane@x.example>",
            cc="cc@y.example",
            bcc="JANE@X.EXAMPLE; cc@Y.example; hidden@z.example; Hidden@Z.example",
        ),
        settings,
    )
    assert request.bcc == ("hidden@z.example",)
    job = new_job(recipients=request.recipients, cc=request.cc, bcc=request.bcc)
    assert deliver_now(store, settings, smtp_server, job) == "Sent: None"
    received = wait_for(lambda: smtp_server.handler.find(job.email_id), 5, "the message")
    assert received.rcpt_tos == ["jane@x.example", "cc@y.example", "hidden@z.example"]
    message = message_from_bytes(received.data, policy=default)
    assert (message["To"], message["Cc"], message["Bcc"]) == (
        "Jane <jane@x.example>",
        "cc@y.example",
        None,
    )
    assert b"hidden" not in received.data


def test_a_record_that_repeats_an_address_still_sends_one_rcpt_each(
    store: StatusStore, settings: Settings, smtp_server: SmtpServer
) -> None:
    # Written before acceptance dropped the repeats, or by anything but the API.
    job = new_job(
        recipients=("a@x.example",),
        cc=("b@x.example", "A@X.example"),
        bcc=("a@x.EXAMPLE", "b@x.example", "c@x.example"),
    )
    assert deliver_now(store, settings, smtp_server, job) == "Sent: None"
    received = wait_for(lambda: smtp_server.handler.find(job.email_id), 5, "the message")
    assert received.rcpt_tos == ["a@x.example", "b@x.example", "c@x.example"]


def test_an_address_counts_once_toward_the_recipient_limit(settings: Settings) -> None:
    fifty = [f"r{i}@x.example" for i in range(settings.max_recipients)]
    shouted = ";".join(address.upper() for address in fifty)
    request = validate_send(base(recipient=";".join(fifty), cc=shouted, bcc=shouted), settings)
    assert (len(request.recipients), request.bcc) == (len(fifty), ())
    assert refused_field(base(recipient=";".join(fifty), bcc="one.more@x.example"), settings) == (
        "Recipient"
    )


# --- DeliveryReportURL: what a request line can carry -------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example/a b",
        "https://hooks.example/caf\u00e9",
        "https://hooks.example/x?q=a b",
        "https://hooks.example/x?q=\u00e9",
        "https://hooks.example/\u00a0",
        "https://hooks.example/x#a b",
        "https://h\u00f6oks.example/x",
    ],
    ids=[
        "space-in-path",
        "non-ascii-path",
        "space-in-query",
        "non-ascii-query",
        "nbsp",
        "space-in-fragment",
        "non-ascii-host",
    ],
)
def test_a_report_url_no_request_line_can_carry_is_302(url: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        check_callback_url(url, ("hooks.example", "h\u00f6oks.example"))
    assert caught.value.name == "DeliveryReportURL"
    assert "percent-encode" in str(caught.value.reason)


@given(path=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30))
@hyp_settings(max_examples=examples(300), deadline=None)
def test_every_accepted_report_url_goes_on_the_wire(path: str) -> None:
    url = f"https://hooks.example/{path}"
    try:
        check_callback_url(url, ("hooks.example",))
    except InvalidParameter:
        return
    # What worker.report_http.http_post hands to http.client, up to the socket: the request
    # line and the Host header are checked and encoded here, before any connection.
    request = urllib.request.Request(url, data=b"x", method="POST")
    connection = http.client.HTTPSConnection(request.host)
    connection.putrequest(request.get_method(), request.selector)
    connection.putheader("Host", request.host)
    connection.close()


# --- files whose type would nest MIME -------------------------------------------------------------

NESTING = (
    b"From: a@x.example\r\nSubject: inner\r\nContent-Type: multipart/mixed\r\n\r\nbare\nlf\r\n"
)


@pytest.mark.parametrize("suffix", [".eml", ".mht", ".mhtml", ".nws", ".EML"])
def test_a_file_whose_name_suggests_message_goes_as_opaque_bytes(
    store: StatusStore,
    settings: Settings,
    smtp_server: SmtpServer,
    attachment_root: Path,
    suffix: str,
) -> None:
    path = attachment_root / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(NESTING)
    job = new_job(attachments=(check_path(str(path), settings.attachment_roots),))
    assert deliver_now(store, settings, smtp_server, job) == "Sent: None"
    _, part = _the_attachment(smtp_server, job.email_id)
    assert (part.get_filename(), part.get_content()) == (path.name, NESTING)


@pytest.mark.parametrize(
    "declared",
    [
        "message/rfc822",
        "multipart/mixed",
        "message/partial",
        "Message/RFC822; x=1",
        "multipart/alternative; boundary=x",
    ],
)
def test_an_upload_declared_message_or_multipart_goes_as_opaque_bytes(
    client: FlaskClient,
    store: StatusStore,
    settings: Settings,
    smtp_server: SmtpServer,
    declared: str,
) -> None:
    form = {
        "command": "SendEmail",
        "Recipient": "a@x.example",
        "Message": "m",
        "Username": SEED_USER,
        "Password": SEED_PASSWORD,
        "file": (io.BytesIO(NESTING), "forwarded.eml", declared),
    }
    answer = ET.fromstring(client.post("/api", data=form, content_type="multipart/form-data").data)
    assert answer.findtext("Code") == "200", answer.findtext("Reason")
    record = store.get(str(answer.findtext("EmailId")))
    assert record is not None and record.job is not None
    [upload] = record.job.attachments
    assert upload.content_type == "application/octet-stream"
    # The same upload in a record of its own, delivered here (the API's is left to a worker).
    job = new_job(attachments=(replace(upload, content_type=declared),))  # an older record
    assert deliver_now(store, settings, smtp_server, job) == "Sent: None"
    _, part = _the_attachment(smtp_server, job.email_id)
    assert (part.get_filename(), part.get_content()) == ("forwarded.eml", NESTING)


def _the_attachment(smtp_server: SmtpServer, email_id: str) -> tuple[EmailMessage, EmailMessage]:
    received = wait_for(lambda: smtp_server.handler.find(email_id), 5, "the message")
    message = message_from_bytes(received.data, policy=default)
    assert isinstance(message, EmailMessage)
    [part] = list(message.iter_attachments())
    assert isinstance(part, EmailMessage)
    assert part.get_content_type() == "application/octet-stream"
    return message, part


# --- the size estimate holds with the largest headers -------------------------------------------


def test_the_size_estimate_bounds_the_largest_headers_accepted(settings: Settings) -> None:
    # The heaviest header texts the API takes: the longest display names, a subject of 998
    # two-byte characters, 20 uploads with names of 255 three-byte characters.
    names = [mailbox("x " * 128, f"{'r' * 40}{i:02d}@{'d' * 50}.example") for i in range(50)]
    params = base(
        recipient=";".join(names[:25]),
        cc=";".join(names[25:]),
        subject="\u00e9" * 998,
        replyto=names[0],
        sender=names[1],
    )
    request = validate_send(params, settings)
    day = "\u65e5" * 251
    uploads = tuple(
        Attachment(f"/spool/{i}", 0, 0, filename=f"{day}{i:02d}.b", content_type="a/b")
        for i in range(settings.max_attachments)
    )
    request = replace(request, attachments=uploads)
    job = EmailJob(
        "e" * 36,
        "o",
        str(request.sender),
        request.recipients,
        request.message,
        request.subject,
        uploads,
        cc=request.cc,
        reply_to=request.reply_to,
    )
    written = len(render(job, "h" * 60, lambda a: b"", 1 << 30))
    # Accepted at a limit just above what the worker writes; refused just below the estimate.
    check_encoded_size(request, replace(settings, max_email_bytes=written * 2))
    with pytest.raises(InvalidParameter):
        check_encoded_size(request, replace(settings, max_email_bytes=written))
    estimate = encoded_size(
        "m",
        [0] * len(uploads),
        [job.sender, *names, request.subject],
        [a.filename for a in uploads],
    )
    assert written < estimate
