"""The Celery worker application (``celery -A worker.app worker``): the composition root.

Settings are checked at import, so a bad variable stops the worker (and Flower) with one line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from mailgate.broker import make_celery, publish
from mailgate.config import Settings
from mailgate.errors import ConfigError
from mailgate.logs import configure_logging
from mailgate.spool import sweep
from mailgate.status import StatusStore
from mailgate.status.group_commit import BatchedStatusStore
from mailgate.users import UserStore
from worker import logs as worker_logs
from worker.delivery import Delivery
from worker.dkim import Signer
from worker.flower import flower_address, guard_flower
from worker.pool import DeliveryPool
from worker.relays import default_relays
from worker.reports import Reporter
from worker.scheduler import Scheduler
from worker.tasks import publish_report, register_tasks

try:
    settings = Settings.from_env()
    guard_flower(sys.argv, settings)
    # Flower loads this app too, to know its tasks; it sends nothing and needs no key files.
    delivers = flower_address(sys.argv) is None
    signer = Signer.load(settings.dkim_keys) if delivers else None
    relays = default_relays(settings, UserStore(settings.users_file), check=delivers)
except ConfigError as exc:
    sys.exit(f"mailgate: {exc}")
worker_logs.setup(sys.argv)  # before Celery or Flower set up logging of their own

app = make_celery(settings)
store = StatusStore.from_url(
    settings.redis_url,
    settings.status_ttl_seconds,
    settings.redis_min_replicas,
    settings.worker_concurrency,  # each delivery thread may hold a connection at once
)
delivery = Delivery(
    # Deliveries run on many threads at once: their claims and outcomes share round trips.
    store=BatchedStatusStore(store.redis, settings.status_ttl_seconds, store.min_replicas),
    transport=relays,
    settings=settings,
    report=lambda email_id: publish_report(app, email_id),
    signer=signer,
)
delivery_pool = DeliveryPool(delivery, settings.worker_concurrency)
register_tasks(app, delivery, Reporter(store=store, settings=settings), delivery_pool)
scheduler = Scheduler(
    store,
    lambda email_id: publish(app, email_id),
    settings.redelivery_seconds,
    publish_report=lambda email_id: publish_report(app, email_id),
    housekeeping=lambda: sweep(settings),
)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_scheduler(**_: Any) -> None:
    configure_logging(process="worker")
    # worker.delivery logs one line per outcome with the EmailId; Celery's own received and
    # succeeded lines would triple the log volume (and its cost) per e-mail.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    scheduler.start()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_scheduler(**_: Any) -> None:
    scheduler.stop()
    delivery_pool.stop()
