"""Publishes what is due: retries whose back-off has passed, watchdogs that fired, and
delivery reports whose next try (a retry, a wait for a report slot) or watchdog has come.

Retries are not Celery countdowns: an ETA message longer than the Redis visibility timeout is
redelivered again and again (kombu #337). Instead each non-final e-mail has one entry in the
store's due set; every worker runs this loop, and the store's atomic take leases each id so
two workers do not publish it together. A lost publish (crash, Redis restart) only delays an
e-mail until its lease runs out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mailgate.status import REPORTS_DUE_KEY, StatusStore

log = logging.getLogger(__name__)


class Scheduler:
    """A daemon thread that moves due e-mails from the due set onto the queue."""

    def __init__(
        self,
        store: StatusStore,
        publish: Callable[[str], None],
        lease_seconds: float,
        publish_report: Callable[[str], None] | None = None,
        interval: float = 0.5,
        batch: int = 500,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_interval: float = 300.0,
    ) -> None:
        self.store = store
        self.publish = publish
        self.publish_report = publish_report
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.batch = batch
        self.housekeeping = housekeeping
        """Run every ``housekeeping_interval`` seconds: the spool's sweep of expired uploads."""
        self.housekeeping_interval = housekeeping_interval
        self._housekeeping_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mailgate-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def run_once(self) -> int:
        """Publish every due e-mail now; the number published."""
        now = time.time()
        ids = self.store.take_due(now, self.batch, self.lease_seconds)
        for email_id in ids:
            self.publish(email_id)
        reports: list[str] = []
        if self.publish_report is not None:
            reports = self.store.take_due(now, self.batch, self.lease_seconds, REPORTS_DUE_KEY)
            for email_id in reports:
                self.publish_report(email_id)
        return max(len(ids), len(reports))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._housekeep()
                published = self.run_once()
            except Exception as exc:  # Redis away: try again next tick, the leases keep order
                log.warning("scheduler tick failed: %s", type(exc).__name__)
                published = 0
            if published < self.batch:
                self._stop.wait(self.interval)

    def _housekeep(self) -> None:
        now = time.monotonic()
        if self.housekeeping is None or now < self._housekeeping_at:
            return
        self._housekeeping_at = now + self.housekeeping_interval
        self.housekeeping()
