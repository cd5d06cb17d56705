"""Hostile callers: brute force, spraying, address ACLs, forged X-Forwarded-For."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import replace
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.users import UserStore
from tests.conftest import MakeApp
from tests.support import RedisServer


def code(response_body: bytes) -> str:
    return str(ET.fromstring(response_body).findtext("Code"))


def send(client: FlaskClient, user: str, password: str, address: str, **headers: str) -> str:
    response = client.get(
        "/api",
        query_string={
            "command": "SendEmail",
            "Recipient": "a@x.example",
            "Message": "m",
            "Username": user,
            "Password": password,
        },
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )
    return code(response.data)


@pytest.fixture
def accounts(settings: Settings, users: UserStore, request: pytest.FixtureRequest) -> list[str]:
    """Two fresh accounts for this test (limits are counted per name)."""
    tag = f"{request.node.name[:30]}-{time.monotonic_ns()}".replace("[", "-").replace("]", "")
    names = [f"a-{tag}", f"b-{tag}"]
    for name in names:
        users.add(name, f"{name}-pw")
    return names


class CountingHasher:
    """Counts argon2 verifications, passing them on to the real hasher."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0
        self.lock = threading.Lock()

    def verify(self, hash_: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
        return bool(self.real.verify(hash_, password))


def counted_app(app: Flask, monkeypatch: pytest.MonkeyPatch) -> tuple[Flask, CountingHasher]:
    users = app.extensions["mailgate"].users
    hasher = CountingHasher(users._hasher)
    monkeypatch.setattr(users, "_hasher", hasher)
    return app, hasher


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_brute_force_is_cut_off_fast_without_hashing(
    make_app: MakeApp,
    users: UserStore,
    accounts: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, hasher = counted_app(make_app(), monkeypatch)
    client = app.test_client()
    victim, bystander = accounts
    codes = [send(client, victim, f"guess-{i}", "198.51.100.7") for i in range(300)]
    assert codes[:5] == ["305"] * 5  # cut off after five wrong passwords
    assert set(codes[5:]) == {"429"}
    assert hasher.calls == 5  # argon2 ran for the first five guesses only: no CPU to burn
    # Even the right password is refused from that address for now: guessing cannot succeed.
    assert send(client, victim, f"{victim}-pw", "198.51.100.7") == "429"
    # Another account from the same address keeps sending, and the victim from elsewhere.
    assert send(client, bystander, f"{bystander}-pw", "198.51.100.7") == "200"
    assert send(client, victim, f"{victim}-pw", "203.0.113.5") == "200"


@pytest.mark.slow  # argon2 for every guess: seconds on a busy machine
def test_spraying_many_names_from_one_address_is_cut_off(
    make_app: MakeApp, users: UserStore
) -> None:
    client = make_app().test_client()
    codes = [
        send(client, f"spray-{i}-{time.monotonic_ns()}", "x", "198.51.100.99") for i in range(40)
    ]
    assert codes[:20] == ["305"] * 20
    assert set(codes[20:]) == {"429"}


@pytest.mark.slow  # argon2 for every guess: seconds on a busy machine
def test_a_distributed_guess_is_slowed_but_the_owner_keeps_working(
    make_app: MakeApp,
    settings: Settings,
    users: UserStore,
    accounts: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tight = replace(settings, login_failures_per_user="10/hour")
    victim = accounts[0]
    # The owner's device logged in from its usual address before the attack.
    assert send(make_app(tight).test_client(), victim, f"{victim}-pw", "203.0.113.80") == "200"
    app, hasher = counted_app(make_app(tight), monkeypatch)
    client = app.test_client()
    codes = [send(client, victim, f"wrong-{i}", f"192.0.2.{i}") for i in range(1, 60)]
    assert codes[:10] == ["305"] * 10
    # Beyond the limit, unknown addresses share a slow lane of one attempt a minute.
    assert codes[10:].count("305") <= 1
    assert set(codes[10:]) <= {"305", "429"}
    assert hasher.calls == codes.count("305")
    # A fresh API process (no cached credentials): the owner's known address still works.
    fresh = make_app(tight).test_client()
    assert send(fresh, victim, f"{victim}-pw", "203.0.113.80") == "200"


@pytest.mark.slow  # argon2 for every guess: seconds on a busy machine
def test_spraying_from_an_office_address_does_not_lock_out_its_users(
    make_app: MakeApp, users: UserStore, accounts: list[str]
) -> None:
    office, member = "198.51.100.150", accounts[0]
    assert send(make_app().test_client(), member, f"{member}-pw", office) == "200"
    client = make_app().test_client()
    spray = [send(client, f"nobody-{i}-{time.monotonic_ns()}", "x", office) for i in range(30)]
    assert spray[:20] == ["305"] * 20 and set(spray[20:]) == {"429"}
    # The member who logged in from there before keeps working, from a fresh process too;
    # a name never seen from there is still refused.
    assert send(make_app().test_client(), member, f"{member}-pw", office) == "200"
    assert send(client, accounts[1], f"{accounts[1]}-pw", office) == "429"


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_parallel_guesses_never_run_more_argon2_checks_than_the_limit(
    make_app: MakeApp,
    users: UserStore,
    accounts: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, hasher = counted_app(make_app(), monkeypatch)
    victim, codes = accounts[0], []
    start = threading.Barrier(8)

    def guess(thread: int) -> None:
        client = app.test_client()
        start.wait()
        for i in range(4):
            codes.append(send(client, victim, f"guess-{thread}-{i}", "198.51.100.33"))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(codes) == ["305"] * 5 + ["429"] * 27
    assert hasher.calls == 5


@pytest.mark.parametrize(
    "name",
    ["u" * 257, "v" * 100_000, "é" * 300, "w" * 200],
    ids=["just-over-the-cap", "100k", "non-ascii", "under-the-cap"],
)
@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_long_user_names_never_reach_redis(
    make_app: MakeApp, users: UserStore, redis_server: RedisServer, name: str
) -> None:
    client = make_app().test_client()
    redis = redis_server.client()
    before = int(redis.info("memory")["used_memory"])
    for i in range(20):
        response = client.post(
            "/api",
            data={
                "command": "SendEmail",
                "Recipient": "a@x.example",
                "Message": "m",
                "Username": f"{name}{i}",
                "Password": "x",
            },
            environ_base={"REMOTE_ADDR": "198.51.100.201"},
        )
        assert code(response.data) in {"305", "429"}
    # 20 names of 100 kB each would add 2 MB if stored; hashed they add a few hundred bytes.
    assert int(redis.info("memory")["used_memory"]) - before < 200_000
    for key in redis.scan_iter(count=1000):
        assert name[:32] not in key
        if "login" in key.lower():
            assert len(key) < 120


def test_a_forged_long_forwarded_address_never_reaches_redis(
    make_app: MakeApp, settings: Settings, users: UserStore, redis_server: RedisServer
) -> None:
    behind_proxy = replace(settings, trusted_proxies=("127.0.0.1/32",))
    client = make_app(behind_proxy).test_client()
    hop = "garbage-" + "z" * 30_000
    assert send(client, "nobody", "x", "127.0.0.1", **{"X-Forwarded-For": hop}) == "305"
    keys = list(redis_server.client().scan_iter(count=1000))
    assert not [key for key in keys if "zzzz" in key]


@pytest.fixture
def office_account(users: UserStore) -> str:
    name = f"office-{time.monotonic_ns()}"
    users.add(name, "office-pw", networks=("10.1.0.0/16",))
    return name


def test_network_acl(make_app: MakeApp, office_account: str) -> None:
    client = make_app().test_client()
    assert send(client, office_account, "office-pw", "10.1.2.3") == "200"
    response = client.get(
        "/api",
        query_string={
            "command": "SendEmail",
            "Recipient": "a@x.example",
            "Message": "m",
            "Username": office_account,
            "Password": "office-pw",
        },
        environ_base={"REMOTE_ADDR": "192.0.2.50"},
    )
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
    make_app: MakeApp,
    settings: Settings,
    office_account: str,
    peer: str,
    forwarded: str,
    expected: str,
) -> None:
    behind_proxy = replace(settings, trusted_proxies=("127.0.0.1/32",))
    client = make_app(behind_proxy).test_client()
    result = send(client, office_account, "office-pw", peer, **{"X-Forwarded-For": forwarded})
    assert result == expected


# --- argon2 memory: a cap on the password checks one process runs at once ------------------------


class OverlapHasher:
    """The real hasher, recording how many checks run at once; a check whose password starts
    with ``hold`` waits for :attr:`release` first (so a test can keep the cap full)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.running = 0
        self.most = 0
        self.calls = 0
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self.release = threading.Event()

    def verify(self, hash_: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if password.startswith("hold"):
                self.holding.set()
                assert self.release.wait(30)
            return bool(self.real.verify(hash_, password))
        finally:
            with self.lock:
                self.running -= 1

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))


def overlap_app(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, **changes: Any
) -> tuple[Flask, OverlapHasher]:
    app = make_app(**changes)
    users = app.extensions["mailgate"].users
    hasher = OverlapHasher(users._hasher)
    monkeypatch.setattr(users, "_hasher", hasher)
    return app, hasher


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_no_more_password_checks_run_at_once_than_the_cap(
    make_app: MakeApp, users: UserStore, accounts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, hasher = overlap_app(
        make_app, monkeypatch, password_checks=2, password_check_wait_seconds=60.0
    )
    start, codes = threading.Barrier(12), []

    def guess(n: int) -> None:
        client = app.test_client()
        start.wait()
        # Each from its own address and under its own name: no throttle stops any of them.
        codes.append(send(client, f"{accounts[0]}-{n}", "wrong", f"198.51.100.{100 + n}"))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert codes == ["305"] * 12  # every check ran, none refused: they queued
    assert hasher.calls == 12
    assert hasher.most == 2  # 64 MiB each: the memory of two, however many callers


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_a_check_that_waits_past_the_bound_is_503_and_cached_credentials_never_wait(
    make_app: MakeApp, users: UserStore, accounts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, hasher = overlap_app(
        make_app, monkeypatch, password_checks=1, password_check_wait_seconds=0.3
    )
    owner, newcomer = accounts
    client = app.test_client()
    assert send(client, owner, f"{owner}-pw", "203.0.113.40") == "200"  # now in the cache
    holder = threading.Thread(
        target=lambda: send(app.test_client(), newcomer, "hold-me", "203.0.113.41")
    )
    holder.start()
    try:
        assert hasher.holding.wait(30)  # the one slot is taken
        calls = hasher.calls
        # A new check waits 0.3 s for the slot, then gets 503: nothing was queued.
        started = time.monotonic()
        assert send(client, newcomer, f"{newcomer}-pw", "203.0.113.42") == "503"
        assert 0.3 <= time.monotonic() - started < 5
        token = base64.b64encode(f"{newcomer}:{newcomer}-pw".encode()).decode()
        response = client.post(
            "/api/v1/emails",
            json={"recipients": ["a@x.example"], "text": "m"},
            headers={"Authorization": f"Basic {token}"},
            environ_base={"REMOTE_ADDR": "203.0.113.43"},
        )
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        # Known-good credentials from the cache pass at once, no argon2 and no wait.
        started = time.monotonic()
        assert send(client, owner, f"{owner}-pw", "203.0.113.40") == "200"
        assert time.monotonic() - started < 0.3
        assert hasher.calls == calls
    finally:
        hasher.release.set()
        holder.join(30)
    # A 503 is no failed login: the newcomer's right password works at once.
    assert send(client, newcomer, f"{newcomer}-pw", "203.0.113.42") == "200"


# --- the slow lane: an attacker who takes it every minute does not lock the owner out ----------


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_an_owner_on_a_new_address_gets_in_while_the_guesser_holds_the_slow_lane(
    make_app: MakeApp,
    settings: Settings,
    users: UserStore,
    accounts: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tight = replace(settings, login_failures_per_user="10/hour")
    victim = accounts[0]
    app, hasher = counted_app(make_app(tight), monkeypatch)
    client = app.test_client()
    # The guesser fills the name's hourly scope from its network, then takes the slow lane.
    codes = [send(client, victim, f"wrong-{i}", f"192.0.2.{i}") for i in range(1, 12)]
    assert codes == ["305"] * 11  # ten in the scope, the eleventh through the slow lane
    # The owner, from an address it never used, with the right password: in at once.
    assert send(client, victim, f"{victim}-pw", "203.0.113.77") == "200"
    # Guessing stays cut off: the guesser's network has used its lane for this minute, from
    # any of its addresses, and the owner's success opened nothing for anyone else.
    assert [send(client, victim, f"again-{i}", f"192.0.2.{i}") for i in (11, 12, 200)] == [
        "429"
    ] * 3
    assert hasher.calls == 12
    # A second network of the guesser's gets one guess this minute, then nothing either.
    assert [send(client, victim, f"other-{i}", f"198.18.7.{i}") for i in (1, 2)] == ["305", "429"]
