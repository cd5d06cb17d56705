"""The /api endpoint through Flask's test client, against the real Redis: every code."""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.users import UserStore
from tests.conftest import (
    LIMITED_PASSWORD,
    LIMITED_USER,
    OTHER_PASSWORD,
    OTHER_USER,
    SEED_PASSWORD,
    SEED_USER,
    MakeApp,
)
from tests.support import RedisServer, count_records, free_port

SEED = {"Username": SEED_USER, "Password": SEED_PASSWORD}


def parse(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    assert root.tag == "Response"
    return {child.tag: child.text or "" for child in root}


def records(redis_server: RedisServer) -> int:
    return count_records(redis_server.client())


def send(**params: str) -> dict[str, str]:
    return {"command": "SendEmail", "Recipient": "abc@anotherdomain.com", "Message": "Hi", **params}


def test_success_answers_xml_with_an_email_id(client: FlaskClient) -> None:
    response = client.get("/api", query_string=send(**SEED))
    assert response.status_code == 200
    assert response.content_type == "application/xml; charset=utf-8"
    assert response.data.startswith(b'<?xml version="1.0" encoding="utf-8"?><Response>')
    body = parse(response.data)
    assert body["Code"] == "200"
    assert body["Message"] == "Command successfully executed"
    assert len(body["EmailId"]) == 36


def test_names_are_case_insensitive_and_post_form_is_merged(client: FlaskClient) -> None:
    response = client.post(
        "/api?COMMAND=sendemail&username=" + SEED_USER,
        data={"PASSWORD": SEED_PASSWORD, "recipient": "a@b.example", "mEsSaGe": "x"},
    )
    assert parse(response.data)["Code"] == "200"


def test_basic_auth_is_accepted(client: FlaskClient) -> None:
    token = base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()
    response = client.get("/api", query_string=send(), headers={"Authorization": f"Basic {token}"})
    assert parse(response.data)["Code"] == "200"


def _fifo(root: Path) -> str:
    path = root / "a-fifo"
    if not path.exists():
        os.mkfifo(path)
    return str(path)


def _outside(root: Path) -> str:
    link = root / "escape.txt"
    if not link.exists():
        link.symlink_to("/etc/hostname")
    return str(link)


ERROR_CASES = [
    # %FF%FE is windows-1252 (the legacy charset); %81 is in no charset of the two.
    (
        "neither-utf8-nor-legacy",
        "/api?command=SendEmail&Message=%ff%81",
        None,
        300,
        "Error occured during parsing message: 'the request is neither UTF-8 nor windows-1252 "
        "(MAILGATE_LEGACY_CHARSET): declare its charset'",
    ),
    (
        "unknown-command",
        "/api?command=MakeCoffee",
        None,
        301,
        "Not implemented command: 'MakeCoffee'",
    ),
    (
        "no-command",
        "/api?Recipient=a@b.example",
        None,
        302,
        "Missing or invalid parameter 'command' for command ''",
    ),
    (
        "no-recipient",
        None,
        send(Recipient="", **SEED),
        302,
        "Missing or invalid parameter 'Recipient' for command 'SendEmail'",
    ),
    (
        "bad-recipient",
        None,
        send(Recipient="not-an-address", **SEED),
        302,
        "Missing or invalid parameter 'Recipient' for command 'SendEmail'",
    ),
    (
        "51-recipients",
        None,
        send(Recipient=";".join(f"r{i}@x.example" for i in range(51)), **SEED),
        302,
        "Missing or invalid parameter 'Recipient' for command 'SendEmail'",
    ),
    (
        "crlf-recipient",
        None,
        send(Recipient="a@b.example\r\nBcc: c@d.example", **SEED),
        302,
        "Missing or invalid parameter 'Recipient' for command 'SendEmail'",
    ),
    (
        "no-message",
        None,
        send(Message="", **SEED),
        302,
        "Missing or invalid parameter 'Message' for command 'SendEmail'",
    ),
    (
        "crlf-subject",
        None,
        send(Subject="Hi\r\nBcc: victim@x.example", **SEED),
        302,
        "Missing or invalid parameter 'Subject' for command 'SendEmail'",
    ),
    (
        "lf-sender",
        None,
        send(Sender="test@domain.com\nBcc: v@x.example", **SEED),
        302,
        "Missing or invalid parameter 'Sender' for command 'SendEmail'",
    ),
    (
        "nul-subject",
        None,
        send(Subject="a\x00b", **SEED),
        302,
        "Missing or invalid parameter 'Subject' for command 'SendEmail'",
    ),
    (
        "missing-attachment",
        None,
        send(Attachments="/nonexistent/file.pdf", **SEED),
        302,
        "Missing or invalid parameter 'Attachments' for command 'SendEmail'",
    ),
    (
        "relative-attachment",
        None,
        send(Attachments="file.pdf", **SEED),
        302,
        "Missing or invalid parameter 'Attachments' for command 'SendEmail'",
    ),
    (
        "windows-attachment",
        None,
        send(Attachments="C:\\example.txt", **SEED),
        302,
        "Missing or invalid parameter 'Attachments' for command 'SendEmail'",
    ),
    (
        "repeated-parameter",
        "/api?command=SendEmail&Recipient=a@b.example&recipient=c@d.example"
        f"&Message=x&Username={SEED_USER}&Password={SEED_PASSWORD}",
        None,
        302,
        "Missing or invalid parameter 'recipient' for command 'SendEmail'",
    ),
    ("no-credentials", None, send(), 304, "Authentication required"),
    (
        "wrong-password",
        None,
        send(Username=SEED_USER, Password="wrong"),
        305,
        "Authentication failed, bad username or password",
    ),
    (
        "unknown-user",
        None,
        send(Username="nobody", Password="whatever"),
        305,
        "Authentication failed, bad username or password",
    ),
    (
        "sender-not-allowed",
        None,
        send(Sender="ceo@bank.example", **SEED),
        306,
        "User is not allowed to use API in ACL",
    ),
    (
        "status-unknown-id",
        None,
        {"command": "GetEmailStatus", "EmailId": "nope", **SEED},
        404,
        "Email not found",
    ),
    (
        "status-no-id",
        None,
        {"command": "GetEmailStatus", **SEED},
        302,
        "Missing or invalid parameter 'EmailId' for command 'GetEmailStatus'",
    ),
    ("message-too-large", None, send(Message="x" * 100_001, **SEED), 413, "Request too large"),
]


@pytest.mark.parametrize(
    ("url", "params", "code", "message"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_answer_their_code_and_enqueue_nothing(
    client: FlaskClient,
    redis_server: RedisServer,
    url: str | None,
    params: dict[str, str] | None,
    code: int,
    message: str,
) -> None:
    before = records(redis_server)
    response = client.get(url) if url else client.get("/api", query_string=params)
    assert response.status_code == 200
    body = parse(response.data)
    assert (body["Code"], body["Message"]) == (str(code), message)
    assert records(redis_server) == before


@pytest.mark.parametrize("make_path", [_fifo, _outside], ids=["fifo", "symlink-outside-root"])
def test_attachment_sandbox_refuses(
    client: FlaskClient, attachment_root: Path, make_path: object
) -> None:
    path = make_path(attachment_root)  # type: ignore[operator]
    body = parse(client.get("/api", query_string=send(Attachments=path, **SEED)).data)
    assert (body["Code"], body["Message"]) == (
        "302",
        "Missing or invalid parameter 'Attachments' for command 'SendEmail'",
    )


def test_post_with_a_foreign_content_type_is_a_parse_error(client: FlaskClient) -> None:
    response = client.post(
        "/api", data=b'{"command": "SendEmail"}', content_type="application/json"
    )
    assert parse(response.data)["Code"] == "300"


def test_body_over_the_limit_is_413(client: FlaskClient, settings: Settings) -> None:
    big = b"Message=" + b"x" * (settings.max_request_bytes + 10)
    response = client.post(
        "/api?command=SendEmail", data=big, content_type="application/x-www-form-urlencoded"
    )
    assert parse(response.data)["Code"] == "413"


def test_rate_limit_answers_429(client: FlaskClient, users: UserStore) -> None:
    # An account of this test's own: a shared one would be over its rate on a second run
    # within the minute.
    name = f"{LIMITED_USER}-{time.monotonic_ns()}"
    users.add(name, LIMITED_PASSWORD, rate="2/minute")
    creds = {"Username": name, "Password": LIMITED_PASSWORD}
    codes = [parse(client.get("/api", query_string=send(**creds)).data)["Code"] for _ in range(3)]
    assert codes == ["200", "200", "429"]
    body = parse(client.get("/api", query_string=send(**creds)).data)
    assert body["Message"] == "Rate limit exceeded"


def test_status_is_only_for_the_owner(client: FlaskClient) -> None:
    email_id = parse(client.get("/api", query_string=send(**SEED)).data)["EmailId"]
    mine = parse(
        client.get(
            "/api", query_string={"command": "GetEmailStatus", "EmailId": email_id, **SEED}
        ).data
    )
    assert mine["Code"] == "200"
    assert mine["Status"] in {"Queued", "Sending", "Sent"}
    theirs = {
        "command": "GetEmailStatus",
        "EmailId": email_id,
        "Username": OTHER_USER,
        "Password": OTHER_PASSWORD,
    }
    body = parse(client.get("/api", query_string=theirs).data)
    assert (body["Code"], body["Message"]) == ("404", "Email not found")


@pytest.mark.parametrize(
    "shape",
    ["{id}:history", "{id}:", "{id}x", "x{id}", "{id}\u0000", "*", "mailgate:due", "{short}"],
    ids=["history-key", "colon", "suffix", "prefix", "nul", "glob", "another-key", "short"],
)
@pytest.mark.parametrize("command", ["GetEmailStatus", "CancelEmail"])
def test_any_id_that_is_not_a_well_formed_email_id_is_404(
    client: FlaskClient, command: str, shape: str
) -> None:
    # Another account's e-mail with a history (cancelling writes one), then ids built from it
    # that name other Redis keys: never 503.
    email_id = parse(client.get("/api", query_string=send(SendAt="600", **SEED)).data)["EmailId"]
    cancelled = {"command": "CancelEmail", "EmailId": email_id, **SEED}
    assert parse(client.get("/api", query_string=cancelled).data)["Code"] == "200"
    probe = shape.format(id=email_id, short=email_id[:-1])
    for who in (SEED, {"Username": OTHER_USER, "Password": OTHER_PASSWORD}):
        query = {"command": command, "EmailId": probe, **who}
        body = parse(client.get("/api", query_string=query).data)
        assert (body["Code"], body["Message"]) == ("404", "Email not found")
    # The REST API likewise (the path's id).
    token = base64.b64encode(f"{OTHER_USER}:{OTHER_PASSWORD}".encode()).decode()
    method = client.get if command == "GetEmailStatus" else client.delete
    response = method(f"/api/v1/emails/{probe}", headers={"Authorization": f"Basic {token}"})
    assert (response.status_code, response.get_json()["error"]["code"]) == (404, "not_found")


def test_an_email_id_is_matched_in_any_case(client: FlaskClient) -> None:
    email_id = parse(client.get("/api", query_string=send(**SEED)).data)["EmailId"]
    query = {"command": "GetEmailStatus", "EmailId": email_id.upper(), **SEED}
    body = parse(client.get("/api", query_string=query).data)
    assert (body["Code"], body["EmailId"]) == ("200", email_id)


def test_redis_down_answers_503(make_app: MakeApp, users: UserStore) -> None:
    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    body = parse(client.get("/api", query_string=send(**SEED)).data)
    assert (body["Code"], body["Message"]) == ("503", "Service unavailable, nothing was queued")


def test_healthz_and_readyz(client: FlaskClient, make_app: MakeApp) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    dead = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert dead.test_client().get("/readyz").status_code == 503


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH"])
@pytest.mark.parametrize("path", ["/api", "/api/"], ids=["api", "api-slash"])
def test_other_methods_get_300_in_xml_and_queue_nothing(
    client: FlaskClient, redis_server: RedisServer, method: str, path: str
) -> None:
    before = records(redis_server)
    response = client.open(path, method=method, query_string=send(**SEED), data=send(**SEED))
    assert response.status_code == 200
    assert response.content_type == "application/xml; charset=utf-8"
    assert parse(response.data)["Code"] == "300"
    assert records(redis_server) == before


def test_head_does_not_send(client: FlaskClient, redis_server: RedisServer) -> None:
    before = records(redis_server)
    response = client.head("/api", query_string=send(**SEED))
    assert response.status_code == 200
    assert response.content_type == "application/xml; charset=utf-8"
    assert records(redis_server) == before


def test_api_with_a_trailing_slash_answers_xml(client: FlaskClient) -> None:
    response = client.get("/api/", query_string=send(**SEED))
    assert response.content_type == "application/xml; charset=utf-8"
    assert parse(response.data)["Code"] == "200"


def test_idempotency_key_returns_the_first_email_id_and_queues_nothing_more(
    client: FlaskClient, redis_server: RedisServer
) -> None:
    key = f"order-{os.urandom(4).hex()}"
    first = parse(client.get("/api", query_string=send(IdempotencyKey=key, **SEED)).data)
    before = records(redis_server)
    again = parse(client.get("/api", query_string=send(IdempotencyKey=key, **SEED)).data)
    assert (again["Code"], again["EmailId"]) == ("200", first["EmailId"])
    assert records(redis_server) == before
    other = parse(
        client.get(
            "/api",
            query_string=send(
                IdempotencyKey=key, **{"Username": OTHER_USER, "Password": OTHER_PASSWORD}
            ),
        ).data
    )
    assert other["EmailId"] != first["EmailId"]  # keys belong to one account


def test_concurrent_calls_with_one_idempotency_key_queue_one_email(
    app: Flask, redis_server: RedisServer
) -> None:
    # A PBX retrying on a time-out while its first call is still under way: every call of a
    # key must answer the same EmailId, however they interleave (an atomic SET NX, not a GET
    # then a SET).
    client = app.test_client()
    assert parse(client.get("/api", query_string=send(**SEED)).data)["Code"] == "200"  # cached
    keys = [f"race-{os.urandom(4).hex()}" for _ in range(30)]
    answers: dict[str, list[str]] = {key: [] for key in keys}
    before = records(redis_server)

    def call(key: str, start: threading.Barrier) -> None:
        start.wait()
        body = parse(
            app.test_client().get("/api", query_string=send(IdempotencyKey=key, **SEED)).data
        )
        answers[key].append(body.get("EmailId") or body["Code"])

    for key in keys:
        start = threading.Barrier(4)
        threads = [threading.Thread(target=call, args=(key, start)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    twice = {key: ids for key, ids in answers.items() if len(set(ids)) != 1}
    assert not twice, f"{len(twice)} of {len(keys)} keys got more than one e-mail"
    assert records(redis_server) == before + len(keys)


def test_idempotency_key_with_different_content_is_302(client: FlaskClient) -> None:
    key = f"order-{os.urandom(4).hex()}"
    client.get("/api", query_string=send(IdempotencyKey=key, **SEED))
    body = parse(
        client.get("/api", query_string=send(IdempotencyKey=key, Message="other", **SEED)).data
    )
    assert body["Code"] == "302"
    assert (
        body["Message"] == "Missing or invalid parameter 'IdempotencyKey' for command 'SendEmail'"
    )


@pytest.mark.parametrize(
    "url",
    ["http://evil.example/hook", "ftp://hooks.pbx.example/x", "http://u:p@hooks.pbx.example/",
     "not a url", "http://127.0.0.1:6379/"],
    ids=["host-not-allowed", "scheme", "credentials", "garbage", "internal"],
)  # fmt: skip
def test_delivery_report_url_must_be_allowed(
    make_app: MakeApp, users: UserStore, redis_server: RedisServer, url: str
) -> None:
    app_client = make_app(callback_allowed=("hooks.pbx.example",)).test_client()
    before = records(redis_server)
    body = parse(app_client.get("/api", query_string=send(DeliveryReportURL=url, **SEED)).data)
    assert body["Code"] == "302"
    assert "DeliveryReportURL" in body["Message"]
    assert records(redis_server) == before
    ok = send(DeliveryReportURL="https://hooks.pbx.example/mail", **SEED)
    assert parse(app_client.get("/api", query_string=ok).data)["Code"] == "200"
