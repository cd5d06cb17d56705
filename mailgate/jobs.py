"""The e-mail job: the whole contract between the API and the worker.

The API builds and validates an :class:`EmailJob`, stores it in the status record and publishes
a task named :data:`TASK_NAME` whose only argument is the EmailId. The worker reads the job back
from the record, so no address, body or password ever travels in a task message.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, fields
from typing import Any

from mailgate.addresses import envelope_key

TASK_NAME = "mailgate.deliver"
"""The Celery task name both sides agree on; the API publishes by name only."""

REPORT_TASK_NAME = "mailgate.report"
"""The worker's own follow-up task: POST the delivery report of a Sent or Failed e-mail.

Like the delivery task, its only argument is the EmailId; the URL is read from the record.
"""

QUEUE = "mailgate"
"""The broker queue the API publishes to and the worker consumes."""


def canonical_email_id(raw: str) -> str:
    """An EmailId as mailgate writes it (a lower-case UUID), from one as a client kept it: SQL
    Server's ``uniqueidentifier`` gives GUIDs in upper case, .NET may add braces, and blanks
    around it are dropped. Text that is no UUID comes back trimmed (and finds nothing)."""
    text = raw.strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


_EMAIL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_email_id(text: str) -> bool:
    """True for an EmailId in the form mailgate writes (:func:`canonical_email_id`'s); any
    other text must never reach a Redis key (``<id>:history`` names a list, not a record)."""
    return _EMAIL_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Attachment:
    """A file to attach, as checked at request time (the worker checks it again)."""

    path: str
    size: int
    mtime_ns: int
    filename: str = ""
    """The name shown in the message when it differs from the path's (an upload's own name)."""
    content_type: str = ""
    """The MIME type an upload declared ("" to guess it from the file name)."""
    sha256: str = ""
    """An upload's content digest: its identity for idempotency (its spooled path is random)."""
    device: int | None = None
    inode: int | None = None
    ctime_ns: int | None = None
    """Which file it was: a replacement with the same size and mtime differs here.

    None in records written before these were kept; the worker then compares what it can.
    """

    @property
    def identity(self) -> str:
        """What the caller named: the path, or an upload's name and content."""
        return f"upload:{self.filename}:{self.sha256}" if self.sha256 else self.path


@dataclass(frozen=True)
class EmailJob:
    """One accepted e-mail, immutable from acceptance to delivery."""

    email_id: str
    owner: str
    sender: str
    recipients: tuple[str, ...]
    message: str
    subject: str = ""
    attachments: tuple[Attachment, ...] = ()
    api_extension: str = ""
    callback_url: str = ""
    """Where to POST the delivery report when the e-mail ends Sent or Failed ("" for none)."""
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    """Envelope recipients only: never written into a header."""
    reply_to: tuple[str, ...] = ()
    html: str = ""
    """The HTML alternative of ``message`` ("" for a text-only e-mail)."""

    def envelope_recipients(self) -> tuple[str, ...]:
        """Everyone the e-mail goes to (To, Cc, Bcc), each once (see
        :func:`mailgate.addresses.envelope_key`), in header form."""
        found: dict[str, str] = {}
        for address in (*self.recipients, *self.cc, *self.bcc):
            found.setdefault(envelope_key(address), address)
        return tuple(found.values())

    def fingerprint(self) -> str:
        """A digest of what the caller asked for, to tell a true repeat from a reused key."""
        content = {
            "sender": self.sender,
            "recipients": self.recipients,
            "subject": self.subject,
            "message": self.message,
            "attachments": [a.identity for a in self.attachments],
            "callback_url": self.callback_url,
        }
        # Added later: left out when empty, so older keys keep matching their fingerprints.
        extra = {"cc": self.cc, "bcc": self.bcc, "reply_to": self.reply_to, "html": self.html}
        content.update({name: value for name, value in extra.items() if value})
        canonical = json.dumps(content, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        """Serialize for the status record (what ``json.dumps(asdict(self))`` gives, without
        asdict's deep copy)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _JOB_FIELDS}
        data["attachments"] = [
            {name: getattr(a, name) for name in _ATTACHMENT_FIELDS} for a in self.attachments
        ]
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EmailJob:
        """Read back what :meth:`to_json` wrote."""
        data: dict[str, Any] = json.loads(text)
        for name in ("recipients", "cc", "bcc", "reply_to"):
            if name in data:  # records written before Cc, Bcc and ReplyTo lack them
                data[name] = tuple(data[name])
        data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments", ()))
        return cls(**data)


_JOB_FIELDS = tuple(field.name for field in fields(EmailJob))
_ATTACHMENT_FIELDS = tuple(field.name for field in fields(Attachment))
