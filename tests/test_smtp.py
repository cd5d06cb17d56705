"""The SMTP transport against real servers: replies classified, time-outs bounded."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from mailgate.cli.dev.embedded import port_is_free
from mailgate.config import SmtpTarget
from mailgate.errors import PermanentDelivery, TransientDelivery
from tests.support import Service, SmtpServer, free_port, wait_for
from worker import smtp
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


@pytest.mark.parametrize("window", [1, 7, 64, 1 << 20])
def test_lines_that_start_with_a_dot_arrive_as_written(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    # The message goes out as it is, dot-stuffed a window at a time: a line that starts with
    # a dot anywhere, at a window's edge too, must reach the server unchanged.
    monkeypatch.setattr(smtp, "WINDOW", window)
    email_id = f"dots-{window}"
    data = bytearray(
        f"From: s@x.example\r\nTo: dots@x.example\r\nMessage-ID: <{email_id}@test>\r\n\r\n".encode()
        + b".\r\n..\r\n.x\r\n\r\n. .\r\nend.\r\n.\r\n...\r\n" * 20
    )
    reply = transport(smtp_server.port).send(data, "s@x.example", ["dots@x.example"])
    assert reply.startswith("250")
    received = smtp_server.handler.find(email_id)
    assert received is not None and received.data == bytes(data)


def test_a_non_ascii_address_in_a_header_only_needs_smtputf8(smtp_server: SmtpServer) -> None:
    data = "From: s@x.example\r\nTo: r@x.example\r\nReply-To: jürgen@x.example\r\n"
    data += "Message-ID: <utf8-reply-to@test>\r\n\r\nbody\r\n"
    reply = transport(smtp_server.port).send(data.encode(), "s@x.example", ["r@x.example"])
    assert reply.startswith("250")
    received = smtp_server.handler.find("utf8-reply-to")
    assert received is not None and received.data == data.encode()
    plain = SmtpServer()  # one without SMTPUTF8 (aiosmtpd's Controller offers it by default)
    plain.controller = Controller(
        plain.handler,
        hostname="127.0.0.1",
        port=plain.port,
        decode_data=False,
        enable_SMTPUTF8=False,
    )
    plain.start()
    try:
        with pytest.raises(PermanentDelivery, match="international"):
            transport(plain.port).send(data.encode(), "s@x.example", ["r@x.example"])
    finally:
        plain.stop()


@pytest.mark.integration  # an SMTP server process of its own: its memory is not ours
def test_the_message_is_sent_without_a_copy(tmp_path: Path) -> None:
    port = free_port()
    sink = Service(
        "sink",
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-s",
            str(64 << 20),
            "-l",
            f"127.0.0.1:{port}",
        ],
        dict(os.environ),
        tmp_path / "sink.log",
    ).start()
    try:
        wait_for(lambda: not port_is_free(port), 30, "the SMTP sink")
        body = b"QUJD" * 19 + b"\r\n"  # base64 lines: nothing to dot-stuff
        data = bytearray(b"From: s@x.example\r\nTo: r@x.example\r\n\r\n" + body * 250_000)
        sender = transport(port, timeout=60)
        assert sender.send(
            b"From: s@x.example\r\n\r\nwarm-up\r\n", "s@x.example", ["r@x.example"]
        ).startswith("250")
        tracemalloc.start()
        try:
            assert sender.send(data, "s@x.example", ["r@x.example"]).startswith("250")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(data) > 19_000_000
        assert peak < 1_000_000  # smtplib's data() would hold three copies at once
    finally:
        sink.stop()
