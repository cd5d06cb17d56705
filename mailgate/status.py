"""The status store: one Redis hash per EmailId, and the due set that keeps every e-mail moving.

Key names (all of them live here):

- ``mailgate:email:<id>``          hash: owner, status, attempts, times, last error, SMTP
                                   reply, the job itself until it is sent, the delivery
                                   report URL and the report's outcome (``report_*``)
- ``mailgate:email:<id>:history``  list: one JSON entry per attempt outcome (newest last)
- ``mailgate:due``                 sorted set: EmailId -> when it must be published (again)
                                   if still not final. Invariant: every e-mail that is not
                                   Sent or Failed has an entry, so none can stall for good.
- ``mailgate:reports:due``         sorted set: EmailId -> when its delivery report must be
                                   published (again) if not settled: the report's watchdog
- ``mailgate:claim:<id>``          string with a lease: the worker sending this e-mail now
- ``mailgate:metrics``             hash of delivery counters (outcomes, SMTP reply classes,
                                   a delivery-latency histogram) that /metrics exposes
- ``mailgate:idem:<owner>:<sha256 of key>``  JSON {email_id, fingerprint}: an idempotency key's
                                   first answer, kept for MAILGATE_IDEMPOTENCY_SECONDS
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from mailgate.jobs import EmailJob

DUE_KEY = "mailgate:due"
REPORTS_DUE_KEY = "mailgate:reports:due"
METRICS_KEY = "mailgate:metrics"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
"""Upper bounds (seconds) of the accept-to-250 latency histogram."""
HISTORY_LIMIT = 50


def email_key(email_id: str) -> str:
    """The hash holding one e-mail's status record."""
    return f"mailgate:email:{email_id}"


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


class Status(StrEnum):
    """An e-mail's state, as stored in Redis and shown by GetEmailStatus."""

    QUEUED = "Queued"
    SENDING = "Sending"
    RETRYING = "Retrying"
    SENT = "Sent"
    FAILED = "Failed"

    @property
    def final(self) -> bool:
        return self in (Status.SENT, Status.FAILED)


class ReportStatus(StrEnum):
    """Where the delivery report (the POST to the job's callback URL) stands."""

    RETRYING = "Retrying"
    DELIVERED = "Delivered"
    FAILED = "Failed"

    @property
    def final(self) -> bool:
        return self is not ReportStatus.RETRYING


@dataclass(frozen=True)
class AttemptLog:
    """One attempt's outcome, for the history in GetEmailStatus."""

    attempt: int
    at: float
    outcome: Status
    detail: str


@dataclass(frozen=True)
class Record:
    """What the store knows about one e-mail."""

    email_id: str
    owner: str
    status: Status
    attempts: int
    created_at: float
    updated_at: float
    since: float
    """Start of the retry deadline: acceptance, or the last requeue."""
    sent_at: float | None = None
    next_attempt_at: float | None = None
    last_error: str | None = None
    smtp_response: str | None = None
    job: EmailJob | None = None
    callback_url: str = ""
    """Kept apart from the job, which is dropped once the e-mail is sent."""
    report_status: ReportStatus | None = None
    report_attempts: int = 0
    report_error: str | None = None


# Take up to ARGV[2] due ids and push each one's due time to ARGV[3] (a lease), atomically, so
# two schedulers never publish the same id at once and a crash before publishing only delays it.
_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""

# One round trip before SMTP: unless the e-mail is final or claimed by another worker, take the
# claim, count the attempt, mark it Sending, move its watchdog, and return the record.
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'Sent' or status == 'Failed' then return {'final'} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'busy'} end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'Sending', 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
return {'go', redis.call('HGETALL', KEYS[1])}
"""

# Give the claim back only if this worker still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Failed (with its job still stored) -> Queued with a fresh attempt budget and deadline.
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'Failed' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'job') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'Queued', 'attempts', 0, 'since', ARGV[1],
           'updated_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'next_attempt_at', 'report_status', 'report_attempts', 'report_error')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""

# Write the report's outcome only onto a record that still exists: an expired one must not come
# back as a stray hash without a TTL. updated_at is left alone; it dates the e-mail's own state.
_REPORT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'report_status', ARGV[1], 'report_attempts', ARGV[2],
           'report_error', ARGV[3])
return 1
"""


class StatusStore:
    """Reads and writes status records; every state change goes through here."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.redis = client
        self.ttl = ttl_seconds
        self._take_due = client.register_script(_TAKE_DUE)
        self._release = client.register_script(_RELEASE)
        self._requeue = client.register_script(_REQUEUE)
        self._start = client.register_script(_START)
        self._report = client.register_script(_REPORT)

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int) -> StatusStore:
        """Connect with short time-outs so a dead Redis fails a request fast."""
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
            health_check_interval=15,
        )  # fmt: skip
        return cls(client, ttl_seconds)

    def create(
        self, job: EmailJob, watchdog_at: float, task: tuple[str, str] | None = None
    ) -> None:
        """Write a new Queued record and its watchdog entry in one transaction.

        ``task`` = (queue, message): on a Redis broker, the delivery task is pushed in the same
        transaction, so the e-mail is recorded and queued together or not at all.
        """
        now = time.time()
        key = email_key(job.email_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={
            "owner": job.owner, "status": Status.QUEUED.value, "attempts": 0,
            "created_at": now, "updated_at": now, "since": now, "job": job.to_json(),
            "callback_url": job.callback_url,
        })  # fmt: skip
        pipe.expire(key, self.ttl)
        pipe.zadd(DUE_KEY, {job.email_id: watchdog_at})
        if task is not None:
            pipe.lpush(*task)
        pipe.execute()

    def get(self, email_id: str) -> Record | None:
        """The record, or None when there is none (never sent, or expired)."""
        data = cast(dict[str, str], self.redis.hgetall(email_key(email_id)))
        return _record(email_id, data)

    def start_attempt(
        self, email_id: str, token: str, lease_seconds: float, watchdog_at: float
    ) -> tuple[str, Record | None]:
        """Claim the e-mail and begin an attempt in one round trip.

        ("go", the record with this attempt counted), or ("final" | "busy" | "missing", None).
        """
        keys = [email_key(email_id), claim_key(email_id), DUE_KEY]
        args: list[str | int | float] = [
            token, int(lease_seconds * 1000), watchdog_at, time.time(), email_id,
        ]  # fmt: skip
        result = self._start(keys=keys, args=args)
        verdict = str(result[0])
        if verdict != "go":
            return verdict, None
        flat = [str(item) for item in result[1]]
        return verdict, _record(email_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    def history(self, email_id: str) -> list[AttemptLog]:
        """Every recorded attempt outcome, oldest first."""
        entries = cast(list[str], self.redis.lrange(history_key(email_id), 0, -1))
        logs = [json.loads(entry) for entry in entries]
        return [AttemptLog(e["attempt"], e["at"], Status(e["outcome"]), e["detail"]) for e in logs]

    def release(self, email_id: str, token: str) -> None:
        """Give the claim back (only if it is still ours)."""
        self._release(keys=[claim_key(email_id)], args=[token])

    def mark_sent(
        self,
        email_id: str,
        attempt: int,
        smtp_response: str,
        token: str | None = None,
        latency: float | None = None,
        report_due: float | None = None,
    ) -> None:
        """Record the server's 250; the job payload is dropped, it is no longer needed."""
        fields = {
            "status": Status.SENT.value,
            "sent_at": time.time(),
            "smtp_response": smtp_response,
        }
        self._update(
            email_id, attempt, fields, smtp_response, drop=("job", "next_attempt_at"),
            token=token, latency=latency, report_due=report_due,
        )  # fmt: skip

    def mark_retry(
        self,
        email_id: str,
        attempt: int,
        error: str,
        smtp_response: str | None,
        next_at: float,
        token: str | None = None,
    ) -> None:
        """Record a transient failure and when the next attempt is due."""
        fields: dict[str, Any] = {
            "status": Status.RETRYING.value, "last_error": error, "next_attempt_at": next_at,
        }  # fmt: skip
        if smtp_response:
            fields["smtp_response"] = smtp_response
        self._update(email_id, attempt, fields, error, due=next_at, token=token)

    def mark_failed(
        self,
        email_id: str,
        attempt: int,
        error: str,
        smtp_response: str | None = None,
        token: str | None = None,
        report_due: float | None = None,
    ) -> None:
        """Record a final failure; the job stays so an operator can requeue it."""
        fields: dict[str, Any] = {"status": Status.FAILED.value, "last_error": error}
        if smtp_response:
            fields["smtp_response"] = smtp_response
        self._update(
            email_id, attempt, fields, error, drop=("next_attempt_at",), token=token,
            report_due=report_due,
        )  # fmt: skip

    def record_report(
        self,
        email_id: str,
        status: ReportStatus,
        attempts: int,
        error: str = "",
        next_due: float | None = None,
    ) -> bool:
        """Record the delivery report's outcome and move or clear its watchdog; False when
        the record is gone."""
        args = [status.value, attempts, error]
        written = bool(self._report(keys=[email_key(email_id)], args=args))
        if status.final or next_due is None:
            self.forget_report_due(email_id)
        else:
            self.redis.zadd(REPORTS_DUE_KEY, {email_id: next_due})
        return written

    def forget_report_due(self, email_id: str) -> None:
        """Drop a report's watchdog (settled, or nothing left to report)."""
        self.redis.zrem(REPORTS_DUE_KEY, email_id)

    def requeue(self, email_id: str, watchdog_at: float) -> bool:
        """Make a Failed e-mail Queued again (fresh attempts and deadline); False if not Failed."""
        keys = [email_key(email_id), DUE_KEY]
        return bool(self._requeue(keys=keys, args=[time.time(), watchdog_at, self.ttl, email_id]))

    def find(self, status: Status, since: float = 0, until: float = float("inf")) -> Iterator[str]:
        """Ids in ``status`` whose last change lies in [since, until] (a full scan: ops only)."""
        for key in self.redis.scan_iter(match="mailgate:email:*", count=1000):
            if key.endswith(":history"):
                continue
            state, updated = self.redis.hmget(key, "status", "updated_at")
            if state == status.value and updated and since <= float(updated) <= until:
                yield key.removeprefix("mailgate:email:")

    def remember_key(
        self, owner: str, key: str, email_id: str, fingerprint: str, ttl: int
    ) -> tuple[str, str] | None:
        """Bind an idempotency key to a new EmailId; the earlier (id, fingerprint) if bound."""
        name = idempotency_key(owner, key)
        value = json.dumps({"email_id": email_id, "fingerprint": fingerprint})
        if self.redis.set(name, value, nx=True, ex=ttl):
            return None
        found = self.redis.get(name)
        if found is None:  # expired between the two calls: try once more
            return self.remember_key(owner, key, email_id, fingerprint, ttl)
        data = json.loads(str(found))
        return str(data["email_id"]), str(data["fingerprint"])

    def forget_key(self, owner: str, key: str) -> None:
        """Release an idempotency key whose e-mail was not accepted after all."""
        self.redis.delete(idempotency_key(owner, key))

    def take_due(
        self, now: float, limit: int, lease_seconds: float, key: str = DUE_KEY
    ) -> list[str]:
        """Ids whose time has come, each leased for ``lease_seconds`` against a second taker.

        ``key``: DUE_KEY (deliveries) or REPORTS_DUE_KEY (delivery reports)."""
        ids = self._take_due(keys=[key], args=[now, limit, now + lease_seconds])
        return [str(i) for i in ids]

    def due_counts(self) -> tuple[int, int]:
        """E-mails not yet final, and those of them whose due time has passed."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(DUE_KEY)
        pipe.zcount(DUE_KEY, "-inf", time.time())
        total, overdue = pipe.execute()
        return int(total), int(overdue)

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in a Redis-broker queue (kombu keeps each queue as a list)."""
        return int(self.redis.llen(queue))

    def forget_due(self, email_id: str) -> None:
        """Drop an id from the due set (its record is gone)."""
        self.redis.zrem(DUE_KEY, email_id)

    def _update(
        self,
        email_id: str,
        attempt: int,
        fields: dict[str, Any],
        detail: str,
        *,
        drop: tuple[str, ...] = (),
        due: float | None = None,
        token: str | None = None,
        latency: float | None = None,
        report_due: float | None = None,
    ) -> None:
        """Apply one outcome atomically: fields, history, TTLs, the due set, the metrics
        counters, and (with ``token``) the release of the worker's claim."""
        now = time.time()
        key, log = email_key(email_id), history_key(email_id)
        fields["updated_at"] = now
        entry = {"attempt": attempt, "at": now, "outcome": fields["status"], "detail": detail}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=cast("dict[Any, Any]", fields))
        if drop:
            pipe.hdel(key, *drop)
        pipe.rpush(log, json.dumps(entry))
        pipe.ltrim(log, -HISTORY_LIMIT, -1)
        pipe.expire(key, self.ttl)
        pipe.expire(log, self.ttl)
        if due is None:
            pipe.zrem(DUE_KEY, email_id)
        else:
            pipe.zadd(DUE_KEY, {email_id: due})
        if report_due is not None:  # the report's watchdog, set with the final state
            pipe.zadd(REPORTS_DUE_KEY, {email_id: report_due})
        _count(pipe, fields["status"], fields.get("smtp_response"), latency)
        if token is not None:
            self._release(keys=[claim_key(email_id)], args=[token], client=pipe)
        pipe.execute()

    def metrics(self) -> dict[str, float]:
        """The delivery counters (see :func:`_count`)."""
        raw = cast(dict[str, str], self.redis.hgetall(METRICS_KEY))
        return {name: float(value) for name, value in raw.items()}


def _record(email_id: str, data: dict[str, str]) -> Record | None:
    """A Record from a status hash, or None when there is no (complete) record."""
    if not data or "status" not in data or "created_at" not in data:
        return None
    job = EmailJob.from_json(data["job"]) if data.get("job") else None
    return Record(
        email_id=email_id,
        owner=data.get("owner", ""),
        status=Status(data["status"]),
        attempts=int(data.get("attempts", 0)),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        since=float(data.get("since") or data["created_at"]),
        sent_at=_float(data.get("sent_at")),
        next_attempt_at=_float(data.get("next_attempt_at")),
        last_error=data.get("last_error") or None,
        smtp_response=data.get("smtp_response") or None,
        job=job,
        callback_url=data.get("callback_url") or (job.callback_url if job else ""),
        report_status=ReportStatus(data["report_status"]) if data.get("report_status") else None,
        report_attempts=int(data.get("report_attempts", 0)),
        report_error=data.get("report_error") or None,
    )


_OUTCOMES = {"Sent": "sent", "Retrying": "retried", "Failed": "failed"}


def _count(pipe: Any, status: str, smtp_response: str | None, latency: float | None) -> None:
    """Add one outcome to the counters: ``outcome:<name>``, ``reply:<class>`` and, for Sent,
    the ``latency:<le>`` bucket it falls in plus ``latency_sum`` and ``latency_count``."""
    pipe.hincrby(METRICS_KEY, f"outcome:{_OUTCOMES.get(status, status.lower())}", 1)
    reply = smtp_response[:1] + "xx" if smtp_response and smtp_response[:1].isdigit() else "none"
    pipe.hincrby(METRICS_KEY, f"reply:{reply}", 1)
    if latency is not None:
        bucket = next((b for b in LATENCY_BUCKETS if latency <= b), float("inf"))
        pipe.hincrby(METRICS_KEY, f"latency:{bucket}", 1)
        pipe.hincrbyfloat(METRICS_KEY, "latency_sum", latency)
        pipe.hincrby(METRICS_KEY, "latency_count", 1)


def _float(value: str | None) -> float | None:
    return float(value) if value else None
