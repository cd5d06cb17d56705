"""Building the MIME message with Python's ``email`` package (policy SMTP)."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from mailgate.jobs import Attachment, EmailJob

Reader = Callable[[Attachment], bytes]


def build_message(job: EmailJob, message_id_host: str, read: Reader) -> EmailMessage:
    """The message for ``job``; ``read`` loads each attachment (and checks it again)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = job.sender
    message["To"] = ", ".join(job.recipients)
    if job.subject:
        message["Subject"] = job.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # A stable Message-ID lets receivers drop the rare duplicate of a crash after the 250.
    message["Message-ID"] = f"<{job.email_id}@{message_id_host}>"
    message.set_content(job.message)
    for attachment in job.attachments:
        data = read(attachment)
        # An upload keeps its caller's name and type; a path attachment's come from the path.
        filename = attachment.filename or os.path.basename(attachment.path)
        content_type: str | None = attachment.content_type
        encoding = None
        if not content_type:
            content_type, encoding = mimetypes.guess_type(filename)
        if content_type is None or encoding is not None:
            content_type = "application/octet-stream"
        maintype, subtype = content_type.split("/", 1)
        # add_attachment encodes a non-ASCII file name as RFC 2231.
        message.add_attachment(
            data,
            maintype=maintype,
            subtype=subtype,
            filename=filename,
        )
    return message
