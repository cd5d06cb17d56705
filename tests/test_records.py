"""One presentation of the status record: Ozeki XML, REST JSON, ``mailgate status`` and the
delivery report all adapt Record.fields(), and each output keeps its exact form."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

import api.ozeki
import mailgate.status
from api.rest import _status_body
from mailgate.cli import commands as cli
from mailgate.status import AttemptLog, Record, ReportStatus, Status, iso
from mailgate.status.records import rcpt_json
from mailgate.users import Account
from worker.report_http import form_body

T0 = 1700000000.0  # 2023-11-14T22:13:20Z
RETRYING = Record(
    email_id="id-1",
    owner="shop",
    status=Status.RETRYING,
    attempts=2,
    created_at=T0,
    updated_at=T0 + 2.5,
    since=T0,
    next_attempt_at=T0 + 60.25,
    last_error="451 later",
    smtp_response="451 4.3.0 later",
)
HISTORY = [
    AttemptLog(1, T0 + 1.125, Status.RETRYING, "451 first"),
    AttemptLog(2, T0 + 2.5, Status.RETRYING, "451 later"),
]
QUEUED = Record(
    email_id="id-0",
    owner="shop",
    status=Status.QUEUED,
    attempts=0,
    created_at=T0,
    updated_at=T0,
    since=T0,
)
SENT = replace(
    RETRYING,
    status=Status.SENT,
    attempts=3,
    sent_at=T0 + 90,
    next_attempt_at=None,
    smtp_response="250 ok & done",
    report_status=ReportStatus.DELIVERED,
    updated_at=T0 + 90,
)

BOUNCED = replace(
    SENT,
    status=Status.BOUNCED,
    rcpt=rcpt_json(
        [
            ("J.Smith@gmial.com", True, "250 2.1.5 Ok"),
            ("ops@shop.example", False, "550 5.1.1 No such user"),
        ]
    ),
    bounces=json.dumps(
        {
            "j.smith@gmial.com": {
                "action": "failed",
                "code": "5.1.1",
                "reason": "550 5.1.1 User unknown",
                "at": T0 + 120,
            }
        }
    ),
    bounce_code="5.1.1",
    bounce_reason="550 5.1.1 User unknown",
    bounced_at=T0 + 120,
)


@pytest.mark.parametrize(
    ("timestamp", "zone", "text"),
    [(T0, "Z", "2023-11-14T22:13:20.000Z"), (T0 + 0.5, "+00:00", "2023-11-14T22:13:20.500+00:00"),
     (0.0, "Z", "1970-01-01T00:00:00.000Z")],
    ids=["z", "offset", "epoch"],
)  # fmt: skip
def test_iso_is_utc_with_milliseconds(timestamp: float, zone: str, text: str) -> None:
    assert iso(timestamp, zone) == text


def ozeki(record: Record, history: list[AttemptLog], monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(api.ozeki, "status_of", lambda *_: (record, history))
    svc: Any = None
    fields = api.ozeki.get_email_status(
        {"emailid": record.email_id}, Account("shop", "unused"), svc
    )
    return api.ozeki.render(200, api.ozeki.SUCCESS_MESSAGE, fields)


def test_the_ozeki_status_shows_known_fields_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    body = ozeki(RETRYING, HISTORY, monkeypatch)
    assert body == (
        b'<?xml version="1.0" encoding="utf-8"?><Response><Code>200</Code>'
        b"<Message>Command successfully executed</Message><EmailId>id-1</EmailId>"
        b"<Status>Retrying</Status><Attempts>2</Attempts>"
        b"<CreatedAt>2023-11-14T22:13:20.000Z</CreatedAt>"
        b"<UpdatedAt>2023-11-14T22:13:22.500Z</UpdatedAt>"
        b"<NextAttemptAt>2023-11-14T22:14:20.250Z</NextAttemptAt>"
        b"<LastError>451 later</LastError><SmtpResponse>451 4.3.0 later</SmtpResponse>"
        b"<History><Attempt><Number>1</Number><At>2023-11-14T22:13:21.125Z</At>"
        b"<Outcome>Retrying</Outcome><Detail>451 first</Detail></Attempt>"
        b"<Attempt><Number>2</Number><At>2023-11-14T22:13:22.500Z</At>"
        b"<Outcome>Retrying</Outcome><Detail>451 later</Detail></Attempt></History></Response>"
    )


def test_a_new_email_shows_zero_attempts_and_no_history(monkeypatch: pytest.MonkeyPatch) -> None:
    root = ET.fromstring(ozeki(QUEUED, [], monkeypatch))
    assert [child.tag for child in root] == [
        "Code",
        "Message",
        "EmailId",
        "Status",
        "Attempts",
        "CreatedAt",
        "UpdatedAt",
    ]
    assert root.findtext("Attempts") == "0"


def test_the_rest_status_has_every_field_in_snake_case() -> None:
    assert _status_body(SENT, HISTORY[:1]) == {
        "id": "id-1",
        "status": "Sent",
        "attempts": 3,
        "created_at": "2023-11-14T22:13:20.000Z",
        "updated_at": "2023-11-14T22:14:50.000Z",
        "sent_at": "2023-11-14T22:14:50.000Z",
        "next_attempt_at": None,
        "last_error": "451 later",
        "smtp_response": "250 ok & done",
        "relay": None,
        "bounce_code": None,
        "bounce_reason": None,
        "bounced_at": None,
        "delivery_report": "Delivered",
        "recipients": [],
        "history": [
            {
                "attempt": 1,
                "at": "2023-11-14T22:13:21.125Z",
                "outcome": "Retrying",
                "detail": "451 first",
            },
        ],
    }
    assert list(_status_body(QUEUED, []))[:3] == ["id", "status", "attempts"]


class FakeStore:
    def get(self, email_id: str) -> Record:
        return SENT

    def history(self, email_id: str) -> list[AttemptLog]:
        return HISTORY


def test_the_cli_status_lists_the_owner_and_times_with_an_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unused = SimpleNamespace(redis_url="redis://unused", status_ttl_seconds=1)
    monkeypatch.setattr(cli, "_settings", lambda: unused)  # the store is faked
    monkeypatch.setattr(mailgate.status.StatusStore, "from_url", lambda *_: FakeStore())
    result = CliRunner().invoke(cli.main, ["status", "id-1"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("mailgate: Redis redis://unused (")  # which Redis it asked
    assert result.stdout == (
        "EmailId: id-1\nOwner: shop\nStatus: Sent\nAttempts: 3\n"
        "CreatedAt: 2023-11-14T22:13:20.000+00:00\nUpdatedAt: 2023-11-14T22:14:50.000+00:00\n"
        "SentAt: 2023-11-14T22:14:50.000+00:00\nLastError: 451 later\n"
        "SmtpResponse: 250 ok & done\nDeliveryReport: Delivered\n"
        "  attempt 1 at 2023-11-14T22:13:21.125+00:00: Retrying: 451 first\n"
        "  attempt 2 at 2023-11-14T22:13:22.500+00:00: Retrying: 451 later\n"
    )


@pytest.mark.parametrize(
    "given",
    [
        "6B5C6978-0CD6-4A58-86FC-3D1B279B9208",
        " 6b5c6978-0cd6-4a58-86fc-3d1b279b9208\t",
        "{6B5C6978-0CD6-4A58-86FC-3D1B279B9208}",
    ],
    ids=["upper-case", "blanks", "braces"],
)
def test_the_cli_reads_an_email_id_in_any_case(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    asked: list[str] = []
    store = FakeStore()
    monkeypatch.setattr(store, "get", lambda email_id: asked.append(email_id) or SENT)
    unused = SimpleNamespace(redis_url="redis://unused", status_ttl_seconds=1)
    monkeypatch.setattr(cli, "_settings", lambda: unused)
    monkeypatch.setattr(mailgate.status.StatusStore, "from_url", lambda *_: store)
    assert CliRunner().invoke(cli.main, ["status", given]).exit_code == 0
    assert asked == ["6b5c6978-0cd6-4a58-86fc-3d1b279b9208"]


@pytest.mark.parametrize(
    ("record", "body"),
    [
        (SENT, b"NotificationName=EmailDeliveryReport&EmailId=id-1&Status=Sent&Attempts=3"
               b"&Time=2023-11-14T22%3A14%3A50.000Z&Reason=&SmtpResponse=250+ok+%26+done"),
        (replace(RETRYING, status=Status.FAILED),
         b"NotificationName=EmailDeliveryReport&EmailId=id-1&Status=Failed&Attempts=2"
         b"&Time=2023-11-14T22%3A13%3A22.500Z&Reason=451+later&SmtpResponse=451+4.3.0+later"),
        (replace(QUEUED, status=Status.FAILED),
         b"NotificationName=EmailDeliveryReport&EmailId=id-0&Status=Failed&Attempts=0"
         b"&Time=2023-11-14T22%3A13%3A20.000Z&Reason=&SmtpResponse="),
    ],
    ids=["sent", "failed", "failed-without-reply"],
)  # fmt: skip
def test_the_delivery_report_form(record: Record, body: bytes) -> None:
    assert form_body(record) == body


def test_a_bounce_shows_its_code_reason_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    root = ET.fromstring(ozeki(BOUNCED, [], monkeypatch))
    tags = [child.tag for child in root]
    assert tags[tags.index("SmtpResponse") + 1 :] == [
        "BounceCode",
        "BounceReason",
        "BouncedAt",
        "DeliveryReport",
    ]
    assert root.findtext("Status") == "Bounced"
    assert root.findtext("BounceCode") == "5.1.1"
    assert root.findtext("BounceReason") == "550 5.1.1 User unknown"
    assert root.findtext("BouncedAt") == "2023-11-14T22:15:20.000Z"


def test_the_rest_status_lists_each_recipients_outcome() -> None:
    body = _status_body(BOUNCED, [])
    assert (body["status"], body["bounce_code"]) == ("Bounced", "5.1.1")
    assert body["recipients"] == [
        {
            "address": "J.Smith@gmial.com",
            "rcpt": "accepted",
            "rcpt_reply": "250 2.1.5 Ok",
            "bounce": "failed",
            "bounce_code": "5.1.1",
            "bounce_reason": "550 5.1.1 User unknown",
            "bounced_at": "2023-11-14T22:15:20.000Z",
        },
        {
            "address": "ops@shop.example",
            "rcpt": "refused",
            "rcpt_reply": "550 5.1.1 No such user",
            "bounce": None,
            "bounce_code": None,
            "bounce_reason": None,
            "bounced_at": None,
        },
    ]


def test_the_delivery_report_of_a_bounce_says_why_and_when() -> None:
    assert form_body(BOUNCED) == (
        b"NotificationName=EmailDeliveryReport&EmailId=id-1&Status=Bounced&Attempts=3"
        b"&Time=2023-11-14T22%3A15%3A20.000Z&Reason=550+5.1.1+User+unknown"
        b"&SmtpResponse=250+ok+%26+done&BounceCode=5.1.1"
    )
