"""The message writer (worker/message.py) and its header encoder (mailgate/headers.py): for
every shape the API accepts, Python's ``email`` package, as the oracle, reads the written bytes
(as text and as bytes) as exactly what was meant; the bytes are lines of legal length; and the
cheap header check refuses anything else."""

from __future__ import annotations

import base64
import io
import re
import tracemalloc
import urllib.parse
from dataclasses import replace
from email import message_from_bytes, message_from_string
from email.header import decode_header
from email.message import EmailMessage, Message
from email.policy import default
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from mailgate import addresses as addresses_module
from mailgate.addresses import mailbox, parse_mailbox, split
from mailgate.attachments import AttachmentRefused, check_path, open_checked
from mailgate.config import Settings
from mailgate.errors import InvalidParameter, PermanentDelivery
from mailgate.headers import (
    MAX_LINE,
    NotCarried,
    attachment_fields,
    check_address,
    check_filename,
    mailboxes,
    unstructured,
    wire_address,
)
from mailgate.jobs import Attachment, EmailJob
from mailgate.validation import check_subject, normalize_address
from tests.support import examples
from worker import message as writer
from worker.delivery import Delivery
from worker.message import MessageRefused, base64_lines, check_header, render, text_body

HOST = "mailgate.local"
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n|\x00")

# --- the oracle ---------------------------------------------------------------------------------


def parsed(data: bytes | bytearray) -> tuple[EmailMessage, EmailMessage]:
    """The message as a reader reads it: as text (UTF-8, SMTPUTF8) and as bytes."""
    as_text = message_from_string(bytes(data).decode(), policy=default)
    as_bytes = message_from_bytes(data, policy=default)
    assert isinstance(as_text, EmailMessage) and isinstance(as_bytes, EmailMessage)
    return as_text, as_bytes


def lines_of(text: str) -> str:
    """A text body as the reader gets it: each line (split on CR, LF, CRLF) ends in LF."""
    lines = text.encode().splitlines()
    return "".join(line.decode() + "\n" for line in lines) or "\n"


def pairs(addresses: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    return [(name, wire_address(address)) for name, address in map(split, addresses)]


def mailbox_list(message: Message, field: str) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in message[field].addresses]


def attachments_of(message: EmailMessage) -> list[tuple[str | None, str | None, bytes, str]]:
    return [
        (p.get_filename(), p.get_param("name"), p.get_payload(decode=True), p.get_content_type())
        for p in message.iter_attachments()
    ]  # type: ignore[misc]


def check_wire(data: bytes | bytearray, utf8: bool) -> None:
    """CRLF only, no NUL, no line over 998 bytes; ASCII unless SMTPUTF8; a header line over
    76 characters holds one token that cannot be folded (no space after the fold)."""
    assert BARE.search(data) is None
    assert data.endswith(b"\r\n")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    if not utf8:
        assert data.isascii()
    head = bytes(data).split(b"\r\n\r\n", 1)[0].decode()
    for line in head.split("\r\n"):
        if len(line) > MAX_LINE:
            assert " " not in line.strip().partition(": ")[2], line


def check_message(data: bytes | bytearray, job: EmailJob, contents: list[bytes]) -> None:
    """The e-mail reads, as text and as bytes, exactly as ``job`` meant it."""
    everyone = pairs([job.sender, *job.envelope_recipients(), *job.reply_to])
    utf8 = not all(address.isascii() for _, address in everyone)
    check_wire(data, utf8)
    as_text, as_bytes = parsed(data)
    expected = {"From", "To", "Date", "Message-ID", "MIME-Version", "Content-Type"}
    expected |= {"Subject"} if job.subject else set()
    expected |= {"Cc"} if job.cc else set()
    expected |= {"Reply-To"} if job.reply_to else set()
    if not job.html and not job.attachments:
        expected.add("Content-Transfer-Encoding")
    for message in (as_text, as_bytes):
        assert sorted(message.keys()) == sorted(expected)
        assert message["Bcc"] is None
        assert str(message.get("Subject", "")) == job.subject
        assert message["Message-ID"] == f"<{job.email_id}@{HOST}>"
        assert parsedate_to_datetime(str(message["Date"])).utcoffset() is not None
        for part in message.walk():
            assert not part.defects, part.defects
        body = message.get_body(("plain",))
        assert body is not None and body.get_content().replace("\r\n", "\n") == lines_of(
            job.message
        )
        if job.html:
            assert message.get_content_type() == (
                "multipart/mixed" if job.attachments else "multipart/alternative"
            )
            html = message.get_body(("html",))
            assert html is not None
            assert html.get_content().replace("\r\n", "\n") == lines_of(job.html)
        names = [a.filename for a in job.attachments]
        assert [(f, n, c) for f, n, c, _ in attachments_of(message)] == [
            (name, name, content) for name, content in zip(names, contents, strict=True)
        ]
    # Headers as the text reading has them (the bytes one keeps raw UTF-8 as surrogates).
    assert mailbox_list(as_text, "From") == pairs([job.sender])
    assert mailbox_list(as_text, "To") == pairs(job.recipients)
    for field, addresses in (("Cc", job.cc), ("Reply-To", job.reply_to)):
        if addresses:
            assert mailbox_list(as_text, field) == pairs(addresses)
    assert [str(v) for v in as_text.values()] == [str(v) for v in as_bytes.values()]


# --- what callers send, as the API accepts it ----------------------------------------------------

header_chars = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"])
text_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
NAMES = [
    "Acme IVR",
    "Doe, Jane",
    "Jörg Müller",
    "O'Neil (Sales)",
    'Say "hi"',
    "a\\b",
    "Zürich  Desk",
    "日本語の名前です" * 6,
    "Jörg Müller-Lüdenscheidt, Kundenservice " * 2,
    "Ελένη Παπαδοπούλου " * 3,
    "🎉" * 60,
    "x" * 200,
    "Dr. Åsa Öberg von Bülow zu Ärø",
]
LOCALS = ["r", "first.last", "o'neil", "x+tag", "jürgen", "用户"]
DOMAINS = ["x.example", "bücher.de", "pbx", "corp.local"]
SUBJECTS = [
    "",
    "Voicemail from +44 20 7946 0000 (0:42)",
    "Rückruf: Grüße aus Wien",
    "=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Wien",
    "a  b   c",
    "x" * 200,
    "word " * 60 + "end",
    "予約確認のお知らせ" * 20,
    "=? not a word ?=",
]
BODIES = [
    "Hello\nworld",
    "",
    "x" * 300,
    "Grüße\r\naus\rWien\n",
    "日本語" * 200,
    ".\n..\n.x",
    "From me\n",
    "a\tb\x0cc\x85d\u2028e",
    "trailing \nspace\t\n",
    "=?utf-8?q?a?=",
    "--=_m\n--",
    "x" * 78 + "\n" + "y" * 79,
]

display_names = st.one_of(st.just(""), st.sampled_from(NAMES), st.text(header_chars, max_size=60))
addresses = st.builds(
    lambda name, local, domain: f"{name} <{local}@{domain}>" if name else f"{local}@{domain}",
    display_names,
    st.sampled_from(LOCALS),
    st.sampled_from(DOMAINS),
)
subjects = st.one_of(st.sampled_from(SUBJECTS), st.text(header_chars, max_size=300))
bodies = st.one_of(st.sampled_from(BODIES), st.text(text_chars, max_size=400))
file_names = st.one_of(
    st.sampled_from(
        [
            "voicemail.wav",
            "Grüße vom Anrufbeantworter (3).wav",
            'a"b;c.txt',
            "報告書" * 20 + ".pdf",
            "x" * 120 + ".bin",
            "%41.txt",
            "a b.eml",
        ]
    ),
    st.text(header_chars, min_size=1, max_size=40).map(lambda name: name + ".pdf"),
)
attachments = st.lists(st.tuples(file_names, st.binary(max_size=300)), max_size=3)


def accepted_address(raw: str) -> str | None:
    try:
        return normalize_address(raw, "Recipient")
    except InvalidParameter:
        return None


@st.composite
def jobs(draw: st.DrawFn) -> tuple[EmailJob, list[bytes]]:
    """An e-mail of any shape the API accepts, and its attachments' contents."""

    def some(strategy: st.SearchStrategy[str], low: int, high: int) -> tuple[str, ...]:
        found = [
            accepted_address(raw) for raw in draw(st.lists(strategy, min_size=low, max_size=high))
        ]
        return tuple(a for a in found if a)

    sender = accepted_address(draw(addresses))
    recipients = some(addresses, 1, 4)
    assume(sender is not None and recipients)
    try:
        subject = check_subject(draw(subjects))
    except InvalidParameter:
        subject = ""
    files = []
    for name, content in draw(attachments):
        try:
            check_filename(name)
        except NotCarried:
            continue
        files.append((name, content))
    job = EmailJob(
        "0b7e1c2d-9f1a-4c3b-8e2d-1a2b3c4d5e6f",
        "owner",
        str(sender),
        recipients,
        draw(bodies),
        subject,
        tuple(Attachment(f"/spool/{i}", len(c), 0, filename=n) for i, (n, c) in enumerate(files)),
        cc=some(addresses, 0, 2),
        bcc=some(addresses, 0, 1),
        reply_to=some(addresses, 0, 1),
        html=draw(st.one_of(st.just(""), bodies)),
    )
    event("html" if job.html else "text only")
    event("attachments" if files else "no attachment")
    event("non-ASCII subject" if not subject.isascii() else "ASCII subject")
    return job, [content for _, content in files]


def write(job: EmailJob, contents: list[bytes], max_bytes: int = 1 << 24) -> bytearray:
    by_path = {a.path: c for a, c in zip(job.attachments, contents, strict=True)}
    return render(job, HOST, lambda a: by_path[a.path], max_bytes)


@hyp_settings(
    max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(jobs())
def test_every_shape_reads_back_exactly_as_meant(case: tuple[EmailJob, list[bytes]]) -> None:
    job, contents = case
    check_message(write(job, contents), job, contents)


def job_of(**changes: Any) -> EmailJob:
    base = EmailJob(
        "3f2a9c",
        "acct",
        "mailgate@localhost",
        ("someone@example.com",),
        "Hello\nworld",
        "Voicemail from +44 20 7946 0000 (0:42)",
    )
    return replace(base, **changes)


SHAPES = {
    "ascii-short": job_of(),
    "one-300-char-line": job_of(message="x " * 150),
    "utf8-text-and-subject": job_of(subject="Rückruf von Jörg", message="Grüße aus Wien\n" * 5),
    "html-receipt": job_of(message="Receipt", html="<p>Total: <b>42,00 €</b></p>"),
    "cc-and-display-names": job_of(
        sender="IVR Desk <ivr@example.com>",
        recipients=("Jörg Müller <j@example.com>",),
        cc=('"Doe, Jane" <jane@example.com>', "x@pbx"),
    ),
    "attachment": job_of(attachments=(Attachment("/a", 4, 0, filename="vm.wav"),)),
    "smtputf8": job_of(recipients=("jürgen@bücher.de",)),
    "everything": job_of(
        html="<i>x</i>",
        cc=("c@example.com",),
        reply_to=("r@example.com",),
        attachments=(
            Attachment("/a", 4, 0, filename="Grüße.wav"),
            Attachment("/b", 4, 0, filename="b.txt"),
        ),
    ),
}


@pytest.mark.parametrize("job", list(SHAPES.values()), ids=list(SHAPES))
def test_each_shape_reads_back_exactly(job: EmailJob) -> None:
    contents = [b"RIFF"] * len(job.attachments)
    check_message(write(job, contents), job, contents)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [("Hello\nworld", "7bit"), ("x" * 78, "7bit"), ("x" * 79, "quoted-printable"),
     ("Grüße aus Wien", "quoted-printable"), ("日本語のテキスト" * 10, "base64"),
     ("nul\x00inside", "quoted-printable"), ("=" * 100, "base64")],
    ids=["ascii", "78-chars", "79-chars", "accented", "cjk", "nul", "escapes-everywhere"],
)  # fmt: skip
def test_the_writer_picks_the_transfer_encoding(text: str, encoding: str) -> None:
    chosen, body = text_body(text)
    assert chosen == encoding
    assert all(len(line) <= 76 or chosen == "7bit" for line in body.split(b"\r\n"))


@given(st.text(text_chars, max_size=3000))
def test_a_body_is_never_longer_than_its_base64(text: str) -> None:
    # The API's size estimate (mailgate.sizes) counts text as base64 of its CRLF lines.
    _, body = text_body(text)
    crlf = len(b"\r\n".join(text.encode().splitlines()) + b"\r\n")
    assert len(body) <= writer.base64_size(crlf)


@given(st.binary(max_size=4000))
def test_base64_lines_are_the_standard_encoding(data: bytes) -> None:
    assert base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")


# --- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["日本語の名前" * 7, "Jörg Müller-Lüdenscheidt von und zu Hohenzollern-Sigmaringen",
     "Ελένη Παπαδοπούλου-Καραμανλή", "🎉" * 100, "Łukasz Żółć " * 12 + "end"],
    ids=["42-cjk", "60-accented", "greek", "100-emoji", "long-polish"],
)  # fmt: skip
def test_long_non_ascii_display_names_are_accepted_and_read_back(name: str) -> None:
    stored = normalize_address(f"{name} <a@example.com>", "Recipient")
    assert split(stored) == (name, "a@example.com")
    job = job_of(recipients=(stored,), cc=(stored,))
    check_message(write(job, []), job, [])


def test_a_display_name_too_long_for_one_line_once_encoded_is_refused() -> None:
    with pytest.raises(InvalidParameter) as caught:
        normalize_address(f"{'日本語' * 85} <a@example.com>", "Recipient")
    assert "too long" in caught.value.reason


@pytest.mark.parametrize(
    ("display", "address", "reason"),
    [("", "=?utf-8?q?a?=@x.example", "encoded word"), ("=?utf-8?q?a?=", "a@x.example", "encoded"),
     ("a\u2028b", "a@x.example", "U\\+2028"), ("", "a b@x.example", "dot-atom"),
     ("", '"a b"@x.example', "dot-atom"), ("", "a@[127.0.0.1]", "dot-atom")],
    ids=["encoded-address", "encoded-name", "line-separator", "space", "quoted", "literal"],
)  # fmt: skip
def test_what_a_header_cannot_carry_is_refused(display: str, address: str, reason: str) -> None:
    with pytest.raises(NotCarried, match=reason):
        check_address(address, display)


def test_a_non_ascii_file_name_has_rfc_2231_and_an_encoded_word_fallback() -> None:
    name = "Grüße vom Anrufbeantworter, Nachricht Nr. 3 (2026-12-01).wav"
    content, disposition = attachment_fields("audio/x-wav", name)
    assert "filename*0*=utf-8''Gr%C3%BC%C3%9Fe" in disposition  # RFC 2231, in sections
    assert 'filename="' not in disposition
    fallback = re.search(r'name="(.*)"', content.replace("\r\n ", " "), re.S)
    assert fallback is not None and fallback.group(1).startswith("=?utf-8?")
    # An RFC 2047 reader (not Python's quoted-string leniency) decodes it on its own.
    decoded = "".join(
        text.decode(charset or "ascii") if isinstance(text, bytes) else text
        for text, charset in decode_header(fallback.group(1))
    )
    assert decoded == name
    assert all(len(line) <= MAX_LINE for line in f"{content}\r\n{disposition}".split("\r\n"))


def test_rfc_2231_sections_hold_whole_characters() -> None:
    # Some readers decode each section on its own: none may end inside a character.
    name = "報告書と議事録" * 12 + ".pdf"
    _, disposition = attachment_fields("application/pdf", name)
    sections = re.findall(r"filename\*\d+\*=(?:utf-8'')?([^;\r]*)", disposition)
    assert len(sections) > 3
    assert "".join(urllib.parse.unquote(s, errors="strict") for s in sections) == name


def test_a_plain_file_name_is_quoted_in_both_fields() -> None:
    assert attachment_fields("audio/x-wav", 'vm "1".wav') == (
        'Content-Type: audio/x-wav; name="vm \\"1\\".wav"',
        'Content-Disposition: attachment; filename="vm \\"1\\".wav"',
    )


@given(st.text(header_chars, max_size=500))
def test_a_subject_is_folded_into_short_lines_that_read_back(text: str) -> None:
    text = text.strip()
    assume(text)
    try:
        subject = check_subject(text)
    except InvalidParameter:
        return
    field = unstructured("Subject", subject)
    assert all(len(line) <= MAX_LINE for line in field.split("\r\n"))
    assert field.isascii()
    message = message_from_string(f"{field}\r\n\r\n", policy=default)
    assert str(message["Subject"]) == subject


def test_fifty_recipients_fold_between_addresses() -> None:
    field = mailboxes("To", [(f"Person {i}", f"p{i}@example.com") for i in range(50)])
    assert all(len(line) <= MAX_LINE for line in field.split("\r\n"))
    message = message_from_string(f"{field}\r\n\r\n", policy=default)
    assert len(message["To"].addresses) == 50


# --- the cheap check of what the writer wrote --------------------------------------------------


GOOD = "From: s@x.example\r\nTo: r@x.example,\r\n q@x.example\r\nSubject: hi"
INJECTED = {
    "bcc-after-subject": GOOD + "\r\nBcc: victim@example.com",
    "bare-lf": GOOD.replace("hi", "hi\nBcc: victim@example.com"),
    "bare-cr": GOOD.replace("hi", "hi\rX: y"),
    "nul": GOOD.replace("hi", "h\x00i"),
    "line-separator": GOOD.replace("hi", "h\u2028i"),
    "line-over-998": GOOD.replace("hi", "h" * 999),
    "non-ascii": GOOD.replace("hi", "h\u00e9"),
    "header-without-colon": GOOD.replace("To: ", "To "),
    "empty-name": GOOD.replace("To: ", ": "),
    "space-in-name": GOOD.replace("To: ", "T o: "),
    "continuation-first": " folded\r\n" + GOOD,
    "blank-continuation": GOOD.replace("\r\n q@", "\r\n  \r\n q@"),
    "empty-line": GOOD.replace("\r\nSubject", "\r\n\r\nSubject"),
}


def test_raw_utf8_only_in_an_address_field_and_only_with_smtputf8() -> None:
    assert check_header("To: jürgen@x.example\r\nSubject: a", utf8=True) == ["To", "Subject"]
    for block, utf8 in (
        ("To: jürgen@x.example", False),
        ("Subject: Grüße", True),
        ("To: a@x.example,\r\n jürgen@x.example", False),
    ):
        with pytest.raises(MessageRefused, match="not ASCII"):
            check_header(block, utf8)


@pytest.mark.parametrize(
    ("name", "declared", "sent"),
    [("vm.wav", "", "audio/x-wav"), ("call.eml", "", "application/octet-stream"),
     ("a.bin", "message/rfc822", "application/octet-stream"),
     ("b.bin", "multipart/mixed", "application/octet-stream"),
     ("c.pdf", "application/pdf; x=y", "application/octet-stream"),
     ("d.unknown-type", "", "application/octet-stream"),
     ("e.txt.gz", "", "application/octet-stream")],
    ids=["guessed", "eml", "message", "multipart", "parameters", "unknown", "compressed"],
)  # fmt: skip
def test_the_content_type_is_one_base64_may_carry(name: str, declared: str, sent: str) -> None:
    job = job_of(attachments=(Attachment("/a", 4, 0, filename=name, content_type=declared),))
    attachment = attachments_of(parsed(write(job, [b"data"]))[1])
    assert attachment == [(name, name, b"data", sent)]


@pytest.mark.parametrize("block", list(INJECTED.values()), ids=list(INJECTED))
def test_the_header_check_refuses_injected_variants(block: str) -> None:
    assert check_header(GOOD, utf8=False) == ["From", "To", "Subject"]
    try:
        names = check_header(block, utf8=False)
    except MessageRefused:
        return
    assert names != ["From", "To", "Subject"]  # another field: the writer refuses that too


def test_the_writer_refuses_a_field_that_would_hold_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer, "unstructured", lambda name, text: f"{name}: a\r\nBcc: v@x.example")
    with pytest.raises(MessageRefused, match="differ"):
        write(job_of(), [])


def test_a_record_that_skipped_the_api_checks_is_refused() -> None:
    injection = "=?utf-8?q?Invoice=0D=0AFrom:_CEO_<ceo@bank.example>?="
    for job in (
        job_of(subject=injection),
        job_of(subject="a\u2028b"),
        job_of(recipients=("=?utf-8?q?a?=@x.example",)),
        job_of(attachments=(Attachment("/nowhere/a\x0bb.txt", 1, 0),)),
    ):
        with pytest.raises(ValueError, match=r"control character|encoded word|not reach"):
            write(job, [b"x"] * len(job.attachments))


# --- attachments from files, sizes, memory --------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve()


def test_a_file_is_encoded_from_disk_in_chunks(root: Path) -> None:
    data = bytes(range(256)) * (2 * writer.CHUNK // 256) + b"tail" * 333
    (root / "big.bin").write_bytes(data)
    attachment = check_path(str(root / "big.bin"), (root,))
    job = job_of(attachments=(attachment,))
    wire = render(job, HOST, lambda a: open_checked(a, (root,)), 1 << 26)
    check_message(
        wire, replace(job, attachments=(replace(attachment, filename="big.bin"),)), [data]
    )


@pytest.mark.parametrize("delta", [1, -1], ids=["grew", "shrank"])
def test_a_file_that_is_not_its_size_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch, delta: int
) -> None:
    (root / "a.bin").write_bytes(b"x" * 1000)
    job = job_of(attachments=(check_path(str(root / "a.bin"), (root,)),))
    monkeypatch.setattr(writer, "_size_of", lambda source: 1000 + delta)
    with pytest.raises(AttachmentRefused, match="changed"):
        render(job, HOST, lambda a: open_checked(a, (root,)), 1 << 20)


def test_the_size_limit_is_on_the_exact_bytes_and_files_are_closed(root: Path) -> None:
    (root / "a.bin").write_bytes(b"x" * 30_000)
    job = job_of(attachments=(check_path(str(root / "a.bin"), (root,)),))
    opened: list[io.BufferedReader] = []

    def read(attachment: Attachment) -> io.BufferedReader:
        opened.append(open_checked(attachment, (root,)))
        return opened[-1]

    size = len(render(job, HOST, read, 1 << 20))
    assert render(job, HOST, read, size)  # exactly at the limit: sent
    with pytest.raises(MessageRefused, match="MAILGATE_MAX_EMAIL_BYTES"):
        render(job, HOST, read, size - 1)
    assert all(handle.closed for handle in opened) and len(opened) == 3


def test_writing_holds_one_encoded_copy(root: Path) -> None:
    (root / "big.wav").write_bytes(b"\x01\x02\x03" * 2_000_000)  # 6 MB, 8.1 MB encoded
    job = job_of(attachments=(check_path(str(root / "big.wav"), (root,)),))
    tracemalloc.start()
    try:
        wire = render(job, HOST, lambda a: open_checked(a, (root,)), 1 << 26)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(wire) > 8_000_000
    # The message itself, plus a chunk read and its encoded lines: nothing of the message's size.
    assert peak < len(wire) + 4 * writer.CHUNK


def test_the_worker_fails_an_oversized_email_with_its_cause(settings: Settings) -> None:
    delivery = Delivery(store=None, transport=None, settings=replace(settings, max_email_bytes=100))  # type: ignore[arg-type]
    with pytest.raises(PermanentDelivery, match="MAILGATE_MAX_EMAIL_BYTES"):
        delivery._render(job_of())


@hyp_settings(max_examples=examples(500), deadline=None)
@given(
    st.one_of(
        st.sampled_from(NAMES), st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
    ),
    st.sampled_from(LOCALS),
    st.sampled_from(DOMAINS),
    st.booleans(),
)
def test_the_written_form_splits_as_the_email_package_reads_it(
    name: str, local: str, domain: str, quote: bool
) -> None:
    try:
        text = mailbox(name, f"{local}@{domain}")
        text = f'"{name}" <{local}@{domain}>' if quote and '"' not in name else text
        expected = parse_mailbox(text)
    except ValueError:
        return  # what the email package refuses, the API refuses (a non-ASCII local part)
    event("read without the parser" if addresses_module._WRITTEN.fullmatch(text) else "parsed")
    assert split(text) == expected
