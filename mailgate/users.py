"""Accounts: a TOML file of argon2id hashes and allowed-sender globs, re-read when it changes.

The file is the only source of truth, so ``mailgate user add/remove`` takes effect on a running
API and worker at their next request: each checks the file's identity (inode, size, mtime).
"""

from __future__ import annotations

import fcntl
import functools
import hmac
import ipaddress
import os
import re
import secrets
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path

import tomli_w
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from limits import parse as parse_rate

from mailgate.errors import AuthFailed, ConfigError, Unavailable, UserError
from mailgate.relays import parse_route

REFRESH_AHEAD = 0.2
"""In the last fifth of an entry's life, one caller re-verifies it ahead of expiry."""
FLIGHT_WAIT_SECONDS = 5.0
"""How long identical requests wait for the one argon2 check under way."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_NAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024
"""Longer user names or passwords are refused at once (305): no account has one, and no
throttle key or argon2 run should ever be paid for one."""

MIN_PASSWORD_CHARS = 12
MIN_DISTINCT_CHARS = 5
"""A new password (``mailgate user add`` and ``passwd``) has at least MIN_PASSWORD_CHARS
characters, at least MIN_DISTINCT_CHARS of them different, unless ``--weak-password-ok``."""

Guard = Callable[[], AbstractContextManager[None]]
"""Wraps each argon2 check: the login throttle's reservation (see api.ratelimit)."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1024)
def parsed_networks(networks: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """CIDR strings parsed once per distinct list, not on every request."""
    return tuple(ipaddress.ip_network(net, strict=False) for net in networks)


@dataclass(frozen=True)
class Account:
    """One API account."""

    name: str
    password_hash: str
    senders: tuple[str, ...] = ()
    rate: str | None = None
    """Send rate limit in the ``limits`` notation, e.g. ``"20/second"``; None: unlimited."""
    networks: tuple[str, ...] = ()
    """Client networks (CIDR) this account may call from; empty: any address."""
    smtp: str | None = field(default=None, repr=False)
    """The account's own route (relay URLs, credentials included); None: the default."""
    max_pending: int | None = None
    """E-mails not yet final this account may have (0: no limit); None: the setting's."""
    max_pending_bytes: int | None = None
    """Their bytes together (0: no limit); None: the setting's."""

    def quota(self, emails: int, size: int) -> tuple[int, int]:
        """The most e-mails not yet final and their bytes: the account's own limits, else
        the given defaults (0: no limit)."""
        return (
            emails if self.max_pending is None else self.max_pending,
            size if self.max_pending_bytes is None else self.max_pending_bytes,
        )

    def allows_address(self, address: str) -> bool:
        """True when the account has no network list or ``address`` lies in one of them."""
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in parsed_networks(self.networks))

    def may_send_as(self, sender: str, default_sender: str) -> bool:
        """The default sender is open to all; any other must match one of the globs."""
        address = sender.lower()
        if address == default_sender.lower():
            return True
        return any(fnmatchcase(address, pattern.lower()) for pattern in self.senders)


def weakness(password: str) -> str | None:
    """Why ``password`` is too weak to set, or None when it is strong enough."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"it has {len(password)} characters, fewer than {MIN_PASSWORD_CHARS}"
    if len(set(password)) < MIN_DISTINCT_CHARS:
        return f"it has fewer than {MIN_DISTINCT_CHARS} different characters"
    return None


def new_password() -> str:
    """A random password: 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


def plausible(name: str, password: str) -> bool:
    """False for credentials too long for any account: refuse them without further work."""
    return len(name) <= MAX_NAME_CHARS and len(password) <= MAX_PASSWORD_CHARS


class UserStore:
    """Loads accounts on demand and verifies passwords, with a short-lived verified cache."""

    def __init__(
        self,
        path: Path,
        cache_seconds: float = 60.0,
        concurrent_checks: int = 2,
        check_wait_seconds: float = 3.0,
    ) -> None:
        self.path = path
        self.cache_seconds = cache_seconds
        self._hasher = PasswordHasher()
        # Each argon2 check holds 64 MiB while it runs: at most this many at once, so a crowd
        # of guesses queues (then gets 503) instead of taking the process's memory.
        self._checks = threading.BoundedSemaphore(concurrent_checks)
        self._check_wait = check_wait_seconds
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        self._accounts: dict[str, Account] = {}
        # Keyed by an HMAC of name and password under a per-process key, so the cache never
        # holds a password or a plain fast hash of one.
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[float, str]] = {}
        self._flights: dict[bytes, threading.Event] = {}
        self._refreshing: set[bytes] = set()
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def accounts(self) -> dict[str, Account]:
        """Every account, re-read if the file changed since the last look."""
        try:
            info = os.stat(self.path)
            identity: tuple[int, int, int] | None = (info.st_ino, info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            identity = None
        with self._lock:
            if identity != self._identity:
                self._accounts = _read(self.path) if identity else {}
                self._identity = identity
            return self._accounts

    def get(self, name: str) -> Account | None:
        return self.accounts().get(name)

    def _digest(self, name: str, password: str) -> bytes:
        return hmac.digest(self._cache_key, f"{name}\x00{password}".encode(), "sha256")

    def cached(self, name: str, password: str) -> Account | None:
        """The account if these exact credentials were verified recently (no argon2 work).

        Shortly before an entry expires, one caller gets None and re-verifies (see
        :meth:`verify`) while everyone else keeps using the entry: the argon2 work of a busy
        account is paid by one request a period, never by a crowd at the moment it expires.
        """
        account = self.get(name)
        if account is None:
            return None
        digest = self._digest(name, password)
        entry = self._verified.get(digest)
        now = time.monotonic()
        if not entry or entry[0] <= now or entry[1] != account.password_hash:
            return None
        if entry[0] - now < self.cache_seconds * REFRESH_AHEAD:
            with self._lock:
                if digest not in self._refreshing:
                    self._refreshing.add(digest)
                    return None
        return account

    def authenticate(self, name: str, password: str, guard: Guard = nullcontext) -> Account:
        """Return the account for these credentials, or raise :class:`AuthFailed`."""
        return self.cached(name, password) or self.verify(name, password, guard)

    def verify(self, name: str, password: str, guard: Guard = nullcontext) -> Account:
        """Check the password with argon2 (once for a crowd of identical requests) and cache it.

        Raises :class:`AuthFailed`. An unknown name costs the same argon2 work as a wrong
        password, so timing does not reveal which names exist. Each argon2 run happens inside
        ``guard()``, which may refuse it (the failed-login throttle); requests waiting on an
        identical one under way pay nothing when it succeeds.
        """
        if not plausible(name, password):
            raise AuthFailed()
        digest = self._digest(name, password)
        with self._lock:
            flight = self._flights.get(digest)
            leader = flight is None
            if flight is None:
                flight = self._flights[digest] = threading.Event()
        if not leader:
            flight.wait(FLIGHT_WAIT_SECONDS)
            account = self._still_verified(name, digest)
            if account is not None:
                return account
        try:
            with guard():
                return self._checked(name, password, digest)
        finally:
            if leader:
                with self._lock:
                    self._flights.pop(digest, None)
                    self._refreshing.discard(digest)
                flight.set()

    def _checked(self, name: str, password: str, digest: bytes) -> Account:
        """The argon2 check in one of the process's slots; 503 when none frees up in time.

        A refresh ahead of expiry (the credentials are still in the cache) never waits: with
        every slot busy, the cached entry answers until it expires.
        """
        cached = self._still_verified(name, digest)
        if not self._checks.acquire(timeout=0 if cached else self._check_wait):
            if cached is not None:
                return cached
            raise Unavailable("too many password checks under way; try again", retry_after=1)
        try:
            return self._argon2(name, password, digest)
        finally:
            self._checks.release()

    def _still_verified(self, name: str, digest: bytes) -> Account | None:
        """The account if its cache entry for these credentials has not expired (refresh-ahead
        aside) and its password is unchanged."""
        account = self.get(name)
        entry = self._verified.get(digest)
        if account and entry and entry[0] > time.monotonic() and entry[1] == account.password_hash:
            return account
        return None

    def _argon2(self, name: str, password: str, digest: bytes) -> Account:
        account = self.get(name)
        try:
            self._hasher.verify(account.password_hash if account else self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            raise AuthFailed() from None
        if account is None:
            raise AuthFailed()
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[digest] = (time.monotonic() + self.cache_seconds, account.password_hash)
        return account

    def add(
        self,
        name: str,
        password: str,
        senders: tuple[str, ...] = (),
        rate: str | None = None,
        networks: tuple[str, ...] = (),
        smtp: str | None = None,
        max_pending: int | None = None,
        max_pending_bytes: int | None = None,
    ) -> Account:
        """Create an account; the name must be new."""
        if not NAME_PATTERN.match(name):
            raise UserError(f"invalid user name {name!r}: letters, digits, . _ @ - only")
        _check_password(password)
        _check(rate, networks, smtp)
        _check_limits(max_pending, max_pending_bytes)
        account = Account(
            name,
            self._hasher.hash(password),
            tuple(senders),
            rate,
            tuple(networks),
            smtp or None,
            max_pending=max_pending,
            max_pending_bytes=max_pending_bytes,
        )
        with self._editing() as accounts:
            if name in accounts:
                raise UserError(f"user {name!r} already exists")
            accounts[name] = account
        return account

    def set_password(self, name: str, password: str) -> None:
        """Give account ``name`` a new password: one atomic replace of the file, so every
        request sees either the old hash or the new one (never no account), and the old
        password stops working at the next request of each process (see :meth:`cached`)."""
        _check_password(password)
        password_hash = self._hasher.hash(password)
        with self._editing() as accounts:
            account = accounts.get(name)
            if account is None:
                raise UserError(f"no user {name!r}")
            accounts[name] = replace(account, password_hash=password_hash)

    def update(
        self,
        name: str,
        senders: tuple[str, ...] | None = None,
        rate: str | None = None,
        networks: tuple[str, ...] | None = None,
        smtp: str | None = None,
        max_pending: int | None = None,
        max_pending_bytes: int | None = None,
    ) -> Account:
        """Change what is given of an existing account (None: unchanged). An empty ``rate``
        removes the limit; an empty ``smtp`` returns the account to the default route; a
        quota limit of ``-1`` returns it to the setting's."""
        _check(rate or None, networks or (), smtp or None)
        _check_limits(max_pending, max_pending_bytes, allow_reset=True)
        with self._editing() as accounts:
            account = accounts.get(name)
            if account is None:
                raise UserError(f"no user {name!r}")
            if senders is not None:
                account = replace(account, senders=tuple(senders))
            if rate is not None:
                account = replace(account, rate=rate or None)
            if networks is not None:
                account = replace(account, networks=tuple(networks))
            if smtp is not None:
                account = replace(account, smtp=smtp or None)
            if max_pending is not None:
                account = replace(account, max_pending=None if max_pending < 0 else max_pending)
            if max_pending_bytes is not None:
                size = None if max_pending_bytes < 0 else max_pending_bytes
                account = replace(account, max_pending_bytes=size)
            accounts[name] = account
        return account

    def remove(self, name: str) -> None:
        """Delete an account; it must exist."""
        with self._editing() as accounts:
            if name not in accounts:
                raise UserError(f"no user {name!r}")
            del accounts[name]

    @contextmanager
    def _editing(self) -> Iterator[dict[str, Account]]:
        """Lock the file, hand out its accounts, then write them back atomically."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            accounts = _read(self.path) if self.path.exists() else {}
            yield accounts
            _write(self.path, accounts)


def _check_password(password: str) -> None:
    """Refuse a password no login could ever use."""
    if not password:
        raise UserError("the password must not be empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UserError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")


def _check(rate: str | None, networks: tuple[str, ...], smtp: str | None) -> None:
    """Refuse a rate, network or route the gateway could not use."""
    if rate is not None:
        try:
            parse_rate(rate)
        except ValueError:
            raise UserError(f"invalid rate {rate!r}: use e.g. 20/second or 1000/hour") from None
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise UserError(f"invalid network {network!r}: use CIDR, e.g. 10.0.0.0/8") from None
    if smtp is not None:
        try:
            parse_route(smtp, "--smtp")
        except ConfigError as exc:
            raise UserError(f"invalid relay: {exc}") from None


def _check_limits(*limits: int | None, allow_reset: bool = False) -> None:
    """Refuse a quota limit below 0 (below -1, the reset, for an update)."""
    lowest = -1 if allow_reset else 0
    for limit in limits:
        if limit is not None and limit < lowest:
            raise UserError(f"invalid limit {limit}: a number of at least {lowest}")


def _limit(value: object) -> int | None:
    """A quota limit from the file: a whole number of at least 0, or absent."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _read(path: Path) -> dict[str, Account]:
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    users = data.get("users", {})
    return {
        name: Account(
            name,
            str(entry["password_hash"]),
            tuple(entry.get("senders", ())),
            entry.get("rate") or None,
            tuple(entry.get("networks", ())),
            entry.get("smtp") or None,
            _limit(entry.get("max_pending")),
            _limit(entry.get("max_pending_bytes")),
        )
        for name, entry in users.items()
    }


def _write(path: Path, accounts: dict[str, Account]) -> None:
    users: dict[str, dict[str, object]] = {}
    for a in accounts.values():
        entry: dict[str, object] = {"password_hash": a.password_hash, "senders": list(a.senders)}
        if a.rate:
            entry["rate"] = a.rate
        if a.networks:
            entry["networks"] = list(a.networks)
        if a.max_pending is not None:
            entry["max_pending"] = a.max_pending
        if a.max_pending_bytes is not None:
            entry["max_pending_bytes"] = a.max_pending_bytes
        if a.smtp:
            entry["smtp"] = a.smtp
        users[a.name] = entry
    document = {"users": users}
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".users-", suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                b"# mailgate accounts: edit with `mailgate user add/update/passwd/remove`.\n"
            )
            tomli_w.dump(document, handle)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
