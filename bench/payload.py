"""The one e-mail every figure sends: the same sender, recipient, subject and ~1 KiB body.

The gateway gets it as an Ozeki ``SendEmail`` GET request; the baselines build the same MIME
message themselves (From, To, Subject, Date, Message-ID, a text body), as mailgate's worker does.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from urllib.parse import urlencode

USER, PASSWORD = "bench", "bench-password-not-secret"
SENDER = "mailgate@localhost"
"""mailgate's default sender, which every account may use."""
RECIPIENT = "someone@example.com"
SUBJECT = "Voicemail from +44 20 7946 0000 (0:42)"
_LINE = "You have a new voicemail. Call back on the number above to listen to it again. "
BODY = "\n".join(_LINE[:70] for _ in range(15))
"""15 lines of 70 characters: about 1 KiB, with line breaks as a real text body has."""


def query(command: str = "SendEmail") -> str:
    """The request's query string, credentials included (loopback only)."""
    params = {"command": command, "Recipient": RECIPIENT, "Subject": SUBJECT,
              "Message": BODY, "Username": USER, "Password": PASSWORD}  # fmt: skip
    return urlencode(params)


def build(
    message_id: str,
    host: str,
    recipient: str = RECIPIENT,
    subject: str = SUBJECT,
    body: str = BODY,
) -> EmailMessage:
    """The MIME message the baselines send, shaped like mailgate's."""
    message = EmailMessage(policy=SMTP)
    message["From"] = SENDER
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{message_id}@{host}>"
    message.set_content(body)
    return message
