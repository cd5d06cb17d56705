"""Hostile callers: brute force, spraying, address ACLs, forged X-Forwarded-For."""

from __future__ import annotations

import time
from dataclasses import replace
from xml.etree import ElementTree as ET

import pytest
from flask.testing import FlaskClient

from api import create_app
from mailgate.config import Settings
from mailgate.users import UserStore


def code(response_body: bytes) -> str:
    return str(ET.fromstring(response_body).findtext("Code"))


def send(client: FlaskClient, user: str, password: str, address: str, **headers: str) -> str:
    response = client.get(
        "/api",
        query_string={"command": "SendEmail", "Recipient": "a@x.example", "Message": "m",
                      "Username": user, "Password": password},
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )  # fmt: skip
    return code(response.data)


@pytest.fixture
def accounts(settings: Settings, users: UserStore, request: pytest.FixtureRequest) -> list[str]:
    """Two fresh accounts for this test (limits are counted per name)."""
    tag = f"{request.node.name[:30]}-{time.monotonic_ns()}".replace("[", "-").replace("]", "")
    names = [f"a-{tag}", f"b-{tag}"]
    for name in names:
        users.add(name, f"{name}-pw")
    return names


def test_brute_force_is_cut_off_fast_without_hashing(
    settings: Settings, users: UserStore, accounts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings)
    client = app.test_client()
    svc = app.extensions["mailgate"]
    verified: list[str] = []
    real = svc.users.verify

    def counting(name: str, password: str):  # type: ignore[no-untyped-def]
        verified.append(name)
        return real(name, password)

    monkeypatch.setattr(svc.users, "verify", counting)
    victim, bystander = accounts
    codes = [send(client, victim, f"guess-{i}", "198.51.100.7") for i in range(300)]
    assert codes[:5] == ["305"] * 5  # cut off after five wrong passwords
    assert set(codes[5:]) == {"429"}
    assert len(verified) == 5  # argon2 ran for the first five guesses only: no CPU to burn
    # Even the right password is refused from that address for now: guessing cannot succeed.
    assert send(client, victim, f"{victim}-pw", "198.51.100.7") == "429"
    # Another account from the same address keeps sending, and the victim from elsewhere.
    assert send(client, bystander, f"{bystander}-pw", "198.51.100.7") == "200"
    assert send(client, victim, f"{victim}-pw", "203.0.113.5") == "200"


def test_spraying_many_names_from_one_address_is_cut_off(
    settings: Settings, users: UserStore
) -> None:
    client = create_app(settings).test_client()
    codes = [
        send(client, f"spray-{i}-{time.monotonic_ns()}", "x", "198.51.100.99") for i in range(40)
    ]
    assert codes[:20] == ["305"] * 20
    assert set(codes[20:]) == {"429"}


def test_a_distributed_guess_at_one_name_is_cut_off(
    settings: Settings, users: UserStore, accounts: list[str]
) -> None:
    tight = replace(settings, login_failures_per_user="10/hour")
    client = create_app(tight).test_client()
    victim = accounts[0]
    codes = [send(client, victim, "wrong", f"192.0.2.{i}") for i in range(1, 30)]
    assert codes[:10] == ["305"] * 10
    assert set(codes[10:]) == {"429"}


@pytest.fixture
def office_account(users: UserStore) -> str:
    name = f"office-{time.monotonic_ns()}"
    users.add(name, "office-pw", networks=("10.1.0.0/16",))
    return name


def test_network_acl(settings: Settings, office_account: str) -> None:
    client = create_app(settings).test_client()
    assert send(client, office_account, "office-pw", "10.1.2.3") == "200"
    response = client.get(
        "/api",
        query_string={"command": "SendEmail", "Recipient": "a@x.example", "Message": "m",
                      "Username": office_account, "Password": "office-pw"},
        environ_base={"REMOTE_ADDR": "192.0.2.50"},
    )  # fmt: skip
    body = ET.fromstring(response.data)
    assert (body.findtext("Code"), body.findtext("Message")) == (
        "307",
        "Use API from this address is forbidden",
    )


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", "10.1.2.3", "200"),  # a trusted proxy vouches for an office address
        ("192.0.2.50", "10.1.2.3", "307"),  # an untrusted peer cannot claim one
        ("127.0.0.1", "10.1.2.3, 203.0.113.9", "307"),  # the client forged the first hop
        ("127.0.0.1", "garbage", "307"),
    ],
    ids=["trusted-proxy", "untrusted-peer", "forged-chain", "garbage"],
)
def test_x_forwarded_for_only_from_trusted_proxies(
    settings: Settings, office_account: str, peer: str, forwarded: str, expected: str
) -> None:
    behind_proxy = replace(settings, trusted_proxies=("127.0.0.1/32",))
    client = create_app(behind_proxy).test_client()
    result = send(client, office_account, "office-pw", peer, **{"X-Forwarded-For": forwarded})
    assert result == expected
