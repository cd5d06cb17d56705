"""The SMTP transport against real servers: replies classified, time-outs bounded."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from mailgate.config import SmtpTarget
from mailgate.errors import PermanentDelivery, TransientDelivery
from tests.support import SmtpServer, free_port
from worker.smtp import SmtpTransport, classify


def message(to: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"], msg["To"], msg["Subject"] = "s@x.example", to, "t"
    msg["Message-ID"] = f"<smtp-test-{time.monotonic_ns()}@test>"
    msg.set_content("body")
    return msg.as_bytes()


def transport(port: int, timeout: float = 2) -> SmtpTransport:
    return SmtpTransport(SmtpTarget("127.0.0.1", port), timeout)


@pytest.mark.parametrize(
    ("code", "kind"),
    [(421, TransientDelivery), (450, TransientDelivery), (451, TransientDelivery),
     (452, TransientDelivery), (500, PermanentDelivery), (550, PermanentDelivery),
     (554, PermanentDelivery)],
)  # fmt: skip
def test_classify_by_reply_class(code: int, kind: type) -> None:
    error = classify(code, b"text  here", "message")
    assert isinstance(error, kind)
    assert error.smtp_response == f"{code} text here"


def test_accepted_message_returns_the_servers_reply(smtp_server: SmtpServer) -> None:
    reply = transport(smtp_server.port).send(
        message("ok@x.example"), "s@x.example", ["ok@x.example"]
    )
    assert reply.startswith("250")


def test_4xx_on_data_is_transient(smtp_server: SmtpServer) -> None:
    with pytest.raises(TransientDelivery) as caught:
        transport(smtp_server.port).send(
            message("tempfail9-t@x.example"), "s@x.example", ["tempfail9-t@x.example"]
        )
    assert caught.value.smtp_response is not None
    assert caught.value.smtp_response.startswith("451")


def test_5xx_for_every_recipient_is_permanent(smtp_server: SmtpServer) -> None:
    with pytest.raises(PermanentDelivery) as caught:
        transport(smtp_server.port).send(
            message("reject-a@x.example"), "s@x.example", ["reject-a@x.example"]
        )
    assert caught.value.smtp_response is not None
    assert caught.value.smtp_response.startswith("550")


def test_partial_refusal_is_sent_and_reported(smtp_server: SmtpServer) -> None:
    reply = transport(smtp_server.port).send(
        message("ok@x.example"), "s@x.example", ["ok2@x.example", "reject-b@x.example"]
    )
    assert reply.startswith("250")
    assert "refused: reject-b@x.example (550" in reply


def test_refused_connection_is_transient() -> None:
    with pytest.raises(TransientDelivery, match="cannot reach"):
        transport(free_port()).send(message("a@x.example"), "s@x.example", ["a@x.example"])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_silent_server_times_out_as_transient(silent_server: int) -> None:
    started = time.monotonic()
    with pytest.raises(TransientDelivery, match=r"timed out|closed"):
        transport(silent_server, timeout=1).send(
            message("a@x.example"), "s@x.example", ["a@x.example"]
        )
    assert time.monotonic() - started < 10


def test_a_thread_reuses_its_session_and_survives_the_server_closing_it() -> None:
    server = SmtpServer()
    server.start()
    try:
        sender = SmtpTransport(SmtpTarget("127.0.0.1", server.port), timeout=2, max_per_session=3)
        for i in range(5):
            reply = sender.send(message(f"r{i}@x.example"), "s@x.example", [f"r{i}@x.example"])
            assert reply.startswith("250")
        assert server.handler.sessions == 2  # 3 messages, then a fresh session for the rest
        # The server goes away and comes back: the kept session is dead, the next send opens
        # a new one instead of failing the e-mail.
        server.stop()
        server = SmtpServer.on_port(server.port)
        server.start()
        assert sender.send(
            message("after@x.example"), "s@x.example", ["after@x.example"]
        ).startswith("250")
        assert len(server.handler.received) == 1
    finally:
        server.stop()
