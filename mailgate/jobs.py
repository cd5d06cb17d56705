"""The e-mail job: the whole contract between the API and the worker.

The API builds and validates an :class:`EmailJob`, stores it in the status record and publishes
a task named :data:`TASK_NAME` whose only argument is the EmailId. The worker reads the job back
from the record, so no address, body or password ever travels in a task message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

TASK_NAME = "mailgate.deliver"
"""The Celery task name both sides agree on; the API publishes by name only."""

REPORT_TASK_NAME = "mailgate.report"
"""The worker's own follow-up task: POST the delivery report of a Sent or Failed e-mail.

Like the delivery task, its only argument is the EmailId; the URL is read from the record.
"""

QUEUE = "mailgate"
"""The broker queue the API publishes to and the worker consumes."""


@dataclass(frozen=True)
class Attachment:
    """A file to attach, as checked at request time (the worker checks it again)."""

    path: str
    size: int
    mtime_ns: int


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

    def fingerprint(self) -> str:
        """A digest of what the caller asked for, to tell a true repeat from a reused key."""
        content = {
            "sender": self.sender, "recipients": self.recipients, "subject": self.subject,
            "message": self.message, "attachments": [a.path for a in self.attachments],
            "callback_url": self.callback_url,
        }  # fmt: skip
        canonical = json.dumps(content, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        """Serialize for the status record (what ``json.dumps(asdict(self))`` gives, without
        asdict's deep copy)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _JOB_FIELDS}
        data["attachments"] = [
            {"path": a.path, "size": a.size, "mtime_ns": a.mtime_ns} for a in self.attachments
        ]
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EmailJob:
        """Read back what :meth:`to_json` wrote."""
        data: dict[str, Any] = json.loads(text)
        data["recipients"] = tuple(data["recipients"])
        data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments", ()))
        return cls(**data)


_JOB_FIELDS = tuple(field.name for field in fields(EmailJob))
