"""The SMTP transport. smtplib's errors are translated here, once, into Transient/Permanent.

4xx replies, time-outs and refused or dropped connections are transient (retried); 5xx replies
are permanent. A partial refusal (some recipients refused) still counts as sent, with the
refused addresses in the recorded reply.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from mailgate.config import SmtpTarget
from mailgate.errors import PermanentDelivery, TransientDelivery

Data = bytes | bytearray
"""A whole message with CRLF line ends, not dot-stuffed (what worker.message.render writes)."""
WINDOW = 1 << 20
"""Bytes dot-stuffed at a time, for the rare message with a line that starts with a dot."""


class Transport(Protocol):
    """Sends one message; returns the server's final reply, raises DeliveryError subclasses."""

    def send(self, data: Data, sender: str, recipients: list[str]) -> str: ...


def reply_text(code: int, text: bytes | str) -> str:
    """``"250 2.0.0 Ok"`` from smtplib's (code, message) pair."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}".strip()


def classify(code: int, text: bytes | str, what: str) -> TransientDelivery | PermanentDelivery:
    """The error for an SMTP reply code: 5xx permanent, anything else transient."""
    reply = reply_text(code, text)
    if 500 <= code < 600:
        return PermanentDelivery(f"{what} rejected: {reply}", reply)
    return TransientDelivery(f"{what} deferred: {reply}", reply)


class _StaleSession(Exception):
    """The server had closed the session before MAIL: the message was not sent at all."""

    def __init__(self, disconnected: smtplib.SMTPServerDisconnected) -> None:
        super().__init__(str(disconnected))
        self.disconnected = disconnected


@dataclass
class _Session:
    client: smtplib.SMTP
    sent: int = 0
    last_used: float = field(default_factory=time.monotonic)


class SmtpTransport:
    """smtplib over plain SMTP, STARTTLS or SMTPS, with optional AUTH.

    Each worker thread keeps its SMTP session open for the next message (connect, TLS and AUTH
    cost more than the message itself on a busy relay), up to ``max_per_session`` messages.
    A session idle for ``idle_check_seconds`` is probed with NOOP first; one the server closed
    meanwhile is replaced before MAIL, so a stale session never turns into a failed e-mail.
    After any error the session is dropped, never reused.
    """

    def __init__(
        self,
        target: SmtpTarget,
        timeout: float,
        local_hostname: str | None = None,
        max_per_session: int = 100,
        idle_check_seconds: float = 5.0,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.max_per_session = max_per_session
        self.idle_check_seconds = idle_check_seconds
        self._local = threading.local()

    def send(self, data: Data, sender: str, recipients: list[str]) -> str:
        """Deliver one serialized message; return the server's reply to DATA."""
        try:
            session = self._session()
            try:
                reply = _transaction(session.client, data, sender, recipients)
            except _StaleSession as stale:
                self._drop()
                if session.sent == 0:
                    raise stale.disconnected from None
                # The server closed a kept session before MAIL: nothing of this message was
                # sent, so one fresh session may try again.
                session = self._session()
                try:
                    reply = _transaction(session.client, data, sender, recipients)
                except _StaleSession as again:
                    raise again.disconnected from None
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise classify(exc.smtp_code, exc.smtp_error, "message") from None
        except smtplib.SMTPServerDisconnected as exc:
            self._drop()
            raise TransientDelivery(f"connection closed: {exc}") from None
        except TimeoutError:
            self._drop()
            raise TransientDelivery("timed out talking to the SMTP server") from None
        except ssl.SSLError as exc:
            self._drop()
            raise TransientDelivery(f"TLS error: {exc.reason or exc}") from None
        except smtplib.SMTPException as exc:
            self._drop()
            raise TransientDelivery(f"SMTP error: {type(exc).__name__}") from None
        except OSError as exc:
            self._drop()
            raise TransientDelivery(
                f"cannot reach the SMTP server: {exc.strerror or type(exc).__name__}"
            ) from None
        except BaseException:
            self._drop()
            raise
        session.sent += 1
        session.last_used = time.monotonic()
        if session.sent >= self.max_per_session:
            self._drop(polite=True)
        return reply

    def close(self) -> None:
        """End this thread's session (QUIT)."""
        self._drop(polite=True)

    def _session(self) -> _Session:
        """This thread's open session, checked if it sat idle, or a new one."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is not None and time.monotonic() - session.last_used > self.idle_check_seconds:
            try:
                code, _ = session.client.noop()
            except (smtplib.SMTPException, OSError):
                code = 0
            if code != 250:
                self._drop()
                session = None
        if session is None:
            session = _Session(self._open())
            self._local.session = session
        return session

    def _drop(self, polite: bool = False) -> None:
        session: _Session | None = getattr(self._local, "session", None)
        self._local.session = None
        if session is None:
            return
        try:
            if polite:
                session.client.quit()
            else:
                session.client.close()
        except (smtplib.SMTPException, OSError):
            session.client.close()

    def _open(self) -> smtplib.SMTP:
        client = self._connect()
        try:
            if self.target.username:
                client.login(self.target.username, self.target.password or "")
        except BaseException:
            client.close()
            raise
        return client

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.target.verify:  # explicit opt-out (?verify=false), for development only
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        t = self.target
        if t.ssl:
            return smtplib.SMTP_SSL(
                t.host, t.port, self.local_hostname, timeout=self.timeout, context=self._context()
            )
        client = smtplib.SMTP(t.host, t.port, self.local_hostname, timeout=self.timeout)
        if t.starttls:
            client.starttls(context=self._context())
        return client


def _transaction(client: smtplib.SMTP, data: Data, sender: str, recipients: list[str]) -> str:
    """MAIL, RCPT for each recipient, DATA: the reply to DATA, with any refused recipients."""
    try:
        client.ehlo_or_helo_if_needed()
    except smtplib.SMTPServerDisconnected as exc:
        raise _StaleSession(exc) from exc
    # A non-ASCII address in the envelope, or in a header (Reply-To): written as UTF-8.
    head = data[: max(0, data.find(b"\r\n\r\n"))]  # a copy of the header block only
    international = not all(a.isascii() for a in [sender, *recipients]) or not head.isascii()
    options: list[str] = []
    if international:
        if not client.has_extn("smtputf8"):
            raise PermanentDelivery("the SMTP server cannot take international addresses")
        options = ["SMTPUTF8", "BODY=8BITMIME"]
    try:
        code, text = client.mail(sender, options)
    except smtplib.SMTPServerDisconnected as exc:
        raise _StaleSession(exc) from exc
    if code != 250:
        raise classify(code, text, "sender")
    refused: dict[str, tuple[int, bytes]] = {}
    for address in recipients:
        code, text = client.rcpt(address)
        if code not in (250, 251):
            refused[address] = (code, text)
    if len(refused) == len(recipients):
        lowest = min(refused.values(), key=lambda r: r[0])  # any 4xx makes a retry worth it
        raise classify(*lowest, "all recipients")
    code, text = _data(client, data)
    if code != 250:  # smtplib returns, not raises, the reply to the end of the data
        raise classify(code, text, "message")
    result = reply_text(code, text)
    if refused:
        listed = ", ".join(f"{addr} ({reply_text(*r)})" for addr, r in refused.items())
        result += f"; refused: {listed}"
    return result


def _data(client: smtplib.SMTP, data: Data) -> tuple[int, bytes]:
    """DATA, the message, the final dot: smtplib's own ``data`` holds three more copies of
    the message at once (dot-stuffed, line ends fixed, dot appended). Here the message is sent
    as it is, and only one that has a line starting with a dot is copied, a window at a time."""
    client.putcmd("data")
    code, reply = client.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    with memoryview(data) as view:
        if not data.startswith(b".") and data.find(b"\n.") < 0:
            client.send(view)
        else:
            for start in range(0, len(data), WINDOW):
                window = bytes(view[start : start + WINDOW])
                stuffed = window.replace(b"\n.", b"\n..")
                if window.startswith(b".") and (start == 0 or data[start - 1] == ord("\n")):
                    stuffed = b"." + stuffed
                client.send(stuffed)
    client.send(b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")
    return client.getreply()
