"""What the API needs at hand, built once per app: settings, stores, the publishing Celery app."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app

from api.ratelimit import Limits
from mailgate.broker import make_celery
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

    @classmethod
    def build(cls, settings: Settings) -> Services:
        return cls(
            settings=settings,
            store=StatusStore.from_url(
                settings.redis_url, settings.status_ttl_seconds, settings.redis_min_replicas
            ),
            users=UserStore(settings.users_file, settings.auth_cache_seconds),
            celery=make_celery(settings),
            limits=Limits(settings),
        )


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions["mailgate"]
    return found
