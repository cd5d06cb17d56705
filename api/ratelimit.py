"""Rate limits, counted in Redis so they hold across every API process.

- Per-account send rates (``rate = "20/second"`` in the users file): parsed by the ``limits``
  library, counted as its moving window is, in the status store's create step
  (:func:`send_rate`).
- Failed-login throttles that slow the guesser, not the owner (docs/security.md):

  * Every argon2 check first *reserves* a slot in Redis, atomically (one Lua script), in the
    scopes that apply; a success gives the slots back, a failure keeps them. So parallel guesses
    never run more argon2 checks than the limits allow, and only failures count.
  * Scopes: this address and user name (``client``), this address (``address``), this user
    name from anywhere (``user``). Each is a window that starts at its first failure.
  * A *known client* (this user name logged in successfully from this address within
    :data:`KNOWN_CLIENT_SECONDS`) meets only its own ``client`` scope: someone else's guessing,
    from elsewhere or from its own office address, cannot lock it out.
  * When the ``user`` scope is full, an unknown address may still try at
    :data:`OVERFLOW_RATE` for that user name: a slow lane that keeps a distributed guess slow
    without locking the owner out for the rest of the window. Each network (:func:`network`:
    an IPv4 /24, an IPv6 /64) has a lane of its own, so a guesser who takes its lane every
    minute never takes the owner's, and more addresses in one network buy no more guesses.

User names and addresses reach Redis only as truncated SHA-256 digests, so a key's size never
depends on what a caller sent.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import redis
from limits import RateLimitItem, parse

from mailgate.config import Settings
from mailgate.errors import AuthFailed, RateLimited
from mailgate.redisconn import pool_size, redis_client
from mailgate.users import Account

KNOWN_CLIENT_SECONDS = 7 * 24 * 3600
"""How long a successful login makes its (address, user name) pair a known client."""
OVERFLOW_RATE = "1/minute"
"""Attempts per user name and network from unknown addresses while its ``user`` scope is
full."""
LANE_PREFIX = {4: 24, 6: 64}
"""The network that shares one slow lane, by IP version: what one site or one customer of an
ISP typically holds."""

# KEYS: known, client, address, user, overflow. ARGV: limit and window of keys 2..5.
# Returns how many of the keys 2..5 were taken (1, 3 or 4), or 0 when refused.
_RESERVE = """
local function full(i)
  return tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[2 * i - 3])
end
local taken = 1
if full(2) then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if full(3) then return 0 end
  taken = 3
  if full(4) then
    if full(5) then return 0 end
    taken = 4
  end
end
for i = 2, taken + 1 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i - 2]) end
end
return taken
"""

# KEYS: the reserved keys, then the known-client key. ARGV: its lifetime.
_SUCCEEDED = """
for i = 1, #KEYS - 1 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
redis.call('SET', KEYS[#KEYS], '1', 'EX', ARGV[1])
return 1
"""


def digest(text: str) -> str:
    """A short fixed-size stand-in for caller-supplied text in a Redis key."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def network(address: str) -> str:
    """The network of a client address that shares one slow lane (an IPv4 /24, an IPv6 /64;
    an IPv4-mapped IPv6 address counts as IPv4); anything that is no IP address stands alone."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ipaddress.ip_network(f"{ip}/{LANE_PREFIX[ip.version]}", strict=False))


def send_rate(account: Account) -> tuple[int, int]:
    """The account's send rate (``rate = "20/second"``) as (e-mails, seconds), (0, 0) for
    none: the status store's create step counts it (a moving window) in the round trip that
    records the e-mail, so only an accepted e-mail takes a place in it."""
    return _window(account.rate) if account.rate else (0, 0)


@lru_cache(maxsize=256)
def _window(rate: str) -> tuple[int, int]:
    item = parse(rate)
    return item.amount, item.get_expiry()


class Limits:
    """The API's rate limits over one Redis server."""

    def __init__(self, settings: Settings, threads: int = 0) -> None:
        # threads: the request threads that may use these clients at once (0: redis-py's pool).
        options = {"socket_timeout": 5, "socket_connect_timeout": 2}
        if threads:
            options["max_connections"] = pool_size(threads)
        self._redis = redis_client(settings.redis_url, **options)
        self._reserve = self._redis.register_script(_RESERVE)
        self._succeeded = self._redis.register_script(_SUCCEEDED)
        scopes = (
            settings.login_failures_per_client,
            settings.login_failures_per_address,
            settings.login_failures_per_user,
            OVERFLOW_RATE,
        )
        items: list[RateLimitItem] = [parse(rate) for rate in scopes]
        self._login_args = [n for item in items for n in (item.amount, item.get_expiry())]

    @contextmanager
    def login_attempt(self, address: str, name: str) -> Iterator[None]:
        """Reserve one password check before it runs (429 if none is left); a success gives
        the reservation back and marks the client known, a failure keeps it."""
        user, place = digest(name), digest(address)
        keys = [
            f"mailgate:login:known:{place}:{user}",
            f"mailgate:login:client:{place}:{user}",
            f"mailgate:login:address:{place}",
            f"mailgate:login:user:{user}",
            f"mailgate:login:overflow:{user}:{digest(network(address))}",
        ]
        taken = int(self._reserve(keys=keys, args=self._login_args))
        if not taken:
            raise RateLimited("too many failed logins; try again later")
        reserved = keys[1 : taken + 1]
        try:
            yield
        except AuthFailed:
            raise
        except BaseException:
            self._refund(reserved)  # not a failed login: the check did not finish
            raise
        self._succeeded(keys=[*reserved, keys[0]], args=[KNOWN_CLIENT_SECONDS])

    def _refund(self, keys: list[str]) -> None:
        try:
            for key in keys:
                if int(self._redis.get(key) or 0) > 0:
                    self._redis.decr(key)
        except redis.RedisError:
            pass  # the window's expiry frees the slot anyway
