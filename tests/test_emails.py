"""api.emails: what both endpoints do to an e-mail, and the one place Redis's errors become 503."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mailgate.users import UserStore
from tests.conftest import OTHER_PASSWORD, OTHER_USER, SEED_PASSWORD, SEED_USER, MakeApp
from tests.support import RedisServer, count_records

OZEKI = {"Username": SEED_USER, "Password": SEED_PASSWORD}
UNCACHED = {"Username": OTHER_USER, "Password": OTHER_PASSWORD}
"""An account that has not logged in to the app yet: its password check needs Redis."""
REST = {
    "Authorization": "Basic " + base64.b64encode(f"{SEED_USER}:{SEED_PASSWORD}".encode()).decode()
}
EMAILS = "/api/v1/emails"
MAIL = {"Recipient": "abc@anotherdomain.com", "Message": "Hi"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may stop."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def ozeki(client: FlaskClient, command: str, **params: str) -> dict[str, str]:
    response = client.get("/api", query_string={"command": command, **OZEKI, **params})
    assert response.status_code == 200
    return {child.tag: child.text or "" for child in ET.fromstring(response.data)}


def test_every_call_on_a_stopped_redis_is_503_and_queues_nothing(
    make_app: MakeApp, users: UserStore, own_redis: RedisServer
) -> None:
    client = make_app(redis_url=own_redis.url, suppression=True).test_client()
    # While Redis runs: one e-mail per API, and the seed account's password check cached.
    queued = ozeki(client, "SendEmail", **MAIL)["EmailId"]
    rest_id = client.post(EMAILS, json={"recipients": ["a@b.example"], "text": "Hi"}, headers=REST)
    assert rest_id.status_code == 202
    before = count_records(own_redis.client())
    own_redis.stop()

    # Every command down to each store call it makes: the login throttle, the idempotency key,
    # the send rate, the suppression list, the record, a status, a listing, a cancel.
    ozeki_calls = {
        "SendEmail": ("SendEmail", MAIL),
        "SendEmail with a key": ("SendEmail", {**MAIL, "IdempotencyKey": "k-1"}),
        "SendEmail scheduled": ("SendEmail", {**MAIL, "SendAt": "600"}),
        "GetEmailStatus": ("GetEmailStatus", {"EmailId": queued}),
        "CancelEmail": ("CancelEmail", {"EmailId": queued}),
        "an uncached login": ("GetEmailStatus", {"EmailId": queued, **UNCACHED}),
    }
    for name, (command, params) in ozeki_calls.items():
        body = ozeki(client, command, **params)
        assert (body["Code"], body["Message"]) == (
            "503",
            "Service unavailable, nothing was queued",
        ), name
        assert body["Reason"] == "Redis is unavailable", name  # not an internal error
    email = f"{EMAILS}/{rest_id.get_json()['id']}"
    other = {"Authorization": "Basic " + base64.b64encode(b"other:wrong-pw").decode()}
    rest_calls: dict[str, TestResponse] = {
        "POST": client.post(
            EMAILS, json={"recipients": ["a@b.example"], "text": "Hi"}, headers=REST
        ),
        "POST with a key": client.post(
            EMAILS,
            json={"recipients": ["a@b.example"], "text": "Hi"},
            headers={**REST, "Idempotency-Key": "k-2"},
        ),
        "POST scheduled": client.post(
            EMAILS, json={"recipients": ["a@b.example"], "text": "Hi", "send_at": 600}, headers=REST
        ),
        "GET one": client.get(email, headers=REST),
        "GET a listing": client.get(EMAILS, query_string={"status": "Queued"}, headers=REST),
        "DELETE": client.delete(email, headers=REST),
        "an uncached login": client.get(email, headers=other),
    }
    for name, response in rest_calls.items():
        assert response.status_code == 503, name
        assert response.get_json()["error"]["code"] == "unavailable", name
    assert client.get("/readyz").status_code == 503

    own_redis.start()  # its AOF holds what was there: the 503s added and removed nothing
    assert count_records(own_redis.client()) == before
    assert ozeki(client, "GetEmailStatus", EmailId=queued)["Status"] == "Queued"
