"""What the API needs at hand, built once per app: settings, stores, the publishing Celery app."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app

from api.ratelimit import Limits
from mailgate.broker import broker_redis, make_celery
from mailgate.cli.server import request_threads
from mailgate.config import Settings
from mailgate.status import StatusStore
from mailgate.users import UserStore


@dataclass
class Services:
    """The API's dependencies, stored in ``app.extensions["mailgate"]``."""

    settings: Settings
    store: StatusStore
    users: UserStore
    celery: Celery
    limits: Limits
    broker_redis: redis.Redis | None = None
    """The broker's Redis (None for RabbitMQ), for the queue depth in /metrics."""

    @classmethod
    def build(cls, settings: Settings) -> Services:
        threads = request_threads(settings)
        store = StatusStore.from_url(
            settings.redis_url, settings.status_ttl_seconds, settings.redis_min_replicas, threads
        )
        return cls(
            settings=settings,
            store=store,
            users=UserStore(
                settings.users_file,
                settings.auth_cache_seconds,
                settings.password_checks,
                settings.password_check_wait_seconds,
            ),
            celery=make_celery(settings),
            limits=Limits(settings, threads),
            broker_redis=broker_redis(settings, store.redis),
        )


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions["mailgate"]
    return found
