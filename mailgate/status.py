"""The status store: one Redis hash per EmailId, and the due set that keeps every e-mail moving.

Key names (all of them live here):

- ``mailgate:email:<id>``  hash: owner, status, attempts, times, last error, SMTP reply, job
- ``mailgate:due``         sorted set: EmailId -> when it must be published (again) if still
                           not final. A new e-mail enters with a watchdog time, a retry with its
                           back-off time; a final state leaves the set. Workers publish what is
                           due, so nothing accepted can stall, whatever was lost on the way.
- ``mailgate:claim:<id>``  string with a lease: the worker sending this e-mail right now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis

from mailgate.jobs import EmailJob

DUE_KEY = "mailgate:due"


def email_key(email_id: str) -> str:
    """The hash holding one e-mail's status record."""
    return f"mailgate:email:{email_id}"


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


@dataclass(frozen=True)
class Record:
    """What the store knows about one e-mail."""

    email_id: str
    owner: str
    status: Status
    attempts: int
    created_at: float
    updated_at: float
    sent_at: float | None = None
    next_attempt_at: float | None = None
    last_error: str | None = None
    smtp_response: str | None = None
    job: EmailJob | None = None


# Take up to ARGV[2] due ids and push each one's due time to ARGV[3] (a lease), atomically, so
# two schedulers never publish the same id at once and a crash before publishing only delays it.
_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""

# Give the claim back only if this worker still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class StatusStore:
    """Reads and writes status records; every state change goes through here."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.redis = client
        self.ttl = ttl_seconds
        self._take_due = client.register_script(_TAKE_DUE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int) -> StatusStore:
        """Connect with short time-outs so a dead Redis fails a request fast."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=15,
            retry_on_timeout=False,
        )
        return cls(client, ttl_seconds)

    def create(self, job: EmailJob, watchdog_at: float) -> None:
        """Write a new Queued record and its watchdog entry in one transaction."""
        now = time.time()
        key = email_key(job.email_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "owner": job.owner,
                "status": Status.QUEUED.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "job": job.to_json(),
            },
        )
        pipe.expire(key, self.ttl)
        pipe.zadd(DUE_KEY, {job.email_id: watchdog_at})
        pipe.execute()

    def get(self, email_id: str) -> Record | None:
        """The record, or None when there is none (never sent, or expired)."""
        data = cast(dict[str, str], self.redis.hgetall(email_key(email_id)))
        if not data or "status" not in data:
            return None
        return Record(
            email_id=email_id,
            owner=data.get("owner", ""),
            status=Status(data["status"]),
            attempts=int(data.get("attempts", 0)),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            sent_at=_float(data.get("sent_at")),
            next_attempt_at=_float(data.get("next_attempt_at")),
            last_error=data.get("last_error") or None,
            smtp_response=data.get("smtp_response") or None,
            job=EmailJob.from_json(data["job"]) if data.get("job") else None,
        )

    def claim(self, email_id: str, token: str, lease_seconds: float) -> bool:
        """Take the right to send this e-mail now; False if another worker holds it."""
        return bool(
            self.redis.set(claim_key(email_id), token, nx=True, px=int(lease_seconds * 1000))
        )

    def release(self, email_id: str, token: str) -> None:
        """Give the claim back (only if it is still ours)."""
        self._release(keys=[claim_key(email_id)], args=[token])

    def begin_attempt(self, email_id: str, watchdog_at: float) -> int:
        """Count one more attempt, mark it Sending, and return the attempt number."""
        key = email_key(email_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, "attempts", 1)
        pipe.hset(key, mapping={"status": Status.SENDING.value, "updated_at": time.time()})
        pipe.hdel(key, "next_attempt_at")
        pipe.zadd(DUE_KEY, {email_id: watchdog_at})
        results = pipe.execute()
        return int(results[0])

    def mark_sent(self, email_id: str, smtp_response: str) -> None:
        """Record the server's 250; the job payload is dropped, it is no longer needed."""
        now = time.time()
        self._update(
            email_id,
            {"status": Status.SENT.value, "sent_at": now, "smtp_response": smtp_response},
            drop=("job", "next_attempt_at"),
            due=None,
        )

    def mark_retry(
        self, email_id: str, error: str, smtp_response: str | None, next_attempt_at: float
    ) -> None:
        """Record a transient failure and when the next attempt is due."""
        fields: dict[str, Any] = {
            "status": Status.RETRYING.value,
            "last_error": error,
            "next_attempt_at": next_attempt_at,
        }
        if smtp_response:
            fields["smtp_response"] = smtp_response
        self._update(email_id, fields, due=next_attempt_at)

    def mark_failed(self, email_id: str, error: str, smtp_response: str | None = None) -> None:
        """Record a final failure; the job stays so an operator can send it again."""
        fields: dict[str, Any] = {"status": Status.FAILED.value, "last_error": error}
        if smtp_response:
            fields["smtp_response"] = smtp_response
        self._update(email_id, fields, drop=("next_attempt_at",), due=None)

    def take_due(self, now: float, limit: int, lease_seconds: float) -> list[str]:
        """Ids whose time has come, each leased for ``lease_seconds`` against a second taker."""
        ids = self._take_due(keys=[DUE_KEY], args=[now, limit, now + lease_seconds])
        return [str(i) for i in ids]

    def forget_due(self, email_id: str) -> None:
        """Drop an id from the due set (its record is gone)."""
        self.redis.zrem(DUE_KEY, email_id)

    def _update(
        self,
        email_id: str,
        fields: dict[str, Any],
        *,
        drop: tuple[str, ...] = (),
        due: float | None,
    ) -> None:
        key = email_key(email_id)
        pipe = self.redis.pipeline(transaction=True)
        fields["updated_at"] = time.time()
        pipe.hset(key, mapping=cast("dict[Any, Any]", fields))
        if drop:
            pipe.hdel(key, *drop)
        pipe.expire(key, self.ttl)
        if due is None:
            pipe.zrem(DUE_KEY, email_id)
        else:
            pipe.zadd(DUE_KEY, {email_id: due})
        pipe.execute()


def _float(value: str | None) -> float | None:
    return float(value) if value else None
