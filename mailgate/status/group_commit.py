"""Group commit: the claims and outcomes of many concurrent deliveries share Redis round trips.

:class:`BatchedStatusStore` is a :class:`StatusStore` whose ``start_attempt`` and outcome writes
(``mark_sent``, ``mark_retry``, ``mark_failed``) are queued by each calling thread and run by
one of them for everyone waiting at that moment: the START scripts of all waiting claims in one
pipeline (each script stays atomic on its own), the outcomes of all waiting e-mails in one call
of the OUTCOMES script, the one write of an outcome (the plain store runs it for one). No call
returns before its own commands have run, so a caller that acks its task message after
``mark_sent`` still acks only what Redis holds. Nothing waits for a batch to fill: with one
caller a batch is that call alone, and under load the batches grow by themselves (whoever
arrives while a round trip is in flight joins the next one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import redis

from mailgate.status.records import Outcome, Record
from mailgate.status.store import StatusStore, _start_call, _start_result

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


class BatchedStatusStore(StatusStore):
    """A StatusStore whose delivery claims and outcomes are group-committed (see the module)."""

    def __init__(
        self, client: redis.Redis, ttl_seconds: int, min_replicas: int = 0, limit: int = BATCH_LIMIT
    ) -> None:
        super().__init__(client, ttl_seconds, min_replicas)
        self._starts: GroupCommit[_Start, Record | Outcome] = GroupCommit(self._run_starts, limit)
        self._updates: GroupCommit[str, None] = GroupCommit(self._run_updates, limit)

    def start_attempt(
        self, email_id: str, token: str, lease_seconds: float, watchdog_at: float
    ) -> Record | Outcome:
        return self._starts((email_id, token, lease_seconds, watchdog_at))

    def _commit(self, spec: str) -> None:
        # The outcome was written out in the caller's thread; the round trip is shared.
        self._updates(spec)

    def _run_starts(self, items: list[_Start]) -> list[Record | Outcome]:
        if len(items) == 1:
            return [super().start_attempt(*items[0])]
        pipe = self.redis.pipeline(transaction=False)
        for email_id, token, lease, watchdog_at in items:
            keys, args = _start_call(email_id, token, lease, watchdog_at)
            self._start(keys=keys, args=args, client=pipe)
        replies = pipe.execute()
        return [_start_result(item[0], reply) for item, reply in zip(items, replies, strict=True)]

    def _run_updates(self, specs: list[str]) -> list[None]:
        self._write_outcomes(specs)
        return [None] * len(specs)
