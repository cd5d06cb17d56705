"""Group commit: the claims and outcomes of many concurrent deliveries share Redis round trips.

:class:`BatchedStatusStore` is a :class:`StatusStore` whose ``start_attempt`` and outcome writes
(``mark_sent``, ``mark_retry``, ``mark_failed``) are queued by each calling thread and run by
one of them for everyone waiting at that moment: the START scripts of all waiting claims in one
pipeline (each script stays atomic on its own), the outcomes of all waiting e-mails in one
MULTI/EXEC. No call returns before its own commands have run, so a caller that acks its task
message after ``mark_sent`` still acks only what Redis holds. Nothing waits for a batch to
fill: with one caller a batch is that call alone, and under load the batches grow by
themselves (whoever arrives while a round trip is in flight joins the next one).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Unpack

import redis

from mailgate.status import scripts
from mailgate.status.counters import count
from mailgate.status.keys import (
    DUE_KEY,
    METRICS_KEY,
    PENDING_KEYS,
    REPORTS_DUE_KEY,
    claim_key,
    email_key,
    history_key,
    status_index_key,
)
from mailgate.status.records import Record, Status
from mailgate.status.store import (
    HISTORY_LIMIT,
    Change,
    StatusStore,
    _start_call,
    _start_result,
)

In = TypeVar("In")
Out = TypeVar("Out")

BATCH_LIMIT = 64
"""At most this many calls per round trip."""


@dataclass
class _Slot(Generic[In, Out]):
    item: In
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    """Set when the slot's thread must run the next batch itself."""
    result: Out | None = None
    error: BaseException | None = None


class GroupCommit(Generic[In, Out]):
    """Runs ``run`` over the items of every call waiting at the time, one batch at a time.

    The thread whose call finds no batch running leads: it runs a batch (its own item and up
    to ``limit - 1`` others), hands leadership to the oldest waiter if any are left, and
    returns. ``run`` returns one result per item, in order; an exception it raises is raised
    in every call of that batch.
    """

    def __init__(self, run: Callable[[list[In]], list[Out]], limit: int = BATCH_LIMIT) -> None:
        self._run = run
        self._limit = limit
        self._lock = threading.Lock()
        self._waiting: list[_Slot[In, Out]] = []
        self._running = False

    def __call__(self, item: In) -> Out:
        slot: _Slot[In, Out] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            if not self._running:
                self._running = slot.lead = True
        if not slot.lead:
            slot.done.wait()
        if slot.lead:
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting[: self._limit], self._waiting[self._limit :]
        try:
            results = self._run([slot.item for slot in batch])
        except BaseException as exc:
            for slot in batch:
                slot.error = exc
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        with self._lock:
            if self._waiting:
                heir = self._waiting[0]
                heir.lead = True
                heir.done.set()
            else:
                self._running = False
        for slot in batch:
            slot.lead = False
            slot.done.set()


_Start = tuple[str, str, float, float]
_Update = tuple[tuple[Any, ...], dict[str, Any]]


class BatchedStatusStore(StatusStore):
    """A StatusStore whose delivery claims and outcomes are group-committed (see the module)."""

    def __init__(
        self, client: redis.Redis, ttl_seconds: int, min_replicas: int = 0, limit: int = BATCH_LIMIT
    ) -> None:
        super().__init__(client, ttl_seconds, min_replicas)
        self._starts: GroupCommit[_Start, tuple[str, Record | None]] = GroupCommit(
            self._run_starts, limit
        )
        self._updates: GroupCommit[_Update, None] = GroupCommit(self._run_updates, limit)
        self._outcomes = client.register_script(scripts.OUTCOMES)

    def start_attempt(
        self, email_id: str, token: str, lease_seconds: float, watchdog_at: float
    ) -> tuple[str, Record | None]:
        return self._starts((email_id, token, lease_seconds, watchdog_at))

    def _update(self, *args: Any, **kwargs: Any) -> None:
        self._updates((args, kwargs))

    def _run_starts(self, items: list[_Start]) -> list[tuple[str, Record | None]]:
        if len(items) == 1:
            return [super().start_attempt(*items[0])]
        pipe = self.redis.pipeline(transaction=False)
        for email_id, token, lease, watchdog_at in items:
            keys, args = _start_call(email_id, token, lease, watchdog_at)
            self._start(keys=keys, args=args, client=pipe)
        replies = pipe.execute()
        return [_start_result(item[0], reply) for item, reply in zip(items, replies, strict=True)]

    def _run_updates(self, items: list[_Update]) -> list[None]:
        # One script for all: each e-mail's outcome stays atomic (the whole batch is).
        specs = [self._outcome(*args, **kwargs) for args, kwargs in items]
        self._outcomes(
            keys=[DUE_KEY, REPORTS_DUE_KEY, METRICS_KEY, *PENDING_KEYS],
            args=[self.ttl, HISTORY_LIMIT, *specs],
        )
        return [None] * len(items)

    def _outcome(
        self, email_id: str, attempt: int, fields: dict[str, Any], detail: str,
        **change: Unpack[Change],
    ) -> str:  # fmt: skip
        """One outcome for the OUTCOMES script: what StatusStore._queue_update queues, as JSON
        (values written as redis-py writes them)."""
        drop, due, token = change.get("drop", ()), change.get("due"), change.get("token")
        latency, report_due = change.get("latency"), change.get("report_due")
        now = time.time()
        fields["updated_at"] = now
        entry = {"attempt": attempt, "at": now, "outcome": fields["status"], "detail": detail}
        counters = _Counters()
        count(counters, fields["status"], fields.get("smtp_response"), latency)
        spec: dict[str, Any] = {
            "id": email_id, "key": email_key(email_id), "log": history_key(email_id),
            "fields": [_wire(item) for pair in fields.items() for item in pair],
            "drop": list(drop), "entry": json.dumps(entry),
            "counters": counters.calls,
        }  # fmt: skip
        if due is not None:
            spec["due"] = _wire(due)
        if report_due is not None:
            spec["report_due"] = _wire(report_due)
        if fields["status"] == Status.FAILED:  # into the Failed index, as _queue_update does
            spec["index"], spec["at"] = status_index_key(Status.FAILED), _wire(now)
        if token is not None:
            spec["claim"], spec["token"] = claim_key(email_id), token
        if Status(fields["status"]).final:
            spec["final"] = True
        return json.dumps(spec)


class _Counters:
    """Collects what :func:`mailgate.status.counters.count` writes to the counters hash, as
    (command, field, value) for the OUTCOMES script."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def hincrby(self, key: str, name: str, amount: int) -> None:
        self.calls.append(["HINCRBY", name, str(amount)])

    def hincrbyfloat(self, key: str, name: str, amount: float) -> None:
        self.calls.append(["HINCRBYFLOAT", name, _wire(amount)])

    def hset(self, key: str, name: str, value: Any) -> None:
        self.calls.append(["HSET", name, _wire(value)])


def _wire(value: Any) -> str:
    """A value as redis-py sends it (floats by repr, like its Encoder)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)
