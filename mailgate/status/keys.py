"""The key names of the status store and what sits beside it in Redis (records, indexes,
history, claims, idempotency keys, quotas, suppressions, counters; the package docstring says
what each holds). Not here: the login throttle's keys (api/ratelimit.py), the send-rate windows
(the ``limits`` library's own) and the broker's queues (kombu's)."""

from __future__ import annotations

import hashlib

DUE_KEY = "mailgate:due"
REPORTS_DUE_KEY = "mailgate:reports:due"
METRICS_KEY = "mailgate:metrics"
REPLICATION_KEY = "mailgate:replication"
"""A counter written before each Redis WAIT (see StatusStore.replicated)."""
PENDING_EMAILS_KEY = "mailgate:pending:emails"
"""Hash: owner -> how many of its e-mails are not yet final (the quota's count)."""
PENDING_BYTES_KEY = "mailgate:pending:bytes"
"""Hash: owner -> the bytes of those e-mails (the quota's size)."""
PENDING_KEYS = [PENDING_EMAILS_KEY, PENDING_BYTES_KEY]


EMAIL_PREFIX = "mailgate:email:"


def email_key(email_id: str) -> str:
    """The hash holding one e-mail's status record."""
    return f"{EMAIL_PREFIX}{email_id}"


def status_index_key(status: str) -> str:
    """The sorted set of the e-mails that reached the final ``status`` (Failed, Cancelled),
    each scored by when: what ``mailgate list`` and ``GET /api/v1/emails`` read."""
    return f"mailgate:status:{status}"


def history_key(email_id: str) -> str:
    """The list of one e-mail's attempt outcomes."""
    return f"mailgate:email:{email_id}:history"


def idempotency_key(owner: str, key: str) -> str:
    """Where an account's idempotency key remembers its first EmailId."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"mailgate:idem:{owner}:{digest}"


def claim_key(email_id: str) -> str:
    """The lease a worker holds while it talks SMTP for this e-mail."""
    return f"mailgate:claim:{email_id}"


def send_rate_key(owner: str) -> str:
    """The times of an account's last e-mails accepted, newest first (its send rate's window)."""
    return f"mailgate:rate:send:{owner}"


SUPPRESSION_PREFIX = "mailgate:suppressed:"


def suppression_key(owner: str, address: str) -> str:
    """An account's suppression of one address (lower-cased envelope form), with its TTL."""
    return f"{SUPPRESSION_PREFIX}{owner}:{address.lower()}"


def imap_state_key(mailbox: str) -> str:
    """Where the IMAP poller keeps a mailbox's UIDVALIDITY and the last UID it settled."""
    digest = hashlib.sha256(mailbox.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"mailgate:bounces:imap:{digest}"
