"""Property tests: whatever arrives at /api, the answer is well-formed XML with a known code,
never a 5xx, and nothing is queued without valid credentials."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote_from_bytes
from xml.etree import ElementTree as ET

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from mailgate.config import Settings
from tests.conftest import SEED_PASSWORD, SEED_USER, new_address
from tests.support import RedisServer, count_records, examples

KNOWN = {"200", "300", "301", "302", "304", "305", "306", "307", "404", "413", "429", "503"}
NAMES = [
    "command",
    "Command",
    "COMMAND",
    "Recipient",
    "Message",
    "Sender",
    "Subject",
    "Attachments",
    "Username",
    "Password",
    "EmailId",
    "ApiExtension",
    "x",
    "",
]
COMMANDS = ["SendEmail", "sendemail", "GetEmailStatus", "", "Bogus", "SendEmail\x00"]

names = st.one_of(st.sampled_from(NAMES), st.text(max_size=20))
values = st.one_of(
    st.sampled_from(COMMANDS),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.just("a@b.example;" * 60),
    st.just("\r\nBcc: victim@x.example"),
    st.just("/etc/passwd;C:\\x;\\\\unc\\share;file:///etc/shadow;~/x;../../x"),
)
pairs = st.lists(st.tuples(names, values), max_size=12)


def encode(items: list[tuple[str, str]], raw_bytes: bytes) -> bytes:
    encoded = "&".join(
        quote_from_bytes(n.encode("utf-8", "surrogatepass"))
        + "="
        + quote_from_bytes(v.encode("utf-8", "surrogatepass"))
        for n, v in items
    )
    return encoded.encode() + raw_bytes


def records(redis_server: RedisServer) -> int:
    return count_records(redis_server.client())


def check(response_status: int, content_type: str, body: bytes) -> None:
    assert response_status == 200
    assert content_type == "application/xml; charset=utf-8"
    root = ET.fromstring(body)  # raises on malformed XML
    assert root.tag == "Response"
    assert root.findtext("Code") in KNOWN
    assert root.findtext("Code") != "200"  # no valid credentials were ever sent


fuzz = hyp_settings(
    max_examples=examples(250),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@fuzz
@given(items=pairs, raw=st.binary(max_size=40))
def test_any_query_string(
    client: FlaskClient, redis_server: RedisServer, items: list[tuple[str, str]], raw: bytes
) -> None:
    before = records(redis_server)
    query = encode(items, raw)
    response = client.get(
        "/api",
        environ_overrides={"QUERY_STRING": query.decode("latin-1"), "REMOTE_ADDR": new_address()},
    )
    check(response.status_code, response.content_type, response.data)
    assert records(redis_server) == before


@fuzz
@given(
    items=pairs,
    raw=st.binary(max_size=40),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded; charset=latin-1",
        ]
    ),
    query=pairs,
)
def test_any_form_body(
    client: FlaskClient,
    redis_server: RedisServer,
    items: list[tuple[str, str]],
    raw: bytes,
    content_type: str,
    query: list[tuple[str, str]],
) -> None:
    before = records(redis_server)
    response = client.post(
        "/api",
        environ_overrides={
            "QUERY_STRING": encode(query, b"").decode("latin-1"),
            "REMOTE_ADDR": new_address(),
        },
        data=encode(items, raw),
        content_type=content_type,
    )
    check(response.status_code, response.content_type, response.data)
    assert records(redis_server) == before


@fuzz
@given(
    value=st.text(min_size=1, max_size=50).map(lambda t: t + "\r\nBcc: v@x.example"),
    field=st.sampled_from(["Recipient", "Sender", "Subject", "ApiExtension", "Attachments"]),
)
def test_header_injection_in_every_field(
    client: FlaskClient, redis_server: RedisServer, field: str, value: str
) -> None:
    params = {
        "command": "SendEmail",
        "Recipient": "a@x.example",
        "Message": "m",
        "Username": "HTTP_User_1",
        "Password": "qwe123",
        field: value,
    }
    before = records(redis_server)
    body = ET.fromstring(client.get("/api", query_string=params).data)
    assert body.findtext("Code") == "302"
    assert records(redis_server) == before


def _creds() -> dict[str, str]:
    return {"command": "SendEmail", "Username": SEED_USER, "Password": SEED_PASSWORD}


HUGE = [
    # (id, the parameters besides valid credentials, POST them as a form, code [named parameter])
    ("message-over-limit", lambda s: {"Message": "x" * (s.max_message_bytes + 1)}, False, "413"),
    (
        "message-over-limit-in-utf8-bytes",
        lambda s: {"Message": "é" * (s.max_message_bytes // 2 + 1)},
        False,
        "413",
    ),
    (
        "query-over-request-limit",
        lambda s: {"Message": "x" * (s.max_request_bytes + 1)},
        False,
        "413",
    ),
    (
        "form-over-request-limit",
        lambda s: {"Message": "x" * (s.max_request_bytes + 1)},
        True,
        "413",
    ),
    ("huge-subject", lambda s: {"Subject": "s" * 70_000}, False, "302 Subject"),
    (
        "huge-recipient",
        lambda s: {"Recipient": "a" * 70_000 + "@x.example"},
        False,
        "302 Recipient",
    ),
]


@pytest.mark.parametrize(
    ("make", "as_form", "expected"), [case[1:] for case in HUGE], ids=[case[0] for case in HUGE]
)
def test_huge_values_reach_the_size_limits_without_a_5xx(
    client: FlaskClient,
    redis_server: RedisServer,
    settings: Settings,
    make: Callable[[Settings], dict[str, str]],
    as_form: bool,
    expected: str,
) -> None:
    params = {**_creds(), "Recipient": "a@x.example", "Message": "m", **make(settings)}
    before = records(redis_server)
    if as_form:
        response = client.post("/api", data=params)
    else:
        response = client.get("/api", query_string=params)
    assert response.status_code == 200
    body = ET.fromstring(response.data)
    code, _, name = expected.partition(" ")
    assert body.findtext("Code") == code, response.data[:300]
    if name:
        assert body.findtext("Message") == (
            f"Missing or invalid parameter '{name}' for command 'SendEmail'"
        )
    else:
        assert body.findtext("Message") == "Request too large"
    assert records(redis_server) == before
