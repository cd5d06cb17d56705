"""Several relays and routes: failover in order, the breaker, per-account routes, the relay in
the status, OAuth2 and DKIM through a real worker.

The logic of a route (which relay next, when one is skipped) is tested first with fake
transports; the rest runs a real worker of this module's own against real SMTP servers: relay 1
behind a switchable gate (down, 421, silent), relay 2, a dead relay for one tenant's route, and
an XOAUTH2 relay with its token endpoint for another's.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import dkim
import pytest
from flask.testing import FlaskClient

from mailgate.config import Settings
from mailgate.errors import ConfigError, DeliveryError, PermanentDelivery, TransientDelivery
from mailgate.relays import parse_route
from mailgate.status import StatusStore
from mailgate.users import UserStore
from tests.conftest import RunCli
from tests.relay_servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    TokenEndpoint,
    XOAuth2Server,
    make_rsa_key,
    xoauth2_smtp,
)
from tests.support import (
    Gate,
    RedisServer,
    ScriptedHandler,
    Service,
    SmtpServer,
    free_port,
    mailgate_env,
    make_certificate,
    wait_for,
    worker_args,
)
from worker.dkim import Signer
from worker.relays import Breaker, RelayChain, Relays

PASSWORD = "relays-test-pw"
DEFAULT, DEAD, OAUTH, BAD_CLIENT, SIGNER = "globex", "acme", "oauthco", "badclient", "signer"
MAILBOX = "ivr@contoso.example"
SIGNED_DOMAIN, SELECTOR = "signed.example", "mg2026"


# The logic of a route, with fake transports ----------------------------------------------


class Fake:
    """A relay that raises the queued errors, then answers 250."""

    def __init__(self, *errors: DeliveryError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def send(self, data: bytes, sender: str, recipients: list[str]) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "250 ok"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def chain(*relays: Fake, clock: Clock | None = None, limit: int = 2) -> RelayChain:
    breakers = [Breaker(limit, 30.0, clock or Clock()) for _ in relays]
    return RelayChain([(r, f"r{i + 1}:25") for i, r in enumerate(relays)], breakers)


def down(reason: str = "cannot reach the SMTP server: Connection refused") -> TransientDelivery:
    return TransientDelivery(reason, unsent=True)


def test_a_relay_that_fails_before_mail_hands_over_to_the_next() -> None:
    first, second = Fake(down()), Fake()
    assert chain(first, second).handoff(b"m", "s@x", ["r@x"]).relay == "r2:25"
    assert (first.calls, second.calls) == (1, 1)


def test_a_5xx_for_the_recipients_is_final_and_not_passed_on() -> None:
    first, second = Fake(PermanentDelivery("all recipients rejected: 550 no", "550 no")), Fake()
    with pytest.raises(PermanentDelivery, match="550"):
        chain(first, second).handoff(b"m", "s@x", ["r@x"])
    assert second.calls == 0


def test_a_4xx_after_mail_is_retried_later_not_passed_on() -> None:
    first, second = Fake(TransientDelivery("message deferred: 451 later", "451 later")), Fake()
    with pytest.raises(TransientDelivery, match="451"):
        chain(first, second).handoff(b"m", "s@x", ["r@x"])
    assert second.calls == 0  # the relay may hold the message: no second copy elsewhere


def test_when_every_relay_fails_the_error_names_each() -> None:
    refused = PermanentDelivery("login rejected: 535 5.7.8 no", "535 5.7.8 no", unsent=True)
    with pytest.raises(TransientDelivery) as caught:
        chain(Fake(down()), Fake(refused)).handoff(b"m", "s@x", ["r@x"])
    assert caught.value.reason.startswith("no relay available: r1:25: cannot reach")
    assert "r2:25: login rejected: 535" in caught.value.reason
    both = chain(Fake(refused), Fake(refused))
    with pytest.raises(PermanentDelivery, match="every relay refused"):
        both.handoff(b"m", "s@x", ["r@x"])


def test_a_relay_failing_in_a_row_is_tried_last_for_a_while() -> None:
    clock = Clock()
    first, second = Fake(down(), down(), down()), Fake()
    route = chain(first, second, clock=clock, limit=2)
    for _ in range(2):
        assert route.handoff(b"m", "s@x", ["r@x"]).relay == "r2:25"
    assert first.calls == 2
    assert route.handoff(b"m", "s@x", ["r@x"]).relay == "r2:25"
    assert first.calls == 2  # skipped: relay 2 took it without relay 1 being tried
    clock.now += 31  # the while is over: relay 1 gets one try, fails, and is skipped again
    assert route.handoff(b"m", "s@x", ["r@x"]).relay == "r2:25"
    assert first.calls == 3
    assert route.handoff(b"m", "s@x", ["r@x"]).relay == "r2:25"
    assert first.calls == 3
    clock.now += 31  # back: it works, and its count starts afresh
    assert route.handoff(b"m", "s@x", ["r@x"]).relay == "r1:25"


def test_skipped_relays_are_still_tried_when_the_others_fail() -> None:
    clock = Clock()
    first, second = Fake(down()), Fake(down(), down())
    route = chain(first, second, clock=clock, limit=1)
    with pytest.raises(TransientDelivery):
        route.handoff(b"m", "s@x", ["r@x"])  # both skipped now
    assert route.handoff(b"m", "s@x", ["r@x"]).relay == "r1:25"  # tried anyway, in order


def test_an_account_route_is_built_once_and_follows_the_users_file(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.toml")
    users.add("a", "pw-a", smtp="smtp://relay-a:25 smtp://relay-b:2525")
    users.add("b", "pw-b")
    built: list[str] = []

    def transport(target: Any, timeout: float) -> Fake:
        built.append(target.name)
        return Fake()

    relays = Relays(parse_route("smtp://default:25"), 5, users=users, transport=transport)
    assert relays.handoff("a", b"m", "s@x", ["r@x"]).relay == "relay-a:25"
    assert relays.handoff("a", b"m", "s@x", ["r@x"]).relay == "relay-a:25"
    assert relays.handoff("b", b"m", "s@x", ["r@x"]).relay == "default:25"
    assert relays.handoff("gone", b"m", "s@x", ["r@x"]).relay == "default:25"
    assert built == ["default:25", "relay-a:25", "relay-b:2525"]
    users.update("a", smtp="")
    assert relays.handoff("a", b"m", "s@x", ["r@x"]).relay == "default:25"


@pytest.mark.slow  # argon2 for each login: seconds on a busy machine
def test_the_cli_sets_shows_and_clears_an_account_route(tmp_path: Path, mailgate: RunCli) -> None:
    env = {"MAILGATE_USERS_FILE": str(tmp_path / "users.toml")}
    route = "smtp://u:relay-pw@mx1.example:587?starttls=true smtp://mx2.example:25"
    added = mailgate(
        "user",
        "add",
        "tenant",
        "--password-stdin",
        "--smtp",
        "-",
        env=env,
        input=f"tenant-secret-pw\n{route}\n",
    )
    assert added.exit_code == 0, added.output
    assert UserStore(tmp_path / "users.toml").get("tenant").smtp == route  # type: ignore[union-attr]
    listed = mailgate("user", "list", env=env).stdout
    assert "mx1.example:587, mx2.example:25" in listed and "relay-pw" not in listed
    bad = mailgate("user", "update", "tenant", "--smtp", "http://x", env=env)
    assert bad.exit_code == 2
    assert (
        bad.stderr.strip() == "mailgate: invalid relay: --smtp: must start with smtp:// or smtps://"
    )
    cleared = mailgate("user", "update", "tenant", "--default-smtp", "--rate", "5/second", env=env)
    assert cleared.exit_code == 0, cleared.output
    account = UserStore(tmp_path / "users.toml").get("tenant")
    assert account is not None and account.smtp is None and account.rate == "5/second"
    assert mailgate("user", "update", "nobody", "--rate", "1/second", env=env).exit_code == 2


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("smtp://a:25", ["a:25"]),
        ("smtp://a:25 smtps://b", ["a:25", "b:465"]),
        ("smtp://a:25,smtp://b:26 ,  smtp://c:27", ["a:25", "b:26", "c:27"]),
        ("\n smtp://u:p%2Cq@a:25\n\tsmtp://b:26\n", ["a:25", "b:26"]),
        ("smtp://[::1]:2525", ["[::1]:2525"]),
    ],
    ids=["one", "space", "commas", "lines", "ipv6"],
)
def test_a_route_lists_relays_in_order(text: str, names: list[str]) -> None:
    assert [target.name for target in parse_route(text)] == names


def test_an_empty_or_stray_route_is_refused() -> None:
    with pytest.raises(ConfigError, match="names no relay"):
        parse_route(" \n ")
    with pytest.raises(ConfigError, match="MAILGATE_SMTP_URL: must start with smtp://"):
        Settings.from_env({"MAILGATE_SMTP_URL": "smtp://a:25 , mx.example"})


# DKIM -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_rsa_key(tmp_path_factory.mktemp("dkim"), "dkim")


def dns_record(public_pem: str) -> bytes:
    body = "".join(line for line in public_pem.splitlines() if "-----" not in line)
    return f"v=DKIM1; k=rsa; p={body}".encode()


def dnsfunc(public_pem: str, name: str = f"{SELECTOR}._domainkey.{SIGNED_DOMAIN}."):
    def lookup(query: bytes, timeout: int = 5) -> bytes | None:
        return dns_record(public_pem) if query.decode() == name else None

    return lookup


def test_a_missing_or_bad_dkim_key_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Signer.load([("x.example", "s", tmp_path / "missing.pem")])
    assert caught.value.variable == "MAILGATE_DKIM_KEYS"
    assert "cannot read the key of x.example" in str(caught.value)
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not an RSA private key"):
        Signer.load([("x.example", "s", tmp_path / "junk.pem")])


@pytest.mark.parametrize(
    "value",
    ["example.com", "example.com=sel", "example.com=sel:relative.pem", "bad domain=s:/k.pem",
     "a.example=s:/k.pem a.example=t:/l.pem"],
    ids=["no-selector", "no-path", "relative", "bad-domain", "twice"],
)  # fmt: skip
def test_bad_dkim_settings_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"MAILGATE_DKIM_KEYS": value})
    assert caught.value.variable == "MAILGATE_DKIM_KEYS"


@pytest.mark.integration
def test_a_worker_with_an_unreadable_dkim_key_stops_with_one_line(tmp_path: Path) -> None:
    env = {"MAILGATE_DKIM_KEYS": f"x.example=s:{tmp_path}/nope.pem", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import worker.app"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"mailgate: MAILGATE_DKIM_KEYS: cannot read the key of x.example, {tmp_path}/nope.pem: "
        "No such file or directory"
    ]
    # Flower loads the same app to know its tasks, sends nothing, and needs no key.
    flower = (
        "import sys; sys.argv = ['celery', '-A', 'worker.app', 'flower', '--address=127.0.0.1']"
        "; import worker.app"
    )
    result = subprocess.run(
        [sys.executable, "-c", flower],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# A real worker ----------------------------------------------------------------------------


class FirstRelayHandler(ScriptedHandler):
    """Relay 1: also refuses ``only1-...@`` with 550, which relay 2 would take."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("only1-"):
            return "550 5.1.1 Not here"
        return await super().handle_RCPT(server, session, envelope, address, options)


@dataclass
class Rig:
    redis: RedisServer
    relay1: SmtpServer
    gate: Gate
    relay2: SmtpServer
    oauth: XOAuth2Server
    endpoint: TokenEndpoint
    settings: Settings
    worker: Service
    public_key: str


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, dkim_key: tuple[Path, str]) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("relays")
    redis_server = RedisServer(workdir / "redis")
    redis_server.start()
    relay1, relay2 = SmtpServer(), SmtpServer()
    relay1.handler = FirstRelayHandler()
    relay1.controller.handler = relay1.handler
    relay1.start()
    relay2.start()
    gate = Gate(relay1.port)
    cert, key = make_certificate(workdir)
    endpoint = TokenEndpoint(cert, key, mailbox=MAILBOX)
    endpoint.start()
    with xoauth2_smtp(endpoint) as oauth:
        env = mailgate_env(
            workdir,
            redis_server.url,
            f"{gate.url} {relay2.url}",
            RETRY_BASE_SECONDS="0.3",
            RETRY_MAX_DELAY_SECONDS="1",
            MAX_ATTEMPTS="30",
            REDELIVERY_SECONDS="15",
            SMTP_TIMEOUT_SECONDS="1",
            RELAY_FAILURES="2",
            RELAY_SKIP_SECONDS="2",
            DKIM_KEYS=f"{SIGNED_DOMAIN}={SELECTOR}:{dkim_key[0]}",
        )
        env["REQUESTS_CA_BUNDLE"] = str(cert)  # the worker trusts the test's token endpoint
        settings = Settings.from_env(env)
        users = UserStore(settings.users_file)
        users.add(DEFAULT, PASSWORD)
        users.add(DEAD, PASSWORD, smtp=f"smtp://127.0.0.1:{free_port()}")
        token_url = quote(f"{endpoint.base}/token", safe="")
        route = (
            f"smtp://{CLIENT_ID}:{quote(CLIENT_SECRET, safe='')}@127.0.0.1:{oauth.port}"
            f"?oauth=client_credentials&token_url={token_url}&mailbox={MAILBOX}"
        )
        users.add(OAUTH, PASSWORD, ("*@contoso.example",), smtp=route)
        users.add(BAD_CLIENT, PASSWORD, smtp=route.replace(quote(CLIENT_SECRET, safe=""), "x"))
        users.add(SIGNER, PASSWORD, (f"*@{SIGNED_DOMAIN}",))
        worker = Service("worker", worker_args(4), env, workdir / "worker.log").start()
        worker.wait_output(r"ready\.", 60)
        yield Rig(
            redis_server, relay1, gate, relay2, oauth, endpoint, settings, worker, dkim_key[1]
        )
        worker.stop()
    endpoint.stop()
    gate.close()
    relay1.stop()
    relay2.stop()
    redis_server.stop()


@pytest.fixture(scope="module")
def settings(rig: Rig) -> Settings:
    return rig.settings


@pytest.fixture(scope="module")
def users(settings: Settings) -> UserStore:
    return UserStore(settings.users_file)


@pytest.fixture(scope="module")
def store(settings: Settings) -> StatusStore:
    return StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)


def accept(client: FlaskClient, user: str, recipients: list[str], **params: str) -> list[str]:
    ids = []
    for recipient in recipients:
        response = client.get(
            "/api",
            query_string={
                "command": "SendEmail",
                "Recipient": recipient,
                "Message": "relay test",
                "Subject": "Relays",
                "Username": user,
                "Password": PASSWORD,
                **params,
            },
        )
        root = ET.fromstring(response.data)
        assert root.findtext("Code") == "200", response.data
        ids.append(str(root.findtext("EmailId")))
    return ids


def final(store: StatusStore, ids: list[str], timeout: float = 40) -> list[Any]:
    def done() -> list[Any] | None:
        records = [store.get(i) for i in ids]
        if all(r is not None and r.status.final for r in records):
            return records
        return None

    return wait_for(done, timeout, f"{len(ids)} e-mails to end")


def ozeki_status(client: FlaskClient, user: str, email_id: str) -> ET.Element:
    return ET.fromstring(
        client.get(
            "/api",
            query_string={
                "command": "GetEmailStatus",
                "EmailId": email_id,
                "Username": user,
                "Password": PASSWORD,
            },
        ).data
    )


@pytest.mark.integration
def test_a_5xx_from_relay_1_is_final_and_relay_2_never_sees_the_e_mail(
    rig: Rig, client: FlaskClient, store: StatusStore
) -> None:
    [email_id] = accept(client, DEFAULT, ["only1-a@relays.example"])
    [record] = final(store, [email_id])
    assert record.status.value == "Failed" and "550" in record.last_error
    assert rig.relay2.handler.count(email_id) == 0 and rig.relay1.handler.count(email_id) == 0
    ok = accept(client, DEFAULT, ["first@relays.example"])
    assert final(store, ok)[0].relay == f"127.0.0.1:{rig.gate.port}"  # relay 1, when it works


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["refuse", "421", "silent"], ids=["down", "421", "slow"])
def test_relay_1_failing_hands_every_e_mail_to_relay_2_once(
    rig: Rig, client: FlaskClient, store: StatusStore, fault: str
) -> None:
    rig.gate.set(fault)
    try:
        ids = accept(client, DEFAULT, [f"{fault}-{i}@relays.example" for i in range(4)])
        records = final(store, ids)
    finally:
        rig.gate.set("open")
    relay2 = f"127.0.0.1:{rig.relay2.port}"
    assert [r.status.value for r in records] == ["Sent"] * 4
    assert [r.attempts for r in records] == [1] * 4  # failover within the attempt
    assert [r.relay for r in records] == [relay2] * 4
    assert [rig.relay2.handler.count(i) for i in ids] == [1] * 4  # none lost, none twice
    assert [rig.relay1.handler.count(i) for i in ids] == [0] * 4
    root = ozeki_status(client, DEFAULT, ids[0])
    assert root.findtext("Relay") == relay2
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{DEFAULT}:{PASSWORD}".encode()).decode()
    }
    rest = client.get(f"/api/v1/emails/{ids[0]}", headers=headers).get_json()
    assert rest["relay"] == relay2
    assert "skipped for 2 s" in rig.worker.output()  # the breaker tripped after two failures


@pytest.mark.integration
def test_one_tenants_dead_relay_does_not_hold_up_the_others(
    rig: Rig, client: FlaskClient, store: StatusStore
) -> None:
    dead = accept(client, DEAD, [f"dead-{i}@relays.example" for i in range(6)])
    alive = accept(client, DEFAULT, [f"alive-{i}@relays.example" for i in range(6)])
    records = final(store, alive, timeout=20)
    assert all(r.status.value == "Sent" for r in records)
    stuck = [store.get(i) for i in dead]
    assert all(r is not None and not r.status.final for r in stuck)
    assert all(
        r is not None and "cannot reach" in (r.last_error or "") for r in stuck if r.last_error
    )
    assert all(rig.relay1.handler.count(i) + rig.relay2.handler.count(i) == 0 for i in dead)
    for email_id in dead:  # withdraw them, the tenant's relay stays dead
        client.get(
            "/api",
            query_string={
                "command": "CancelEmail",
                "EmailId": email_id,
                "Username": DEAD,
                "Password": PASSWORD,
            },
        )


@pytest.mark.integration
def test_an_account_with_an_oauth2_relay_sends_through_it(
    rig: Rig, client: FlaskClient, store: StatusStore
) -> None:
    ids = accept(client, OAUTH, ["o1@relays.example", "o2@relays.example"], Sender=MAILBOX)
    records = final(store, ids)
    assert [r.status.value for r in records] == ["Sent", "Sent"]
    assert {r.relay for r in records} == {f"127.0.0.1:{rig.oauth.port}"}
    assert sum(rig.oauth.handler.count(i) for i in ids) == 2
    assert rig.relay2.handler.count(ids[0]) == 0
    # The relay restarts (its sessions end) and refuses the token the worker holds: the
    # worker renews it once and sends within the same attempt.
    rig.endpoint.revoke()
    rig.oauth.restart()
    [again] = accept(client, OAUTH, ["o3@relays.example"], Sender=MAILBOX)
    [record] = final(store, [again])
    assert record.status.value == "Sent" and record.attempts == 1
    assert len(rig.oauth.handler.refused) == 1


@pytest.mark.integration
def test_a_rejected_oauth2_client_fails_at_once_naming_it(
    rig: Rig, client: FlaskClient, store: StatusStore, settings: Settings
) -> None:
    [email_id] = accept(client, BAD_CLIENT, ["bad@relays.example"])
    [record] = final(store, [email_id])
    assert record.status.value == "Failed" and record.attempts == 1
    assert "OAuth2 client rejected by the token endpoint (invalid_client" in record.last_error
    root = ozeki_status(client, BAD_CLIENT, email_id)
    assert "invalid_client" in (root.findtext("LastError") or "")
    assert CLIENT_SECRET not in rig.worker.output()


@pytest.mark.integration
def test_a_token_endpoint_down_is_retried_then_sent(
    rig: Rig, client: FlaskClient, store: StatusStore
) -> None:
    rig.endpoint.revoke()  # the worker must ask for a new token, and cannot
    rig.oauth.restart()  # no kept session to send through without logging in
    rig.endpoint.stop()
    try:
        [email_id] = accept(client, OAUTH, ["later@relays.example"], Sender=MAILBOX)

        def retrying() -> bool:
            record = store.get(email_id)
            return record is not None and "OAuth2 token endpoint unreachable" in (
                record.last_error or ""
            )

        wait_for(retrying, 20, "the token endpoint failure to be recorded")
    finally:
        rig.endpoint.start()
    [record] = final(store, [email_id])
    assert record.status.value == "Sent" and record.attempts > 1


@pytest.mark.integration
def test_dkim_signed_bytes_verify_against_the_public_key(
    rig: Rig, client: FlaskClient, store: StatusStore
) -> None:
    [email_id] = accept(
        client,
        SIGNER,
        ["dkim@relays.example"],
        Sender=f"Voicemail <vm@{SIGNED_DOMAIN}>",
        Subject="Voicemail from +1 555 0100",
    )
    final(store, [email_id])
    received = rig.relay1.handler.find(email_id) or rig.relay2.handler.find(email_id)
    assert received is not None
    data = received.data
    assert data.startswith(b"DKIM-Signature:")
    signature = received.message["DKIM-Signature"]
    assert f"d={SIGNED_DOMAIN}" in signature and f"s={SELECTOR}" in signature
    assert "c=relaxed/relaxed" in signature
    signed = dict(p.strip().split("=", 1) for p in signature.split(";") if "=" in p)["h"]
    names = [n.strip().lower() for n in signed.split(":")]
    assert {"from", "to", "subject", "date", "message-id"} <= set(names)
    assert names.count("from") == 2  # over-signed
    assert not {"received", "return-path"} & set(names)
    lookup = dnsfunc(rig.public_key)
    assert dkim.verify(data, dnsfunc=lookup)
    # A relay adds trace fields on the way: the signature still holds.
    assert dkim.verify(b"Received: from mailgate by relay; today\r\n" + data, dnsfunc=lookup)
    # Anything the reader sees, changed, breaks it.
    assert not dkim.verify(data.replace(b"Voicemail from", b"Voicemail FROM"), dnsfunc=lookup)
    # A sender domain without a key is sent unsigned.
    [plain] = accept(client, DEFAULT, ["unsigned@relays.example"])
    final(store, [plain])
    other = rig.relay1.handler.find(plain) or rig.relay2.handler.find(plain)
    assert other is not None and b"DKIM-Signature" not in other.data
