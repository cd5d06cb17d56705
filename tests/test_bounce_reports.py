"""Reading bounce reports: hand-written samples of each major MTA's format, written from their
documented shapes (RFC 3464 DSNs of Postfix, Microsoft 365 and Gmail; the plain-text reports of
qmail, classic Exim and old Exchange), and what is no bounce at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.bounces.report import read
from mailgate.bounces.verp import email_id_of, is_bounce_recipient, return_path
from mailgate.status import Bounce
from mailgate.status.bounces import suppresses

SAMPLES = Path(__file__).parent / "samples" / "bounces"
HOST = "mailgate.local"
BOUNCES = "bounces@bounce.shop.example"
NOW = 1796220000.0


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "address", "action", "code", "words", "email_id"),
    [
        (
            "postfix.eml",
            "j.smith@gmial.com",
            "failed",
            "5.1.1",
            "550 5.1.1 <j.smith@gmial.com>: Recipient address rejected: User unknown in virtual "
            "mailbox table",
            "6b5c6978-0cd6-4a58-86fc-3d1b279b9208",
        ),
        (
            "postfix-delayed.eml",
            "slow@busy.example",
            "delayed",
            "4.4.1",
            "connect to mx.busy.example[192.0.2.80]:25: Connection timed out",
            "6b5c6978-0cd6-4a58-86fc-3d1b279b9208",
        ),
        (
            "m365.eml",
            "nobody@contoso.example",
            "failed",
            "5.1.10",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient nobody@contoso.example not "
            "found by SMTP address lookup",
            "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        ),
        (
            "gmail.eml",
            "no.such.person@gmail.com",
            "failed",
            "5.1.1",
            "550 5.1.1 The email account that you tried to reach does not exist. Please try "
            "double-checking",
            "2c7e9b14-8a3d-4f60-b5c2-9d0e1f2a3b4c",
        ),
        (
            "exim.eml",
            "nobody@exim.example",
            "failed",
            "5.1.1",
            "550 5.1.1 <nobody@exim.example>: Recipient address rejected: User unknown",
            "0d9e5a40-7b1f-4c2e-9a51-3e6f8b2c1d07",
        ),
        (
            "qmail.eml",
            "gone@qmail.example",
            "failed",
            "5.1.1",
            "Sorry, no mailbox here by that name. (#5.1.1)",
            "f3a2c1d0-5e4b-4a39-8c27-16d5e4f3a2b1",
        ),
        (
            "exchange-2003.eml",
            "former.employee@legacy.example",
            "failed",
            "5.0.0",
            "The recipient name is not recognized",
            "9e8d7c6b-5a49-4382-9170-a1b2c3d4e5f6",
        ),
    ],
    ids=["postfix", "postfix-delayed", "microsoft-365", "gmail", "exim", "qmail", "exchange-2003"],
)
def test_each_mta_format_gives_recipient_code_diagnostic_and_email(
    name: str, address: str, action: str, code: str, words: str, email_id: str
) -> None:
    report = read(sample(name), HOST, BOUNCES, now=NOW)
    assert report is not None
    [reported] = report.recipients
    assert reported.addresses[0] == address
    assert (reported.bounce.action, reported.bounce.code) == (action, code)
    assert words in reported.bounce.reason
    assert report.email_ids[0] == email_id


def test_the_time_is_the_reports_last_attempt_else_now() -> None:
    gmail = read(sample("gmail.eml"), HOST, BOUNCES, now=NOW)
    qmail = read(sample("qmail.eml"), HOST, BOUNCES, now=NOW)
    assert gmail is not None and qmail is not None
    assert gmail.recipients[0].bounce.at == 1796207400.0  # Last-Attempt-Date, 10:30:00 UTC
    assert qmail.recipients[0].bounce.at == NOW


@pytest.mark.parametrize(
    "name",
    ["out-of-office.eml", "vacation-unmarked.eml", "delivered.eml"],
    ids=["out-of-office", "vacation-by-subject", "success-notice"],
)
def test_auto_replies_and_success_notices_are_no_bounce(name: str) -> None:
    # Each of them names the e-mail (In-Reply-To, VERP): still nothing to record.
    assert read(sample(name), HOST, BOUNCES, now=NOW) is None


def test_a_person_writing_back_is_no_bounce() -> None:
    data = (
        b"From: jane@customer.example\r\nTo: receipts@shop.example\r\nSubject: Re: Your receipt"
        b"\r\nIn-Reply-To: <6b5c6978-0cd6-4a58-86fc-3d1b279b9208@mailgate.local>\r\n\r\n"
        b"Thanks, but the amount is wrong.\r\n"
    )
    assert read(data, HOST, BOUNCES, now=NOW) is None


def test_the_verp_recipient_wins_over_ids_quoted_in_the_text() -> None:
    data = sample("qmail.eml").replace(
        b"Message-ID: <f3a2c1d0",
        b"Message-ID: <99999999-5e4b-4a39-8c27-16d5e4f3a2b1@x>\nX-Other: <f3a2c1d0",
    )
    other = "11111111-2222-4333-8444-555555555555"
    report = read(data, HOST, BOUNCES, envelope_to=[return_path(BOUNCES, other)], now=NOW)
    assert report is not None
    assert report.email_ids[0] == other


def test_a_report_without_verp_is_matched_by_the_returned_message_id() -> None:
    # Microsoft 365 forced the envelope sender to the mailbox: only the returned message says.
    report = read(sample("m365.eml"), HOST, bounce_address="", now=NOW)
    assert report is not None
    assert report.email_ids == ("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",)


def test_message_ids_of_another_host_are_not_ours() -> None:
    report = read(sample("m365.eml"), "other.host", bounce_address="", now=NOW)
    assert report is not None and report.email_ids == ()


@pytest.mark.parametrize(
    ("address", "ours", "email_id"),
    [
        (
            "bounces+6b5c6978-0cd6-4a58-86fc-3d1b279b9208@bounce.shop.example",
            True,
            "6b5c6978-0cd6-4a58-86fc-3d1b279b9208",
        ),
        (
            "<BOUNCES+6B5C6978-0CD6-4A58-86FC-3D1B279B9208@Bounce.Shop.Example>",
            True,
            "6b5c6978-0cd6-4a58-86fc-3d1b279b9208",
        ),
        ("bounces@bounce.shop.example", True, None),
        ("bounces+anything@bounce.shop.example", True, None),
        ("bounces+@bounce.shop.example", False, None),
        ("other+6b5c6978-0cd6-4a58-86fc-3d1b279b9208@bounce.shop.example", False, None),
        ("bounces@elsewhere.example", False, None),
    ],
    ids=["verp", "any-case", "plain", "tag", "empty-tag", "other-local", "other-domain"],
)
def test_verp_addresses(address: str, ours: bool, email_id: str | None) -> None:
    assert is_bounce_recipient(address, BOUNCES) is ours
    assert email_id_of(address, BOUNCES) == email_id


def test_the_return_path_carries_the_email_id() -> None:
    assert return_path(BOUNCES, "abc") == "bounces+abc@bounce.shop.example"


@pytest.mark.parametrize(
    ("action", "code", "reason", "suppressed"),
    [
        ("failed", "5.1.1", "User unknown", True),
        ("failed", "5.1.10", "RecipientNotFound", True),
        ("failed", "5.4.4", "Host or domain name not found", True),
        ("failed", "5.2.1", "mailbox disabled", True),
        ("failed", "5.0.0", "The recipient name is not recognized", True),
        ("failed", "5.0.0", "message rejected", False),
        ("failed", "5.2.2", "mailbox full", False),
        ("failed", "5.7.1", "rejected by policy", False),
        ("failed", "4.4.1", "gave up: connection timed out", False),
        ("delayed", "4.2.2", "mailbox full", False),
    ],
    ids=[
        "5.1.1",
        "5.1.10",
        "5.4.4",
        "5.2.1",
        "generic-unknown-words",
        "generic",
        "full",
        "policy",
        "expired-soft",
        "delayed",
    ],
)
def test_only_hard_user_unknown_bounces_suppress(
    action: str, code: str, reason: str, suppressed: bool
) -> None:
    assert suppresses(Bounce(action, code, reason, NOW)) is suppressed
