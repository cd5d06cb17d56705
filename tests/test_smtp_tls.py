"""STARTTLS, SMTPS and AUTH against a real aiosmtpd with a certificate made for the test."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailgate.config import SmtpTarget
from mailgate.errors import PermanentDelivery, TransientDelivery
from tests.support import ScriptedHandler, free_port, make_certificate, wait_for
from worker.smtp import SmtpTransport

SMTP_USER, SMTP_PASSWORD = "relay-user", "relay-secret"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(params=["starttls", "smtps"])
def tls_server(
    request: pytest.FixtureRequest, certificate: tuple[Path, Path]
) -> Iterator[tuple[str, int, ScriptedHandler]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    handler = ScriptedHandler()
    port = free_port()
    common: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": port,
        "authenticator": _authenticator,
    }
    if request.param == "starttls":
        controller = Controller(
            handler, tls_context=context, require_starttls=True, auth_require_tls=True, **common
        )
    else:
        # aiosmtpd does not count implicit TLS as TLS for auth_require_tls; the socket is TLS.
        controller = Controller(handler, ssl_context=context, auth_require_tls=False, **common)
    controller.start()
    yield request.param, port, handler
    controller.stop()


def _message() -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"], msg["To"] = "s@x.example", "r@x.example"
    msg["Message-ID"] = f"<tls-{time.monotonic_ns()}@test>"
    msg.set_content("over TLS")
    return msg.as_bytes()


def _url(mode: str, port: int, query: str = "") -> str:
    scheme, tls = ("smtps", "") if mode == "smtps" else ("smtp", "starttls=true")
    options = "&".join(part for part in (tls, query) if part)
    return f"{scheme}://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{port}" + (
        f"?{options}" if options else ""
    )


def test_tls_with_a_trusted_certificate_and_auth_delivers(
    tls_server: tuple[str, int, ScriptedHandler],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mode, port, handler = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test's own CA
    transport = SmtpTransport(SmtpTarget.parse(_url(mode, port)), timeout=5)
    reply = transport.send(_message(), "s@x.example", ["r@x.example"])
    assert reply.startswith("250")
    wait_for(lambda: handler.received, 5, "the message")
    assert handler.received[0].rcpt_tos == ["r@x.example"]


def test_an_untrusted_certificate_is_refused_by_default(
    tls_server: tuple[str, int, ScriptedHandler],
) -> None:
    mode, port, handler = tls_server
    transport = SmtpTransport(SmtpTarget.parse(_url(mode, port)), timeout=5)
    with pytest.raises(TransientDelivery, match="TLS"):
        transport.send(_message(), "s@x.example", ["r@x.example"])
    assert handler.received == []


def test_verify_false_is_an_explicit_opt_out(tls_server: tuple[str, int, ScriptedHandler]) -> None:
    mode, port, _ = tls_server
    transport = SmtpTransport(SmtpTarget.parse(_url(mode, port, "verify=false")), timeout=5)
    assert transport.send(_message(), "s@x.example", ["r@x.example"]).startswith("250")


def test_wrong_smtp_password_is_permanent_and_not_echoed(
    tls_server: tuple[str, int, ScriptedHandler],
) -> None:
    mode, port, _ = tls_server
    url = _url(mode, port, "verify=false").replace(SMTP_PASSWORD, "not-the-password")
    with pytest.raises(PermanentDelivery) as caught:
        SmtpTransport(SmtpTarget.parse(url), timeout=5).send(
            _message(), "s@x.example", ["r@x.example"]
        )
    assert caught.value.smtp_response is not None
    assert caught.value.smtp_response.startswith("535")
    assert "not-the-password" not in str(caught.value)
