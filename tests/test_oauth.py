"""OAuth2 for relays (AUTH XOAUTH2): tokens from a real local token endpoint (Entra ID through
msal, Google through google-auth, and plain RFC 6749), used against a real SMTP server that
refuses expired or revoked tokens; the token cache, its refresh, and every failure's outcome."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from urllib.parse import quote

import pytest

from mailgate.errors import ConfigError, DeliveryError, PermanentDelivery, TransientDelivery
from mailgate.relays import M365_SCOPE, SmtpTarget, parse_route
from tests.relay_servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    TokenEndpoint,
    XOAuth2Handler,
    make_rsa_key,
    xoauth2_smtp,
)
from tests.support import free_port, make_certificate, wait_for
from worker.oauth import TokenSource
from worker.smtp import SmtpTransport

MAILBOX = "ivr@contoso.example"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("oauth-tls"))


@pytest.fixture
def endpoint(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TokenEndpoint]:
    # requests (under msal, google-auth and the generic client) trusts the test's certificate.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    server = TokenEndpoint(*certificate, mailbox=MAILBOX)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def relay(endpoint: TokenEndpoint) -> Iterator[tuple[int, XOAuth2Handler]]:
    with xoauth2_smtp(endpoint) as server:
        yield server.port, server.handler


def generic_url(port: int, endpoint: TokenEndpoint, **options: str) -> str:
    user = f"{quote(CLIENT_ID, safe='')}:{quote(CLIENT_SECRET, safe='')}"
    query = "&".join(
        f"{k}={quote(v, safe='')}"
        for k, v in {
            "oauth": "client_credentials",
            "token_url": f"{endpoint.base}/token",
            "mailbox": MAILBOX,
            **options,
        }.items()
    )
    return f"smtp://{user}@127.0.0.1:{port}?{query}"


def message(to: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"], msg["To"], msg["Subject"] = MAILBOX, to, "t"
    msg["Message-ID"] = f"<oauth-{time.monotonic_ns()}@test>"
    msg.set_content("body")
    return msg.as_bytes()


def send(transport: SmtpTransport, to: str = "a@x.example") -> str:
    return transport.send(message(to), MAILBOX, [to])


def test_the_generic_client_logs_in_with_one_cached_token(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler]
) -> None:
    port, handler = relay
    transport = SmtpTransport(SmtpTarget.parse(generic_url(port, endpoint)), 5, max_per_session=1)
    for i in range(3):
        assert send(transport, f"g{i}@x.example").startswith("250")
    assert len(handler.received) == 3
    assert endpoint.fetched() == 1  # one token for three sessions: cached in the process
    assert handler.refused == []


def test_a_535_renews_the_token_once_and_sends_at_once(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler]
) -> None:
    port, handler = relay
    transport = SmtpTransport(SmtpTarget.parse(generic_url(port, endpoint)), 5, max_per_session=1)
    assert send(transport).startswith("250")
    endpoint.revoke()  # the relay now refuses the token this process still holds valid
    assert send(transport, "after@x.example").startswith("250")
    assert len(handler.refused) == 1
    assert endpoint.fetched() == 2
    assert [r.rcpt_tos for r in handler.received] == [["a@x.example"], ["after@x.example"]]


def test_a_token_is_renewed_before_it_expires(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler]
) -> None:
    port, handler = relay
    endpoint.lifetime = 2.0
    transport = SmtpTransport(SmtpTarget.parse(generic_url(port, endpoint)), 5, max_per_session=1)
    assert send(transport).startswith("250")
    first = next(iter(endpoint.issued))
    wait_for(lambda: endpoint.expired(first), 10, "the first token to expire")
    assert send(transport, "later@x.example").startswith("250")
    assert handler.refused == []  # never offered the expired token: renewed ahead of time
    assert endpoint.fetched() == 2


def test_a_rejected_client_is_permanent_and_named(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler]
) -> None:
    port, handler = relay
    endpoint.mode = "invalid_client"
    transport = SmtpTransport(SmtpTarget.parse(generic_url(port, endpoint)), 5)
    with pytest.raises(PermanentDelivery) as caught:
        send(transport)
    assert "OAuth2 client rejected" in caught.value.reason
    assert "invalid_client" in caught.value.reason
    assert caught.value.unsent
    assert CLIENT_SECRET not in caught.value.reason
    assert handler.received == []


@pytest.mark.parametrize("fault", ["down", "broken"])
def test_a_token_endpoint_down_or_failing_is_temporary(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler], fault: str
) -> None:
    port, handler = relay
    if fault == "down":
        endpoint.stop()
    else:
        endpoint.mode = "broken"
    transport = SmtpTransport(SmtpTarget.parse(generic_url(port, endpoint)), 2)
    with pytest.raises(TransientDelivery, match="OAuth2 token endpoint") as caught:
        send(transport)
    assert caught.value.unsent
    assert handler.received == []


def test_microsoft_365_through_msal(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler]
) -> None:
    port, handler = relay
    url = (
        f"smtp://{CLIENT_ID}:{quote(CLIENT_SECRET, safe='')}@127.0.0.1:{port}?oauth=m365"
        f"&tenant={TENANT}&mailbox={MAILBOX}&authority={quote(endpoint.base, safe='')}"
    )
    target = SmtpTarget.parse(url)
    assert target.oauth is not None and target.oauth.scope == M365_SCOPE
    transport = SmtpTransport(target, 5, max_per_session=1)
    assert send(transport).startswith("250")
    endpoint.revoke()
    assert send(transport, "again@x.example").startswith("250")  # msal asked again, not its cache
    assert endpoint.requests == [f"/{TENANT}/oauth2/v2.0/token"] * 2
    assert len(handler.received) == 2


def test_microsoft_365_with_a_certificate_through_msal(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler], tmp_path: Path
) -> None:
    port, handler = relay
    cert, key = make_certificate(tmp_path)
    endpoint.client_certificate = cert.read_text()
    bundle = tmp_path / "mailgate-entra.pem"
    bundle.write_text(key.read_text() + cert.read_text())
    url = (
        f"smtp://{CLIENT_ID}@127.0.0.1:{port}?oauth=m365&tenant={TENANT}&mailbox={MAILBOX}"
        f"&authority={quote(endpoint.base, safe='')}&cert_file={bundle}"
    )
    assert send(SmtpTransport(SmtpTarget.parse(url), 5)).startswith("250")
    assert endpoint.assertions == 1  # a signed client assertion, checked with the certificate
    assert len(handler.received) == 1


def test_microsoft_365_with_a_wrong_secret_is_permanent(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler]
) -> None:
    port, _ = relay
    url = (
        f"smtp://{CLIENT_ID}:wrong@127.0.0.1:{port}?oauth=m365&tenant={TENANT}"
        f"&mailbox={MAILBOX}&authority={quote(endpoint.base, safe='')}"
    )
    with pytest.raises(PermanentDelivery, match=r"invalid_client.*AADSTS7000215"):
        send(SmtpTransport(SmtpTarget.parse(url), 5))


def test_google_service_account_through_google_auth(
    endpoint: TokenEndpoint, relay: tuple[int, XOAuth2Handler], tmp_path: Path
) -> None:
    port, handler = relay
    key, public = make_rsa_key(tmp_path, "service-account")
    endpoint.google_public_key = public
    key_file = tmp_path / "service-account.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "k1",
                "private_key": key.read_text(),
                "client_email": "mailgate@p.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{endpoint.base}/google/token",
            }
        )
    )
    url = f"smtp://127.0.0.1:{port}?oauth=google&key_file={key_file}&mailbox=user@corp.example"
    assert send(SmtpTransport(SmtpTarget.parse(url), 5)).startswith("250")
    # The token was asked for the impersonated user, with Gmail's scope, by a signed assertion.
    assert [c["sub"] for c in endpoint.google_claims] == ["user@corp.example"]
    assert len(handler.received) == 1


def test_a_missing_google_key_file_is_named(relay: tuple[int, XOAuth2Handler]) -> None:
    url = f"smtp://127.0.0.1:{relay[0]}?oauth=google&key_file=/nonexistent/k.json&mailbox=a@b.c"
    target = SmtpTarget.parse(url)
    transport = SmtpTransport(target, 5)  # Flower builds the app too, without the files
    with pytest.raises(OSError):
        transport.check()  # the worker's start-up
    with pytest.raises(TransientDelivery, match="cannot read the relay's OAuth2 key") as caught:
        send(transport)
    assert caught.value.unsent


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("smtp://h?oauth=m365&tenant=t&mailbox=a@b.c", "client id"),
        ("smtp://id@h?oauth=m365&tenant=t&mailbox=a@b.c", "client secret"),
        ("smtp://id:s@h?oauth=m365&mailbox=a@b.c", "tenant"),
        ("smtp://id:s@h?oauth=m365&tenant=t", "mailbox"),
        ("smtp://id:s@h?oauth=m365&tenant=t&mailbox=a@b.c&authority=http://x", "https"),
        ("smtp://id:s@h?oauth=m365&tenant=t&mailbox=a@b.c&cert_file=/k.pem", "one of the two"),
        ("smtp://id:s@h?oauth=google&key_file=/k.json&mailbox=a@b.c", "key_file=, not"),
        ("smtp://h?oauth=google&mailbox=a@b.c", "key_file"),
        ("smtp://id:s@h?oauth=client_credentials&mailbox=a@b.c", "token_url"),
        ("smtp://id@h?oauth=client_credentials&token_url=https://t&mailbox=a@b.c", "SECRET"),
        ("smtp://id:s@h?oauth=magic&mailbox=a@b.c", "one of"),
        ("smtp://h?tenant=t", "needs oauth"),
        ("smtp://u:p@h?starttls=maybe", "true or false"),
    ],
    ids=["m365-no-id", "m365-no-secret", "m365-no-tenant", "no-mailbox", "http-authority",
         "secret-and-cert", "google-user", "google-no-key", "generic-no-url",
         "generic-no-secret", "unknown-kind", "option-without-oauth", "bad-flag"],
)  # fmt: skip
def test_bad_oauth_urls_name_the_variable_and_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_route(url)
    assert caught.value.variable == "MAILGATE_SMTP_URL"
    assert problem in str(caught.value)


def test_no_secret_in_the_repr_of_a_route() -> None:
    route = parse_route(
        f"smtp://{CLIENT_ID}:{quote(CLIENT_SECRET, safe='')}@h:587?starttls=true&oauth=m365"
        f"&tenant={TENANT}&mailbox={MAILBOX} smtp://u:hunter2@backup:25"
    )
    assert CLIENT_SECRET not in repr(route) and "hunter2" not in repr(route)
    assert [t.name for t in route] == ["h:587", "backup:25"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_renews_in_the_last_quarter_or_five_minutes() -> None:
    clock, fetched = Clock(), []

    def fetch() -> tuple[str, float]:
        fetched.append(clock.now)
        return f"t{len(fetched)}", 3600.0

    source = TokenSource(fetch, clock)
    assert source.get() == ("t1", True)
    clock.now += 3600 - 301
    assert source.get() == ("t1", False)
    clock.now += 2  # within five minutes of the end
    assert source.get() == ("t2", True)
    # A relay refused t2: renewed once; a second thread holding t2 then gets t3, not a fourth.
    assert source.renew("t2") == "t3"
    assert source.renew("t2") == "t3"
    assert len(fetched) == 3


def test_a_failed_fetch_leaves_no_token_behind() -> None:
    calls = []

    def fetch() -> tuple[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise TransientDelivery("OAuth2 token endpoint unreachable: ConnectionError")
        return f"t{len(calls)}", 1.0

    clock = Clock()
    source = TokenSource(fetch, clock)
    assert source.get()[0] == "t1"
    clock.now += 5
    with pytest.raises(DeliveryError):
        source.get()
    assert source.get() == ("t3", True)


def test_a_refused_connection_before_the_token_is_unsent() -> None:
    transport = SmtpTransport(SmtpTarget.parse(f"smtp://127.0.0.1:{free_port()}"), 2)
    with pytest.raises(TransientDelivery) as caught:
        send(transport)
    assert caught.value.unsent
