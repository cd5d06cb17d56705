"""Per-account send rates (``rate = "20/second"`` in the users file), shared through Redis.

Every API process counts in the same Redis, so the limit holds for the whole deployment.
"""

from __future__ import annotations

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from mailgate.errors import RateLimited
from mailgate.users import Account


class SendLimiter:
    """Raises :class:`RateLimited` when an account sends faster than its rate."""

    def __init__(self, redis_url: str) -> None:
        self._limiter = MovingWindowRateLimiter(
            storage_from_string(redis_url, socket_timeout=5, socket_connect_timeout=2)
        )

    def check(self, account: Account) -> None:
        if not account.rate:
            return
        if not self._limiter.hit(parse(account.rate), "mailgate-send", account.name):
            raise RateLimited(f"{account.name} may send {account.rate}")
