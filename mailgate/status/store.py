"""StatusStore: reads and writes status records; every state change goes through here."""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, TypedDict, Unpack, cast

import redis

from mailgate.jobs import EmailJob
from mailgate.redisconn import pool_size, redis_client
from mailgate.status import scripts
from mailgate.status.bounces import Reported, Settled, settle, suppresses
from mailgate.status.counters import count
from mailgate.status.keys import (
    DUE_KEY,
    EMAIL_PREFIX,
    METRICS_KEY,
    PENDING_BYTES_KEY,
    PENDING_EMAILS_KEY,
    PENDING_KEYS,
    REPLICATION_KEY,
    REPORTS_DUE_KEY,
    claim_key,
    email_key,
    history_key,
    idempotency_key,
    status_index_key,
    suppression_key,
)
from mailgate.status.records import AttemptLog, Record, ReportStatus, Status, parse_record

HISTORY_LIMIT = 50
INDEXED = (Status.FAILED, Status.CANCELLED, Status.BOUNCED, Status.PARTLY_BOUNCED)
"""Final states with an index of their own (``mailgate:status:<Status>``), so that listing them
reads only them. Sent has none: the delivery path writes what it always wrote, and listing Sent
e-mails is a full scan. E-mails not yet final are all in the due set."""
LISTED_FIELDS = (
    "owner",
    "status",
    "attempts",
    "created_at",
    "updated_at",
    "since",
    "sent_at",
    "next_attempt_at",
    "last_error",
    "smtp_response",
    "report_status",
    "report_attempts",
    "report_error",
    "relay",
    "bounce_code",
    "bounce_reason",
    "bounced_at",
)
"""What a listing reads of each record: what GetEmailStatus shows, without the job (the body,
maybe a megabyte) and the recipients."""
PAGE = 500
"""Records a listing filters per round trip (see scripts.MATCHING)."""
LATEST = 1e300
"""No end to a listing's window (Lua's tonumber does not read "inf")."""
REPLICA_WAIT_MS = 1000
"""How long a write waits for MAILGATE_REDIS_MIN_REPLICAS replicas to confirm it."""


class Change(TypedDict, total=False):
    """What one outcome does besides writing its fields (see :meth:`StatusStore._update`)."""

    drop: tuple[str, ...]
    """Fields to delete (the content of a Sent e-mail, a stale next_attempt_at)."""
    due: float | None
    """The due-set entry's new time (a retry), or None to take the e-mail off the due set."""
    token: str | None
    """The worker's claim token: the claim is released if it is still this worker's."""
    latency: float | None
    """Seconds from acceptance to the 250, for the histogram."""
    report_due: float | None
    """The delivery report's watchdog, set with the final state."""


class StatusStore:
    """Reads and writes status records; every state change goes through here."""

    def __init__(self, client: redis.Redis, ttl_seconds: int, min_replicas: int = 0) -> None:
        self.redis = client
        self.ttl = ttl_seconds
        self.min_replicas = min_replicas
        self._take_due = client.register_script(scripts.TAKE_DUE)
        self._release = client.register_script(scripts.RELEASE)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._start = client.register_script(scripts.START)
        self._report = client.register_script(scripts.REPORT)
        self._cancel = client.register_script(scripts.CANCEL)
        self._withdraw = client.register_script(scripts.WITHDRAW)
        self._create = client.register_script(scripts.CREATE)
        self._settle = client.register_script(scripts.SETTLE_ONE)
        self._matching = client.register_script(scripts.MATCHING)

    @classmethod
    def from_url(
        cls, url: str, ttl_seconds: int, min_replicas: int = 0, threads: int = 0
    ) -> StatusStore:
        """Connect (to one server, or a Sentinel group's master) with short time-outs so a
        dead Redis fails a request fast; ``threads``: how many may use it at once (see
        :func:`mailgate.redisconn.pool_size`; 0 keeps redis-py's 100)."""
        pool = {"max_connections": pool_size(threads)} if threads else {}
        client = redis_client(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
            health_check_interval=15, **pool,
        )  # fmt: skip
        return cls(client, ttl_seconds, min_replicas)

    def replicated(self) -> bool:
        """True once ``min_replicas`` replicas hold every write made so far (Redis WAIT).

        WAIT counts the writes of its own connection, so a marker write goes first on the same
        connection: the replication stream is ordered, so a replica that has the marker has
        every earlier write of every client too.
        """
        if self.min_replicas <= 0:
            return True
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(REPLICATION_KEY)
        pipe.execute_command("WAIT", self.min_replicas, REPLICA_WAIT_MS)  # type: ignore[no-untyped-call]
        _, acked = pipe.execute()
        return int(acked) >= self.min_replicas

    def withdraw(self, email_id: str) -> bool:
        """Delete a new e-mail that did not reach enough replicas; False if it is final
        already (then it was sent, or failed, and stays)."""
        keys = [email_key(email_id), claim_key(email_id), DUE_KEY, *PENDING_KEYS]
        return bool(self._withdraw(keys=keys, args=[email_id]))

    def create(
        self,
        job: EmailJob,
        watchdog_at: float,
        task: tuple[str, str] | None = None,
        send_at: float | None = None,
        quota: tuple[int, int] = (0, 0),
    ) -> str:
        """Write a new Queued record and its watchdog entry in one atomic step (a Lua script);
        "" when written, else the quota limit it would break ("emails" or "bytes").

        ``task`` = (queue, message): on a Redis broker, the delivery task is pushed in the same
        step, so the e-mail is recorded and queued together or not at all.
        ``send_at``: the record is Scheduled instead, its due entry (``watchdog_at``) is then
        the moment the scheduler publishes it, and its retry deadline starts there.
        ``quota``: the most e-mails and bytes (:func:`pending_size`) the owner may have not
        yet final (0: no limit); within it, the e-mail is counted until it is final.
        """
        now = time.time()
        queue, message = task if task is not None else (DUE_KEY, "")
        status, since = Status.QUEUED.value, now
        scheduled: list[Any] = []
        if send_at is not None:
            status, since = Status.SCHEDULED.value, send_at
            scheduled = ["next_attempt_at", send_at]
        content = job.to_json()
        verdict = self._create(
            keys=[email_key(job.email_id), DUE_KEY, queue, *PENDING_KEYS],
            args=[
                self.ttl, watchdog_at, job.email_id, message,
                job.owner, pending_size(job, content), *quota,
                "status", status, "attempts", 0,
                "created_at", now, "updated_at", now, "since", since, "job", content,
                "callback_url", job.callback_url, *scheduled,
            ],
        )  # fmt: skip
        return "" if verdict == "ok" else str(verdict)

    def pending(self, owner: str) -> tuple[int, int]:
        """How many e-mails of ``owner`` are not yet final, and their bytes (the quota)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(PENDING_EMAILS_KEY, owner)
        pipe.hget(PENDING_BYTES_KEY, owner)
        emails, size = pipe.execute()
        return int(emails or 0), int(size or 0)

    def get(self, email_id: str) -> Record | None:
        """The record, or None when there is none (never sent, or expired)."""
        data = cast(dict[str, str], self.redis.hgetall(email_key(email_id)))
        return parse_record(email_id, data)

    def start_attempt(
        self, email_id: str, token: str, lease_seconds: float, watchdog_at: float
    ) -> tuple[str, Record | None]:
        """Claim the e-mail and begin an attempt in one round trip.

        ("go", the record with this attempt counted), or ("final" | "busy" | "missing", None).
        """
        keys, args = _start_call(email_id, token, lease_seconds, watchdog_at)
        return _start_result(email_id, self._start(keys=keys, args=args))

    def cancel(self, email_id: str) -> tuple[Status | None, EmailJob | None]:
        """Cancel an e-mail no worker holds: (Cancelled, its job) when this call cancelled it,
        else (its status as it stands, None); (None, None) when there is no record."""
        keys = [
            email_key(email_id),
            history_key(email_id),
            DUE_KEY,
            METRICS_KEY,
            status_index_key(Status.CANCELLED),
            *PENDING_KEYS,
        ]
        args: list[str | int | float] = [time.time(), email_id, "cancelled by its owner", self.ttl]
        result = [str(item) for item in self._cancel(keys=keys, args=args)]
        if result[0] == "missing":
            return None, None
        if result[0] != "cancelled":
            return Status(result[0]), None
        return Status.CANCELLED, EmailJob.from_json(result[1]) if result[1] else None

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
        rcpt: str | None = None,
        relay: str | None = None,
    ) -> None:
        """Record the server's 250 (and the relay that gave it); the job payload is dropped,
        it is no longer needed.

        ``rcpt``: each recipient's RCPT reply (:func:`mailgate.status.records.rcpt_json`)."""
        fields: dict[str, Any] = {
            "status": Status.SENT.value,
            "sent_at": time.time(),
            "smtp_response": smtp_response,
        }
        if relay:
            fields["relay"] = relay
        if rcpt is not None:
            fields["rcpt"] = rcpt
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
        rcpt: str | None = None,
    ) -> None:
        """Record a final failure; the job stays so an operator can requeue it."""
        fields: dict[str, Any] = {"status": Status.FAILED.value, "last_error": error}
        if smtp_response:
            fields["smtp_response"] = smtp_response
        if rcpt is not None:
            fields["rcpt"] = rcpt
        self._update(
            email_id, attempt, fields, error, drop=("next_attempt_at",), token=token,
            report_due=report_due,
        )  # fmt: skip

    def record_bounces(
        self,
        email_id: str,
        reported: list[Reported],
        report_due: float | None = None,
        suppression_seconds: int = 0,
    ) -> tuple[str, Settled | None]:
        """Apply a bounce report to a Sent e-mail in one transaction (WATCH, MULTI).

        Writes each recipient's bounce, the new status (see :mod:`mailgate.status.bounces`)
        with a history entry, the bounce counters, and, for every hard "user unknown" bounce,
        the account's suppression of that address for ``suppression_seconds`` (0: none). When
        the status changes and the e-mail has a delivery report URL, the report starts afresh
        and its due entry is set to ``report_due``. Returns ("recorded", what changed), or
        ("missing" | "early" | "unsent", None): no record (unknown or expired), not sent yet
        (the report came before the worker recorded the 250: try later), or never sent.
        """
        key = email_key(email_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    data = cast(dict[str, str], pipe.hgetall(key))
                    record = parse_record(email_id, data)
                    if record is None:
                        return "missing", None
                    if not record.status.sent:
                        return ("unsent" if record.status.final else "early"), None
                    settled = settle(record, reported)
                    pipe.multi()
                    self._queue_bounces(pipe, record, settled, report_due, suppression_seconds)
                    pipe.execute()
                    return "recorded", settled
                except redis.WatchError:
                    continue  # the record changed meanwhile (a report, the worker): again

    def _queue_bounces(
        self,
        pipe: redis.client.Pipeline,
        record: Record,
        settled: Settled,
        report_due: float | None,
        suppression_seconds: int,
    ) -> None:
        if not settled.written:
            return
        key, log, now = email_key(record.email_id), history_key(record.email_id), time.time()
        fields: dict[str, Any] = {
            "bounces": json.dumps(settled.bounces, ensure_ascii=False),
            "status": settled.status.value,
        }
        latest = settled.latest
        if latest is not None:
            fields.update(
                bounce_code=latest[1].code, bounce_reason=latest[1].reason, bounced_at=latest[1].at
            )
        if settled.status != record.status:
            fields["updated_at"] = now
            self._move_index(pipe, record.email_id, record.status, settled.status, now)
        pipe.hset(key, mapping=cast("dict[Any, Any]", fields))
        for address, bounce in settled.written:
            detail = f"{bounce.action}: {address}: {bounce.code} {bounce.reason}".strip()
            entry = {
                "attempt": record.attempts,
                "at": now,
                "outcome": settled.status.value,
                "detail": detail,
            }
            pipe.rpush(log, json.dumps(entry))
            pipe.hincrby(METRICS_KEY, f"bounce:{bounce.kind}", 1)
            if suppression_seconds and suppresses(bounce):
                value = {
                    "address": address,
                    "owner": record.owner,
                    "code": bounce.code,
                    "reason": bounce.reason,
                    "at": bounce.at,
                    "email_id": record.email_id,
                    "until": now + suppression_seconds,
                }
                name = suppression_key(record.owner, address)
                pipe.set(name, json.dumps(value, ensure_ascii=False), ex=suppression_seconds)
        pipe.ltrim(log, -HISTORY_LIMIT, -1)
        pipe.expire(key, self.ttl)
        pipe.expire(log, self.ttl)
        if settled.status != record.status and record.callback_url and report_due is not None:
            # The delivery report goes out again, with the new status.
            pipe.hdel(key, "report_status", "report_attempts", "report_error")
            pipe.zadd(REPORTS_DUE_KEY, {record.email_id: report_due})

    def _move_index(
        self, pipe: redis.client.Pipeline, email_id: str, old: Status, new: Status, now: float
    ) -> None:
        """Queue the index changes of a move from ``old`` to ``new`` (see INDEXED)."""
        if old in INDEXED:
            pipe.zrem(status_index_key(old), email_id)
        if new in INDEXED:
            index = status_index_key(new)
            pipe.zadd(index, {email_id: now})
            pipe.zremrangebyscore(index, "-inf", now - self.ttl)

    def count(self, name: str) -> None:
        """Add one to a counter of the metrics hash (``bounce_report:unknown``...)."""
        self.redis.hincrby(METRICS_KEY, name, 1)

    def record_report(
        self,
        email_id: str,
        status: ReportStatus,
        attempts: int,
        error: str = "",
        next_due: float | None = None,
    ) -> bool:
        """Record the delivery report's outcome and move or clear its watchdog, in one atomic
        step; False when the record is gone."""
        due = "" if status.final or next_due is None else next_due
        args = [status.value, attempts, error, email_id, due]
        return bool(self._report(keys=[email_key(email_id), REPORTS_DUE_KEY], args=args))

    def schedule_report(self, email_id: str, at: float) -> None:
        """Have the scheduler publish this e-mail's report at ``at`` (a retry, a wait)."""
        self.redis.zadd(REPORTS_DUE_KEY, {email_id: at})

    def forget_report_due(self, email_id: str) -> None:
        """Drop a report's due entry (settled, or nothing left to report)."""
        self.redis.zrem(REPORTS_DUE_KEY, email_id)

    def requeue(self, email_id: str, watchdog_at: float) -> bool:
        """Make a Failed e-mail Queued again (fresh attempts and deadline); False if not Failed."""
        keys = [email_key(email_id), DUE_KEY, status_index_key(Status.FAILED), *PENDING_KEYS]
        return bool(self._requeue(keys=keys, args=[time.time(), watchdog_at, self.ttl, email_id]))

    def requeueable(self, email_id: str) -> bool:
        """Whether :meth:`requeue` would take this e-mail now: Failed, its content kept."""
        status, job = self.redis.hmget(email_key(email_id), "status", "job")
        return status == Status.FAILED and bool(job)

    def find(
        self,
        status: Status,
        since: float = 0,
        until: float = float("inf"),
        owner: str | None = None,
        limit: int | None = None,
        scan: bool = False,
    ) -> list[Record]:
        """The records in ``status`` (of ``owner``, if given) whose last change lies in
        [since, until], newest first, at most ``limit``; without their job.

        What it reads: Failed and Cancelled, their index, from the newest on; the states not
        yet final, the due set (every such e-mail has an entry); Sent, or ``scan``, every record
        (SCAN: also finds e-mails that failed before the index existed).
        """
        if scan or (status.final and status not in INDEXED):
            ids: Iterable[str] = (
                key.removeprefix(EMAIL_PREFIX)
                for key in self.redis.scan_iter(
                    match=f"{EMAIL_PREFIX}*", count=1000, _type="hash"
                )  # the records, not their history lists
            )
        elif status in INDEXED:
            ids = self._indexed(status, since, until)
        else:
            ids = (str(i) for i, _ in self.redis.zscan_iter(DUE_KEY, count=1000))
        window = [status.value, since, min(until, LATEST), owner or ""]
        found: list[tuple[float, str]] = []  # (when it changed, EmailId) of each match
        for page in _pages(ids):
            reply = self._matching(keys=[email_key(email_id) for email_id in page], args=window)
            found += [
                (float(at), page[int(i) - 1]) for i, at in zip(reply[::2], reply[1::2], strict=True)
            ]
            if limit is not None and len(found) >= limit:
                if status in INDEXED and not scan:
                    break  # the index gives the newest first: the rest are older
                found = heapq.nlargest(limit, found)  # a scan keeps what it may still show
        newest = heapq.nlargest(len(found) if limit is None else limit, found)
        return [r for r in self._summaries([email_id for _, email_id in newest]) if r]

    def _indexed(self, status: Status, since: float, until: float) -> Iterator[str]:
        """The ids in ``status``'s index scored within [since, until], newest first."""
        key, offset = status_index_key(status), 0
        while True:
            page = self.redis.zrevrangebyscore(key, until, since, start=offset, num=PAGE)
            yield from (str(i) for i in page)
            if len(page) < PAGE:
                return
            offset += PAGE

    def _summaries(self, ids: list[str]) -> list[Record | None]:
        """The records of ``ids`` without their job, in one round trip (None: gone)."""
        pipe = self.redis.pipeline(transaction=False)
        for email_id in ids:
            pipe.hmget(email_key(email_id), LISTED_FIELDS)
        rows = pipe.execute()
        return [
            parse_record(email_id, {k: v for k, v in zip(LISTED_FIELDS, row, strict=True) if v})
            for email_id, row in zip(ids, rows, strict=True)
        ]

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

    def forget_due(self, email_id: str) -> None:
        """Drop an id from the due set (its record is gone)."""
        self.redis.zrem(DUE_KEY, email_id)

    def _update(
        self, email_id: str, attempt: int, fields: dict[str, Any], detail: str,
        **change: Unpack[Change],
    ) -> None:  # fmt: skip
        """Apply one outcome atomically: fields, history, TTLs, the due set, the metrics
        counters, and (with ``token``) the release of the worker's claim."""
        pipe = self.redis.pipeline(transaction=True)
        self._queue_update(pipe, email_id, attempt, fields, detail, **change)
        pipe.execute()

    def _queue_update(
        self, pipe: redis.client.Pipeline, email_id: str, attempt: int, fields: dict[str, Any],
        detail: str, **change: Unpack[Change],
    ) -> None:  # fmt: skip
        """Queue the commands of :meth:`_update` on ``pipe`` (a transaction) without running it."""
        drop, due, token = change.get("drop", ()), change.get("due"), change.get("token")
        latency, report_due = change.get("latency"), change.get("report_due")
        now = time.time()
        key, log = email_key(email_id), history_key(email_id)
        fields["updated_at"] = now
        entry = {"attempt": attempt, "at": now, "outcome": fields["status"], "detail": detail}
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
        if fields["status"] == Status.FAILED:  # Failed only: Sent writes no more than before
            index = status_index_key(Status.FAILED)
            pipe.zadd(index, {email_id: now})
            pipe.zremrangebyscore(index, "-inf", now - self.ttl)
        count(pipe, fields["status"], fields.get("smtp_response"), latency)
        if token is not None:
            self._release(keys=[claim_key(email_id)], args=[token], client=pipe)
        if Status(fields["status"]).final:
            self._settle(keys=[key, *PENDING_KEYS], client=pipe)

    def metrics(self) -> dict[str, float]:
        """The delivery counters (see :func:`mailgate.status.counters.count`)."""
        raw = cast(dict[str, str], self.redis.hgetall(METRICS_KEY))
        return {name: float(value) for name, value in raw.items()}


def pending_size(job: EmailJob, content: str | None = None) -> int:
    """What an e-mail weighs against its owner's quota: its record's content (the job, as
    stored in Redis) and its attachments' bytes (spooled uploads, or files on disk)."""
    stored = len((content if content is not None else job.to_json()).encode())
    return stored + sum(attachment.size for attachment in job.attachments)


def _pages(ids: Iterable[str]) -> Iterator[tuple[str, ...]]:
    """``ids`` in tuples of PAGE (itertools.batched, from Python 3.12)."""
    items = iter(ids)
    while page := tuple(islice(items, PAGE)):
        yield page


def _start_call(
    email_id: str, token: str, lease_seconds: float, watchdog_at: float
) -> tuple[list[str], list[str | int | float]]:
    """The keys and arguments of the START script for one e-mail."""
    keys = [email_key(email_id), claim_key(email_id), DUE_KEY]
    args: list[str | int | float] = [
        token, int(lease_seconds * 1000), watchdog_at, time.time(), email_id,
    ]  # fmt: skip
    return keys, args


def _start_result(email_id: str, result: Any) -> tuple[str, Record | None]:
    """The START script's reply as (verdict, the record when the verdict is "go")."""
    verdict = str(result[0])
    if verdict != "go":
        return verdict, None
    flat = [str(item) for item in result[1]]
    return verdict, parse_record(email_id, dict(zip(flat[::2], flat[1::2], strict=True)))
