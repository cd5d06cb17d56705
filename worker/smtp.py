"""The SMTP transport of one relay. smtplib's errors are translated here, once, into
Transient/Permanent.

4xx replies, time-outs and refused or dropped connections are transient (retried); 5xx replies
are permanent. A failure before the message is offered (connection, greeting, TLS, login) is
marked ``unsent``, so a route with several relays may hand the e-mail to the next one
(worker.relays). A partial refusal (some recipients refused) still counts as sent, with the
refused addresses in the recorded reply. Logins are a user name and password, or ``AUTH
XOAUTH2`` with an OAuth2 token (worker.oauth).
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from mailgate.errors import DeliveryError, PermanentDelivery, TransientDelivery
from mailgate.relays import SmtpTarget
from worker.oauth import TokenSource, token_source

Data = bytes | bytearray
"""A whole message with CRLF line ends, not dot-stuffed (what worker.message.render writes)."""
WINDOW = 1 << 20
"""Bytes dot-stuffed at a time, for the rare message with a line that starts with a dot."""


class Transport(Protocol):
    """Sends one message; returns the server's final reply, raises DeliveryError subclasses."""

    def send(self, data: Data, sender: str, recipients: list[str]) -> str: ...


class Reply(str):
    """The server's reply to DATA (a ``str``, as :class:`Transport` promises) that also carries
    each recipient's reply to RCPT, by address as sent (``rcpt``)."""

    rcpt: dict[str, str]

    def __new__(cls, text: str, rcpt: dict[str, str]) -> Reply:
        reply = super().__new__(cls, text)
        reply.rcpt = rcpt
        return reply


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
        self._tokens: TokenSource | None = None
        self._tokens_lock = threading.Lock()

    def check(self) -> None:
        """Read what the relay's OAuth2 login needs (a key or certificate file) now, so a
        missing or unreadable one shows at start-up (``OSError``, ``ValueError``)."""
        self.tokens()

    def tokens(self) -> TokenSource | None:
        """This relay's OAuth2 token source (None: no OAuth2), made on first use."""
        if self.target.oauth is None:
            return None
        with self._tokens_lock:
            if self._tokens is None:
                self._tokens = token_source(self.target.oauth, self.timeout)
            return self._tokens

    def send(self, data: Data, sender: str, recipients: list[str]) -> str:
        """Deliver one serialized message; return the server's reply to DATA."""
        session = self._ready()
        try:
            try:
                reply = _transaction(session.client, data, sender, recipients)
            except _StaleSession as stale:
                self._drop()
                if session.sent == 0:
                    raise _closed(stale.disconnected) from None
                # The server closed a kept session before MAIL: nothing of this message was
                # sent, so one fresh session may try again.
                session = self._ready()
                try:
                    reply = _transaction(session.client, data, sender, recipients)
                except _StaleSession as again:
                    raise _closed(again.disconnected) from None
        except DeliveryError:
            self._drop()
            raise
        except BaseException as exc:
            self._drop()
            error = _failure(exc, unsent=False)
            if error is None:
                raise
            raise error from None
        session.sent += 1
        session.last_used = time.monotonic()
        if session.sent >= self.max_per_session:
            self._drop(polite=True)
        return reply

    def _ready(self) -> _Session:
        """This thread's session, connected and logged in. Whatever fails here failed before
        the message was offered: the error says so (``unsent``)."""
        try:
            return self._session()
        except DeliveryError as exc:  # the OAuth2 token
            self._drop()
            exc.unsent = True
            raise
        except BaseException as exc:
            self._drop()
            error = _failure(exc, unsent=True)
            if error is None:
                raise
            raise error from None

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
            if self.target.oauth is not None:
                self._xoauth2(client)
            elif self.target.username:
                client.login(self.target.username, self.target.password or "")
        except BaseException:
            client.close()
            raise
        return client

    def _xoauth2(self, client: smtplib.SMTP) -> None:
        """``AUTH XOAUTH2`` with this process's token for the relay's mailbox."""
        try:
            tokens = self.tokens()
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise TransientDelivery(
                f"cannot read the relay's OAuth2 key or certificate file: {reason}"
            ) from None
        assert tokens is not None and self.target.oauth is not None
        mailbox = self.target.oauth.mailbox
        token, fresh = tokens.get()
        client.ehlo_or_helo_if_needed()
        try:
            _auth_xoauth2(client, mailbox, token)
        except smtplib.SMTPAuthenticationError as exc:
            if fresh or exc.smtp_code != 535:
                raise
            # The relay refused a token this process still held valid (revoked, expired
            # early, clocks apart): renew it once and log in again at once, within the same
            # attempt, so it does not count as one.
            _auth_xoauth2(client, mailbox, tokens.renew(token))

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


def _auth_xoauth2(client: smtplib.SMTP, mailbox: str, token: str) -> None:
    """One ``AUTH XOAUTH2`` exchange; raises SMTPAuthenticationError when it is refused."""

    def answer(challenge: bytes | None = None) -> str:
        # After a refused token the server sends its error (JSON) as a challenge, and the
        # client ends the exchange with an empty line; the server then answers 535 (or 4xx).
        return "" if challenge is not None else f"user={mailbox}\x01auth=Bearer {token}\x01\x01"

    client.auth("XOAUTH2", answer, initial_response_ok=True)


def _closed(exc: smtplib.SMTPServerDisconnected) -> TransientDelivery:
    """A session the server closed before MAIL: nothing of the message reached it."""
    return TransientDelivery(f"connection closed: {exc}", unsent=True)


def _failure(exc: BaseException, unsent: bool) -> DeliveryError | None:
    """smtplib's and the socket's errors as Transient/Permanent (None: not one of them)."""
    error: DeliveryError
    if isinstance(exc, smtplib.SMTPResponseException):
        what = "message"
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            what = "login"
        elif unsent:
            what = "relay"
        error = classify(exc.smtp_code, exc.smtp_error, what)
    elif isinstance(exc, smtplib.SMTPServerDisconnected):
        error = TransientDelivery(f"connection closed: {exc}")
    elif isinstance(exc, TimeoutError):
        error = TransientDelivery("timed out talking to the SMTP server")
    elif isinstance(exc, ssl.SSLError):
        error = TransientDelivery(f"TLS error: {exc.reason or exc}")
    elif isinstance(exc, smtplib.SMTPException):
        error = TransientDelivery(f"SMTP error: {type(exc).__name__}")
    elif isinstance(exc, OSError):
        error = TransientDelivery(
            f"cannot reach the SMTP server: {exc.strerror or type(exc).__name__}"
        )
    else:
        return None
    error.unsent = unsent
    return error


def _transaction(client: smtplib.SMTP, data: Data, sender: str, recipients: list[str]) -> Reply:
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
    replies: dict[str, str] = {}
    for address in recipients:
        code, text = client.rcpt(address)
        replies[address] = reply_text(code, text)
        if code not in (250, 251):
            refused[address] = (code, text)
    if len(refused) == len(recipients):
        lowest = min(refused.values(), key=lambda r: r[0])  # any 4xx makes a retry worth it
        error = classify(*lowest, "all recipients")
        error.rcpt = replies
        raise error
    code, text = _data(client, data)
    if code != 250:  # smtplib returns, not raises, the reply to the end of the data
        raise classify(code, text, "message")
    result = reply_text(code, text)
    if refused:
        listed = ", ".join(f"{addr} ({reply_text(*r)})" for addr, r in refused.items())
        result += f"; refused: {listed}"
    return Reply(result, replies)


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
