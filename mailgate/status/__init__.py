"""The status store: one Redis hash per EmailId, the due sets that keep everything moving.

Key names (all of them live in keys.py):

- ``mailgate:email:<id>``          hash: owner, status, attempts, times, last error, SMTP
                                   reply, the job itself until it is sent, the delivery
                                   report URL and the report's outcome (``report_*``), each
                                   recipient's RCPT reply (``rcpt``) and bounce (``bounces``,
                                   ``bounce_*``: the latest)
- ``mailgate:email:<id>:history``  list: one JSON entry per attempt outcome (newest last)
- ``mailgate:due``                 sorted set: EmailId -> when it must be published (again)
                                   if still not final. Invariant: every e-mail that is not
                                   Sent or Failed has an entry, so none can stall for good.
- ``mailgate:reports:due``         sorted set: EmailId -> when its delivery report must be
                                   published (again) if not settled: the report's watchdog
- ``mailgate:status:<Status>``     sorted set: EmailId -> when it became Failed (or Cancelled);
                                   the listing of those states reads it. Entries older than the
                                   record TTL are pruned on each write; Sent has none
- ``mailgate:claim:<id>``          string with a lease: the worker sending this e-mail now
- ``mailgate:metrics``             hash of delivery counters (outcomes, SMTP reply classes,
                                   a delivery-latency histogram) that /metrics exposes
- ``mailgate:replication``         counter written before each WAIT (MAILGATE_REDIS_MIN_REPLICAS)
- ``mailgate:idem:<owner>:<sha256 of key>``  JSON {email_id, fingerprint}: an idempotency key's
                                   first answer, kept for MAILGATE_IDEMPOTENCY_SECONDS
- ``mailgate:suppressed:<owner>:<address>``  JSON: a hard bounce that suppresses the address
                                   for that account, kept for MAILGATE_SUPPRESSION_SECONDS
- ``mailgate:rate:send:<owner>``   list: the times of the account's last e-mails accepted,
                                   newest first, as many as its send rate allows per window
"""

from mailgate.status.bounces import Reported
from mailgate.status.counters import LATENCY_BUCKETS
from mailgate.status.keys import (
    DUE_KEY,
    METRICS_KEY,
    REPORTS_DUE_KEY,
    claim_key,
    email_key,
    history_key,
    idempotency_key,
    status_index_key,
)
from mailgate.status.records import (
    AttemptLog,
    Bounce,
    Outcome,
    RecipientOutcome,
    Record,
    ReportStatus,
    Status,
    iso,
)
from mailgate.status.store import StatusStore
from mailgate.status.suppressions import Suppression, Suppressions

__all__ = [
    "DUE_KEY",
    "LATENCY_BUCKETS",
    "METRICS_KEY",
    "REPORTS_DUE_KEY",
    "AttemptLog",
    "Bounce",
    "Outcome",
    "RecipientOutcome",
    "Record",
    "ReportStatus",
    "Reported",
    "Status",
    "StatusStore",
    "Suppression",
    "Suppressions",
    "claim_key",
    "email_key",
    "history_key",
    "idempotency_key",
    "iso",
    "status_index_key",
]
