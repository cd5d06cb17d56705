"""Rate limits, counted in Redis so they hold across every API process.

- Per-account send rates (``rate = "20/second"`` in the users file).
- Failed-login throttles, checked *before* any argon2 work so a brute-force run costs almost
  no CPU: per client address and user name, per address, and per user name.
"""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.strategies import MovingWindowRateLimiter

from mailgate.config import Settings
from mailgate.errors import RateLimited
from mailgate.redisconn import limits_storage
from mailgate.users import Account


class Limits:
    """The API's rate limits over one Redis storage."""

    def __init__(self, settings: Settings) -> None:
        storage = limits_storage(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._limiter = MovingWindowRateLimiter(storage)
        self._logins: list[tuple[RateLimitItem, str]] = [
            (parse(settings.login_failures_per_client), "client"),
            (parse(settings.login_failures_per_address), "address"),
            (parse(settings.login_failures_per_user), "user"),
        ]

    def check_send(self, account: Account) -> None:
        """Count one e-mail against the account's rate; 429 when over it."""
        if account.rate and not self._limiter.hit(parse(account.rate), "send", account.name):
            raise RateLimited(f"{account.name} may send {account.rate}")

    def _keys(self, address: str, name: str) -> dict[str, tuple[str, ...]]:
        return {"client": (address, name), "address": (address,), "user": (name,)}

    def check_login(self, address: str, name: str) -> None:
        """429 when this address or user name has failed too often lately."""
        keys = self._keys(address, name)
        for item, scope in self._logins:
            if not self._limiter.test(item, "login-fail", scope, *keys[scope]):
                raise RateLimited("too many failed logins; try again later")

    def login_failed(self, address: str, name: str) -> None:
        """Count one failed login against every scope."""
        keys = self._keys(address, name)
        for item, scope in self._logins:
            self._limiter.hit(item, "login-fail", scope, *keys[scope])
