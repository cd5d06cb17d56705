"""The worker's fast MIME path writes exactly the bytes render writes, or stands aside, and its
bytes are checked before they are sent."""

from __future__ import annotations

import random
import string
from dataclasses import replace
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import pytest

from mailgate.config import Settings
from mailgate.errors import PermanentDelivery
from mailgate.jobs import Attachment, EmailJob
from worker import fastmime
from worker.batch import FastDelivery
from worker.message import MessageRefused, render

HOST = "mailgate.local"


def _slow(job: EmailJob, host: str = HOST) -> bytes:
    return render(job, host, lambda a: b"data", 1 << 20)


def _undated(wire: bytes) -> tuple[bytes, bytes]:
    head, _, rest = wire.partition(b"\r\nDate: ")
    date, _, tail = rest.partition(b"\r\n")
    return head + b"\r\n" + tail, date


def _job(**changes: object) -> EmailJob:
    base: dict[str, object] = {
        "email_id": "3f2a9c", "owner": "acct", "sender": "mailgate@localhost",
        "recipients": ("someone@example.com",), "message": "Hello\nworld",
        "subject": "Voicemail from +44 20 7946 0000 (0:42)",
    }  # fmt: skip
    base.update(changes)
    return EmailJob(**base)  # type: ignore[arg-type]


SIMPLE = {
    "voicemail": _job(),
    "no-subject": _job(subject=""),
    "two-recipients": _job(recipients=("a.b+c@x-y.example", "d@e.example")),
    "crlf-and-cr-body": _job(message="one\r\ntwo\rthree\n\nfour\n"),
    "line-of-78": _job(message="x" * 78 + "\nend"),
    "dot-lines": _job(message=".\n..\n.hidden\nFrom me\n"),
    "empty-body": _job(message=""),
    "symbols-subject": _job(subject="[ticket #42] Re: call-back; 50% <urgent> {x}"),
    "tab-in-body": _job(message="a\tb"),
    "uuid-id": _job(email_id="0b7e1c2d-9f1a-4c3b-8e2d-1a2b3c4d5e6f"),
}  # fmt: skip


@pytest.mark.parametrize("job", list(SIMPLE.values()), ids=list(SIMPLE))
def test_simple_emails_are_written_byte_for_byte_as_build_message(job: EmailJob) -> None:
    fast = fastmime.wire_bytes(job, HOST)
    assert fast is not None
    assert _undated(fast)[0] == _undated(_slow(job))[0]


def test_the_date_reads_as_the_email_package_writes_it() -> None:
    fast = fastmime.wire_bytes(_job(), HOST, now=1_800_000_000.7)
    assert fast is not None
    date = _undated(fast)[1].decode()
    assert date == format_datetime(parsedate_to_datetime(date))  # "+0000", as the registry
    assert date == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert _undated(_slow(_job()))[1].endswith(b"+0000")


OTHERS = {
    "attachment": _job(attachments=(Attachment("/srv/a.pdf", 4, 1),)),
    "unicode-subject": _job(subject="Rückruf"),
    "unicode-body": _job(message="Grüße"),
    "unicode-address": _job(recipients=("jörg@example.com",)),
    "idn-domain": _job(recipients=("a@bücher.example",)),
    "header-injection-subject": _job(subject="hi\r\nBcc: victim@example.com"),
    "lf-in-subject": _job(subject="hi\nthere"),
    "encoded-word-subject": _job(subject="=?utf-8?q?hi?="),
    "double-space-subject": _job(subject="a  b"),
    "trailing-space-subject": _job(subject="a "),
    "long-subject": _job(subject="word " * 16 + "end"),
    "long-body-line": _job(message="x" * 79),
    "display-name": _job(recipients=("Someone <s@example.com>",)),
    "quoted-local": _job(recipients=('"a b"@example.com',)),
    "many-recipients": _job(recipients=tuple(f"user{i}@example.com" for i in range(5))),
    "cc": _job(cc=("c@example.com",)),
    "bcc": _job(bcc=("b@example.com",)),
    "reply-to": _job(reply_to=("r@example.com",)),
    "html": _job(html="<p>hi</p>"),
    "display-name-sender": _job(sender="IVR <ivr@example.com>"),
    "nul-in-body": _job(message="a\x00b"),
    "form-feed-in-body": _job(message="a\x0cb"),
}  # fmt: skip


@pytest.mark.parametrize("job", list(OTHERS.values()), ids=list(OTHERS))
def test_anything_else_is_left_to_build_message(job: EmailJob) -> None:
    assert fastmime.wire_bytes(job, HOST) is None


def test_random_simple_emails_match() -> None:
    rng = random.Random(12)
    atext = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
    printable = string.ascii_letters + string.digits + string.punctuation
    checked = 0
    for _ in range(300):
        local = ".".join("".join(rng.choices(atext, k=rng.randint(1, 8))) for _ in range(2))
        domain = ".".join("".join(rng.choices(string.ascii_lowercase, k=4)) for _ in range(2))
        words = ["".join(rng.choices(printable, k=rng.randint(1, 9))) for _ in range(4)]
        lines = ["".join(rng.choices(printable + " ", k=rng.randint(0, 78))) for _ in range(6)]
        job = _job(
            sender=f"{local}@{domain}",
            recipients=(f"r{rng.randint(0, 99)}@{domain}",),
            subject=" ".join(words),
            message=rng.choice(["\n", "\r\n", "\r"]).join(lines),
        )
        fast = fastmime.wire_bytes(job, HOST)
        try:
            slow = _slow(job)
        except (ValueError, TypeError):  # refused by render: the fast path must not send it
            assert fast is None, job
            continue
        if fast is None:
            continue
        checked += 1
        assert _undated(fast)[0] == _undated(slow)[0], job
        fastmime.check(fast, fastmime.expected_names(job))
    assert checked > 200  # the comparison really ran on most of them


def test_self_check_turns_the_fast_path_off_when_the_builders_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fastmime.self_check(HOST)
    monkeypatch.setattr(fastmime, "_BODY_TAIL", fastmime._BODY_TAIL.replace(b"7bit", b"8bit"))
    try:
        assert not fastmime.self_check(HOST)
        assert fastmime.wire_bytes(_job(), HOST) is None
    finally:
        monkeypatch.undo()
        assert fastmime.self_check(HOST)


def _fast(job: EmailJob) -> bytes:
    fast = fastmime.wire_bytes(job, HOST)
    assert fast is not None
    return fast


def _inject(old: bytes, new: bytes) -> bytes:
    data = _fast(_job())
    assert old in data
    return data.replace(old, new, 1)


INJECTED = {
    "bcc-after-subject": _inject(b"(0:42)\r\n", b"(0:42)\r\nBcc: victim@example.com\r\n"),
    "bare-lf-in-subject": _inject(b"(0:42)", b"(0:42)\nBcc: victim@example.com"),
    "bare-cr-in-subject": _inject(b"(0:42)", b"(0:42)\rX: y"),
    "nul-in-body": _inject(b"Hello", b"Hel\x00lo"),
    "line-over-998": _inject(b"Hello", b"H" * 999),
    "non-ascii": _inject(b"Hello", "H\u00e9llo".encode()),
    "header-without-colon": _inject(b"To: ", b"To "),
    "empty-name": _inject(b"To: ", b": "),
    "space-in-name": _inject(b"To: ", b"T o: "),
    "missing-subject": _inject(b"Subject: Voicemail from +44 20 7946 0000 (0:42)\r\n", b""),
    "swapped-order": _inject(b"From: mailgate@localhost\r\nTo: someone@example.com",
                             b"To: someone@example.com\r\nFrom: mailgate@localhost"),
    "body-in-header": _inject(b"MIME-Version: 1.0\r\n\r\n", b"MIME-Version: 1.0\r\n"),
    "continuation-first": b" folded\r\n" + _fast(_job()),
    "no-header-end": _fast(_job()).replace(b"\r\n\r\n", b"\r\n"),
}  # fmt: skip


@pytest.mark.parametrize("data", list(INJECTED.values()), ids=list(INJECTED))
def test_the_cheap_check_refuses_injected_variants(data: bytes) -> None:
    with pytest.raises(MessageRefused):
        fastmime.check(data, fastmime.expected_names(_job()))


@pytest.mark.parametrize("job", list(SIMPLE.values()), ids=list(SIMPLE))
def test_the_cheap_check_accepts_what_the_fast_path_writes(job: EmailJob) -> None:
    fastmime.check(_fast(job), fastmime.expected_names(job))
    folded = _fast(job).replace(b"\r\nTo: ", b"\r\nTo:\r\n ", 1)  # a folded field is fine
    fastmime.check(folded, fastmime.expected_names(job))


class _Store:
    pass


def _delivery(**settings: Any) -> FastDelivery:
    base = replace(Settings.from_env({"MAILGATE_REDIS_URL": "redis://127.0.0.1:1/0"}), **settings)
    return FastDelivery(store=_Store(), transport=_Store(), settings=base)  # type: ignore[arg-type]


def test_the_worker_sends_the_fast_bytes_for_a_simple_email_and_render_for_others() -> None:
    delivery = _delivery(message_id_host=HOST)
    fast = delivery._render(_job())
    assert _undated(fast)[0] == _undated(_slow(_job()))[0]
    with_cc = _job(cc=("c@example.com",))
    assert b"\r\nCc: c@example.com\r\n" in delivery._render(with_cc)  # render's own


def test_the_worker_refuses_fast_bytes_that_fail_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delivery = _delivery(message_id_host=HOST)
    injected = INJECTED["bcc-after-subject"]
    monkeypatch.setattr(fastmime, "wire_bytes", lambda job, host, now=None: injected)
    with pytest.raises(PermanentDelivery, match="message refused"):
        delivery._render(_job())


def test_an_oversized_simple_email_is_refused_by_render() -> None:
    delivery = _delivery(message_id_host=HOST, max_email_bytes=100)
    with pytest.raises(PermanentDelivery, match="MAILGATE_MAX_EMAIL_BYTES"):
        delivery._render(_job())
