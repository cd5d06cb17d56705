"""The SMTP transport. smtplib's errors are translated here, once, into Transient/Permanent.

4xx replies, time-outs and refused or dropped connections are transient (retried); 5xx replies
are permanent. A partial refusal (some recipients refused) still counts as sent, with the
refused addresses in the recorded reply.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from typing import Protocol

from mailgate.config import SmtpTarget
from mailgate.errors import PermanentDelivery, TransientDelivery


class Transport(Protocol):
    """Sends one message; returns the server's final reply, raises DeliveryError subclasses."""

    def send(self, message: EmailMessage, sender: str, recipients: list[str]) -> str: ...


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


class SmtpTransport:
    """smtplib over plain SMTP, STARTTLS or SMTPS, with optional AUTH; one session a message."""

    def __init__(
        self, target: SmtpTarget, timeout: float, local_hostname: str | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.local_hostname = local_hostname

    def send(self, message: EmailMessage, sender: str, recipients: list[str]) -> str:
        """Deliver one message; return the server's reply to DATA."""
        try:
            client = self._connect()
            try:
                if self.target.username:
                    client.login(self.target.username, self.target.password or "")
                return _transaction(client, message, sender, recipients)
            finally:
                try:
                    client.quit()
                except (smtplib.SMTPException, OSError):
                    client.close()
        except smtplib.SMTPResponseException as exc:
            raise classify(exc.smtp_code, exc.smtp_error, "message") from None
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientDelivery(f"connection closed: {exc}") from None
        except TimeoutError:
            raise TransientDelivery("timed out talking to the SMTP server") from None
        except ssl.SSLError as exc:
            raise TransientDelivery(f"TLS error: {exc.reason or exc}") from None
        except smtplib.SMTPException as exc:
            raise TransientDelivery(f"SMTP error: {type(exc).__name__}") from None
        except OSError as exc:
            raise TransientDelivery(
                f"cannot reach the SMTP server: {exc.strerror or type(exc).__name__}"
            ) from None

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


def _transaction(
    client: smtplib.SMTP, message: EmailMessage, sender: str, recipients: list[str]
) -> str:
    """MAIL, RCPT for each recipient, DATA: the reply to DATA, with any refused recipients."""
    client.ehlo_or_helo_if_needed()
    international = not all(a.isascii() for a in [sender, *recipients])
    options: list[str] = []
    if international:
        if not client.has_extn("smtputf8"):
            raise PermanentDelivery("the SMTP server cannot take international addresses")
        options = ["SMTPUTF8", "BODY=8BITMIME"]
    code, text = client.mail(sender, options)
    if code != 250:
        client.rset()
        raise classify(code, text, "sender")
    refused: dict[str, tuple[int, bytes]] = {}
    for address in recipients:
        code, text = client.rcpt(address)
        if code not in (250, 251):
            refused[address] = (code, text)
    if len(refused) == len(recipients):
        client.rset()
        lowest = min(refused.values(), key=lambda r: r[0])  # any 4xx makes a retry worth it
        raise classify(*lowest, "all recipients")
    policy = SMTPUTF8 if international else SMTP
    code, text = client.data(message.as_bytes(policy=policy))
    if code != 250:  # smtplib returns, not raises, the reply to the end of the data
        raise classify(code, text, "message")
    result = reply_text(code, text)
    if refused:
        listed = ", ".join(f"{addr} ({reply_text(*r)})" for addr, r in refused.items())
        result += f"; refused: {listed}"
    return result
