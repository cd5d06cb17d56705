"""The JSON REST API under /api/v1: real HTTP end to end, every error code, idempotency, OpenAPI."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from email.message import Message
from typing import Any
from urllib.error import HTTPError

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

import api.rest
from mailgate.users import UserStore
from tests.conftest import (
    OTHER_PASSWORD,
    OTHER_USER,
    SEED_PASSWORD,
    SEED_USER,
    MakeApp,
    new_address,
)
from tests.support import RedisServer, SmtpServer, free_port, wait_for

EMAILS = "/api/v1/emails"
NETLOCKED = ("rest-netlocked", "rest-netlocked-pw")
"""An account that may call from 10.255.0.0/16 only."""


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


SEED_CREDS = (SEED_USER, SEED_PASSWORD)
SEED = basic(*SEED_CREDS)


def mail(**fields: Any) -> dict[str, Any]:
    return {"recipients": ["abc@anotherdomain.com"], "text": "Hi", **fields}


def records(redis_server: RedisServer) -> int:
    """E-mail status records (not their histories, which a busy worker may still be adding)."""
    keys = redis_server.client().scan_iter("mailgate:email:*")
    return sum(1 for key in keys if not key.endswith(":history"))


def http(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Message, Any]:
    """One real HTTP request: status, headers (names case-insensitive, as in HTTP: the server
    sends them in lower case) and the JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {**(headers or {})}, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


@pytest.fixture(scope="module")
def netlocked(users: UserStore) -> str:
    users.add(*NETLOCKED, networks=("10.255.0.0/16",))
    return NETLOCKED[0]


def test_a_posted_email_is_delivered_and_its_status_reads_sent(
    api_url: str, worker: object, smtp_server: SmtpServer
) -> None:
    body = mail(
        recipients=["rest-e2e@anotherdomain.com"],
        sender="shop@domain.com",
        subject="REST",
        text="Grüße über JSON",
    )
    status, headers, accepted = http(f"{api_url}{EMAILS}", "POST", body, SEED)
    assert status == 202
    email_id = accepted["id"]
    assert headers["Location"] == f"{EMAILS}/{email_id}"
    assert accepted == {"id": email_id, "status": "Queued", "status_url": headers["Location"]}
    received = wait_for(lambda: smtp_server.handler.find(email_id), 30, "the message to arrive")
    assert received.rcpt_tos == ["rest-e2e@anotherdomain.com"]
    assert received.mail_from == "shop@domain.com"
    message = received.message
    assert message["Subject"] == "REST"
    assert message.get_content().strip() == "Grüße über JSON"  # type: ignore[attr-defined]

    def sent() -> dict[str, Any] | None:
        code, _, record = http(f"{api_url}{headers['Location']}", headers=SEED)
        return record if code == 200 and record["status"] == "Sent" else None

    record = wait_for(sent, 30, "the status to read Sent")
    assert record["id"] == email_id
    assert record["attempts"] == 1
    assert record["smtp_response"].startswith("250")
    assert record["sent_at"].endswith("Z")
    assert record["created_at"] <= record["sent_at"]
    assert record["history"][-1]["outcome"] == "Sent"
    assert record["delivery_report"] is None  # no callback_url was given
    assert {"last_error", "next_attempt_at"} <= record.keys()


ERROR_CASES: list[
    tuple[str, str, str, dict[str, Any], tuple[str, str] | None, int, str, str | None]
] = [
    ("bad-json", "POST", EMAILS, {"data": b'{"text": '}, SEED_CREDS, 400, "invalid_json", None),
    (
        "not-utf8",
        "POST",
        EMAILS,
        {"data": b'{"text": "\xff"}'},
        SEED_CREDS,
        400,
        "invalid_json",
        None,
    ),
    ("not-an-object", "POST", EMAILS, {"data": b"[]"}, SEED_CREDS, 400, "invalid_json", None),
    (
        "duplicate-key",
        "POST",
        EMAILS,
        {"data": b'{"recipients": ["a@b.example"], "text": "a", "text": "b"}'},
        SEED_CREDS,
        400,
        "invalid_json",
        None,
    ),
    (
        "nan",
        "POST",
        EMAILS,
        {"data": b'{"recipients": ["a@b.example"], "text": NaN}'},
        SEED_CREDS,
        400,
        "invalid_json",
        None,
    ),
    # An unknown field is refused, naming it: here the Ozeki name of recipients.
    (
        "unknown-field",
        "POST",
        EMAILS,
        {"json": {"Recipient": "a@b.example", "text": "x"}},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "Recipient",
    ),
    (
        "surrogate-field-name",
        "POST",
        EMAILS,
        {"data": b'{"\\ud800": 1}'},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "\ud800",
    ),
    (
        "no-recipients",
        "POST",
        EMAILS,
        {"json": {"text": "x"}},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "recipients",
    ),
    (
        "recipients-not-a-list",
        "POST",
        EMAILS,
        {"json": mail(recipients="a@b.example")},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "recipients",
    ),
    (
        "bad-recipient",
        "POST",
        EMAILS,
        {"json": mail(recipients=["not-an-address"])},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "recipients",
    ),
    (
        "51-recipients",
        "POST",
        EMAILS,
        {"json": mail(recipients=[f"r{i}@x.example" for i in range(51)])},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "recipients",
    ),
    (
        "separator-in-recipient",
        "POST",
        EMAILS,
        {"json": mail(recipients=["a@x.example;b@x.example"])},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "recipients",
    ),
    (
        "crlf-recipient",
        "POST",
        EMAILS,
        {"json": mail(recipients=["a@x.example\r\nBcc: v@x.example"])},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "recipients",
    ),
    (
        "no-text",
        "POST",
        EMAILS,
        {"json": {"recipients": ["a@b.example"]}},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "text",
    ),
    (
        "text-not-a-string",
        "POST",
        EMAILS,
        {"json": mail(text=42)},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "text",
    ),
    (
        "lone-surrogate",
        "POST",
        EMAILS,
        {"data": b'{"recipients": ["a@b.example"], "text": "\\ud800"}'},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "text",
    ),
    (
        "crlf-subject",
        "POST",
        EMAILS,
        {"json": mail(subject="Hi\r\nBcc: v@x.example")},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "subject",
    ),
    (
        "bad-sender",
        "POST",
        EMAILS,
        {"json": mail(sender="nobody")},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "sender",
    ),
    (
        "relative-attachment",
        "POST",
        EMAILS,
        {"json": mail(attachments=["file.pdf"])},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "attachments",
    ),
    (
        "missing-attachment",
        "POST",
        EMAILS,
        {"json": mail(attachments=["/nonexistent/f.pdf"])},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "attachments",
    ),
    (
        "callback-not-allowed",
        "POST",
        EMAILS,
        {"json": mail(callback_url="http://evil.example/hook")},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "callback_url",
    ),
    (
        "key-header-and-field-differ",
        "POST",
        EMAILS,
        {"json": mail(idempotency_key="a"), "headers": {"Idempotency-Key": "b"}},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "idempotency_key",
    ),
    (
        "key-too-long",
        "POST",
        EMAILS,
        {"json": mail(), "headers": {"Idempotency-Key": "k" * 201}},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "idempotency_key",
    ),
    (
        "no-credentials",
        "POST",
        EMAILS,
        {"json": mail()},
        None,
        401,
        "authentication_required",
        None,
    ),
    (
        "bearer-token",
        "POST",
        EMAILS,
        {"json": mail(), "headers": {"Authorization": "Bearer x"}},
        None,
        401,
        "authentication_required",
        None,
    ),
    (
        "wrong-password",
        "POST",
        EMAILS,
        {"json": mail()},
        (SEED_USER, "wrong"),
        401,
        "authentication_failed",
        None,
    ),
    (
        "unknown-user",
        "GET",
        f"{EMAILS}/x",
        {},
        ("nobody-rest", "x"),
        401,
        "authentication_failed",
        None,
    ),
    (
        "sender-not-allowed",
        "POST",
        EMAILS,
        {"json": mail(sender="ceo@bank.example")},
        SEED_CREDS,
        403,
        "sender_not_allowed",
        None,
    ),
    (
        "address-forbidden",
        "POST",
        EMAILS,
        {"json": mail()},
        NETLOCKED,
        403,
        "address_forbidden",
        None,
    ),
    (
        "unknown-email-id",
        "GET",
        f"{EMAILS}/6b5c6978-0cd6-4a58-86fc-3d1b279b9208",
        {},
        SEED_CREDS,
        404,
        "not_found",
        None,
    ),
    ("unknown-path", "GET", "/api/v1/mails", {}, SEED_CREDS, 404, "not_found", None),
    ("list-without-status", "GET", EMAILS, {}, SEED_CREDS, 400, "invalid_parameter", "status"),
    (
        "list-sent",
        "GET",
        f"{EMAILS}?status=Sent",
        {},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "status",
    ),
    (
        "list-unknown-status",
        "GET",
        f"{EMAILS}?status=Lost",
        {},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "status",
    ),
    (
        "list-two-statuses",
        "GET",
        f"{EMAILS}?status=Failed&status=Retrying",
        {},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "status",
    ),
    (
        "list-bad-since",
        "GET",
        f"{EMAILS}?status=Failed&since=yesterday",
        {},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "since",
    ),
    (
        "list-limit-zero",
        "GET",
        f"{EMAILS}?status=Failed&limit=0",
        {},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "limit",
    ),
    (
        "list-limit-huge",
        "GET",
        f"{EMAILS}?status=Failed&limit=1001",
        {},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "limit",
    ),
    (
        "list-unknown-parameter",
        "GET",
        f"{EMAILS}?status=Failed&account=other",
        {},
        SEED_CREDS,
        400,
        "invalid_parameter",
        "account",
    ),
    (
        "list-no-credentials",
        "GET",
        f"{EMAILS}?status=Failed",
        {},
        None,
        401,
        "authentication_required",
        None,
    ),
    (
        "double-slash",
        "POST",
        "/api/v1//emails",
        {"json": mail()},
        SEED_CREDS,
        404,
        "not_found",
        None,
    ),
    ("wrong-method", "PUT", EMAILS, {"json": mail()}, SEED_CREDS, 405, "method_not_allowed", None),
    # One byte over the default MAILGATE_MAX_REQUEST_BYTES; the text limit is the session's.
    (
        "body-too-large",
        "POST",
        EMAILS,
        {"data": b"x" * (2 * 1024 * 1024 + 1)},
        SEED_CREDS,
        413,
        "too_large",
        None,
    ),
    (
        "text-too-large",
        "POST",
        EMAILS,
        {"json": mail(text="x" * 100_001)},
        SEED_CREDS,
        413,
        "too_large",
        None,
    ),
    (
        "form-body",
        "POST",
        EMAILS,
        {"data": b"text=x", "content_type": "application/x-www-form-urlencoded"},
        SEED_CREDS,
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "no-content-type",
        "POST",
        EMAILS,
        {"data": b"{}", "content_type": ""},
        SEED_CREDS,
        415,
        "unsupported_media_type",
        None,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "extra", "creds", "status", "code", "field"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_answer_their_status_in_json_and_enqueue_nothing(
    client: FlaskClient,
    redis_server: RedisServer,
    netlocked: str,
    method: str,
    path: str,
    extra: dict[str, Any],
    creds: tuple[str, str] | None,
    status: int,
    code: str,
    field: str | None,
) -> None:
    kwargs = {"content_type": "application/json", **extra}
    headers = {**(basic(*creds) if creds else {}), **kwargs.pop("headers", {})}
    before = records(redis_server)
    response = client.open(
        path, method=method, headers=headers, environ_base={"REMOTE_ADDR": new_address()}, **kwargs
    )
    assert response.status_code == status
    assert response.content_type == "application/json"
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"] and "Traceback" not in error["message"]
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="mailgate"'
    if status == 405:
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert records(redis_server) == before


def test_a_repeated_idempotency_key_answers_200_with_the_first_id(
    client: FlaskClient, redis_server: RedisServer
) -> None:
    key = f"order-{os.urandom(4).hex()}"
    first = client.post(EMAILS, json=mail(), headers={**SEED, "Idempotency-Key": key})
    assert first.status_code == 202
    before = records(redis_server)
    # The same key in the body field is the same key: a repeat, not a new e-mail.
    again = client.post(EMAILS, json=mail(idempotency_key=key), headers=SEED)
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert records(redis_server) == before
    conflict = client.post(
        EMAILS, json=mail(text="other"), headers={**SEED, "Idempotency-Key": key}
    )
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "idempotency_conflict"
    assert conflict.get_json()["error"]["field"] == "idempotency_key"
    assert records(redis_server) == before


def test_callback_url_reaches_the_job_when_its_host_is_allowed(
    make_app: MakeApp, users: UserStore
) -> None:
    app = make_app(callback_allowed=("hooks.pbx.example",))
    url = "https://hooks.pbx.example/mail"
    response = app.test_client().post(EMAILS, json=mail(callback_url=url), headers=SEED)
    assert response.status_code == 202
    record = app.extensions["mailgate"].store.get(response.get_json()["id"])
    assert record.job.callback_url == url


def test_an_account_lists_its_own_failed_emails_only(app: Flask, client: FlaskClient) -> None:
    store = app.extensions["mailgate"].store
    mine, theirs = [], []
    for owner, ids in ((SEED_USER, mine), (OTHER_USER, theirs), (SEED_USER, mine)):
        email_id = client.post(EMAILS, json=mail(send_at=600), headers=SEED).get_json()["id"]
        store.redis.hset(f"mailgate:email:{email_id}", "owner", owner)
        store.mark_failed(email_id, 1, "550 5.1.1 no such user", "550 5.1.1 no such user")
        ids.append(email_id)
    response = client.get(f"{EMAILS}?status=failed&since=10m", headers=SEED)
    assert response.status_code == 200
    listed = response.get_json()
    found = [item["id"] for item in listed["emails"]]
    assert found[:2] == mine[::-1]  # the latest change first (other tests may add their own)
    assert theirs[0] not in found
    assert listed["emails"][0] == {
        key: value
        for key, value in client.get(f"{EMAILS}/{mine[1]}", headers=SEED).get_json().items()
        if key not in ("recipients", "history")
    }  # the status record, without its recipients and history
    assert listed["emails"][0]["last_error"] == "550 5.1.1 no such user"
    first = client.get(f"{EMAILS}?status=Failed&since=10m&limit=1", headers=SEED).get_json()
    assert ([item["id"] for item in first["emails"]], first["more"]) == ([mine[1]], True)
    other = client.get(f"{EMAILS}?status=Failed", headers=basic(OTHER_USER, OTHER_PASSWORD))
    assert theirs[0] in [item["id"] for item in other.get_json()["emails"]]
    assert not set(mine) & {item["id"] for item in other.get_json()["emails"]}
    scheduled = client.get(f"{EMAILS}?status=Scheduled&since=10m", headers=SEED).get_json()
    assert not set(mine) & {item["id"] for item in scheduled["emails"]}


def test_another_accounts_email_is_404(client: FlaskClient) -> None:
    location = client.post(EMAILS, json=mail(), headers=SEED).headers["Location"]
    assert client.get(location, headers=SEED).status_code == 200
    theirs = client.get(location, headers=basic(OTHER_USER, OTHER_PASSWORD))
    assert theirs.status_code == 404
    assert theirs.get_json()["error"]["code"] == "not_found"


def test_over_the_send_rate_is_429_with_retry_after(
    client: FlaskClient, users: UserStore, redis_server: RedisServer
) -> None:
    name = f"rest-rate-{time.monotonic_ns()}"
    users.add(name, "rate-pw", rate="1/minute")
    assert client.post(EMAILS, json=mail(), headers=basic(name, "rate-pw")).status_code == 202
    before = records(redis_server)
    response = client.post(EMAILS, json=mail(), headers=basic(name, "rate-pw"))
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert records(redis_server) == before


def test_failed_logins_are_throttled_with_retry_after(client: FlaskClient) -> None:
    name, address = f"rest-guess-{time.monotonic_ns()}", new_address()
    responses = [
        client.get(
            f"{EMAILS}/x", headers=basic(name, f"guess-{i}"), environ_base={"REMOTE_ADDR": address}
        )
        for i in range(6)
    ]
    assert [r.status_code for r in responses] == [401] * 5 + [429]
    # Which login scope refused is not known, so the longest window (per user, an hour) holds.
    assert int(responses[-1].headers["Retry-After"]) == 3600


def test_redis_down_is_503(make_app: MakeApp, users: UserStore) -> None:
    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    for response in (
        client.post(EMAILS, json=mail(), headers=SEED),
        client.get(f"{EMAILS}/x", headers=SEED),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "unavailable"


def test_an_unexpected_error_is_a_json_500_without_details(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.rest, "send_params", broken)
    response = client.post(EMAILS, json=mail(), headers=SEED)
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "field": None, "message": "internal error"}
    }


def test_the_openapi_document_is_valid_openapi_31(api_url: str) -> None:
    status, headers, document = http(f"{api_url}/api/v1/openapi.json")  # no credentials
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # the OpenAPI 3.1 meta-schema
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)  # each a valid JSON Schema 2020-12
    send = document["paths"][EMAILS]["post"]["responses"]
    status_ = document["paths"][f"{EMAILS}/{{email_id}}"]["get"]["responses"]
    listing = document["paths"][EMAILS]["get"]
    assert {"200", "400", "401", "429", "503"} <= listing["responses"].keys()
    assert [p["name"] for p in listing["parameters"]] == ["status", "since", "limit"]
    assert "Sent" not in listing["parameters"][0]["schema"]["enum"]
    assert {"200", "202", "400", "401", "403", "409", "413", "415", "429", "503"} <= send.keys()
    assert {"200", "401", "403", "404", "429", "503"} <= status_.keys()
    assert document["components"]["securitySchemes"]["basicAuth"]["scheme"] == "basic"


OPERATIONS = [
    ("GET", EMAILS, GenerationMode.POSITIVE),
    ("GET", EMAILS, GenerationMode.NEGATIVE),
    ("POST", EMAILS, GenerationMode.POSITIVE),
    ("POST", EMAILS, GenerationMode.NEGATIVE),
    ("GET", f"{EMAILS}/{{email_id}}", GenerationMode.POSITIVE),
    ("GET", f"{EMAILS}/{{email_id}}", GenerationMode.NEGATIVE),
    ("DELETE", f"{EMAILS}/{{email_id}}", GenerationMode.POSITIVE),
    ("DELETE", f"{EMAILS}/{{email_id}}", GenerationMode.NEGATIVE),
]
"""Every operation, both ways; schemathesis leaves out the one serving the document itself."""


@pytest.fixture(scope="module")
def rest_schema(api_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_url}/api/v1/openapi.json")


def test_the_fuzzed_operations_are_all_of_them(rest_schema: schemathesis.BaseSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in rest_schema.get_all_operations()}
    assert found == {(method, path) for method, path, _ in OPERATIONS}


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    OPERATIONS,
    ids=[f"{method} {path} {mode.value}" for method, path, mode in OPERATIONS],
)
def test_the_api_keeps_to_its_openapi_document(
    rest_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    # Schemathesis's own pytest loader (from_fixture) fails on pytest 9, so its Hypothesis
    # strategy drives the requests; the checks are the same.
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    @given(case=rest_schema[path][method].as_strategy(mode))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(auth=SEED_CREDS, checks=checks)

    conforms()
