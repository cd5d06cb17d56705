"""Routes: which relays an e-mail may leave through, in which order, and which one took it.

A route is one or more relays (``MAILGATE_SMTP_URL``, or an account's own ``smtp`` in the users
file). Each relay has its own :class:`SmtpTransport` (its kept sessions, its OAuth2 token), so
sessions are pooled per route and one tenant's relay never holds another's sessions.

Failover: a relay that fails before the message is offered (no connection, a time-out, a 4xx
greeting, TLS, a refused login or token: the error is ``unsent``) hands the e-mail to the next
relay at once. Anything after MAIL stays that relay's answer: a 5xx for a recipient is final,
and a 4xx or a time-out during the transaction is retried later (the relay may have the
message: another relay could deliver it twice). A relay that failed ``failures`` times in a
row is tried last for ``skip_seconds`` (a circuit breaker per worker process), so a dead relay
stops costing each e-mail a time-out while another relay works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mailgate.config import Settings
from mailgate.errors import ConfigError, DeliveryError, PermanentDelivery, TransientDelivery
from mailgate.relays import Route, SmtpTarget, parse_route
from mailgate.users import UserStore
from worker.smtp import Data, SmtpTransport, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handoff:
    """The relay's reply to DATA, and which relay (``host:port``) gave it."""

    reply: str
    relay: str


@runtime_checkable
class Router(Protocol):
    """A transport that picks the route by the e-mail's account and names the relay used."""

    def handoff(self, owner: str, data: Data, sender: str, recipients: list[str]) -> Handoff: ...


class Breaker:
    """Counts a relay's failures in a row; after ``limit`` of them it is skipped for a while."""

    def __init__(
        self, limit: int, skip_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.skip_seconds = skip_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._skip_until = 0.0

    @property
    def failures(self) -> int:
        """Failures in a row so far."""
        return self._failures

    @property
    def skipped(self) -> bool:
        """True while the relay is to be tried only when the others have failed."""
        return self._clock() < self._skip_until

    def failed(self) -> bool:
        """Count a failure; True when it starts a time of being skipped."""
        with self._lock:
            self._failures += 1
            if self._failures < self.limit:
                return False
            # Skipped again after each failed try once the time is up (half-open).
            self._skip_until = self._clock() + self.skip_seconds
            return True

    def worked(self) -> None:
        with self._lock:
            self._failures, self._skip_until = 0, 0.0


class RelayChain:
    """One route's relays, each with its transport and breaker, tried in order."""

    def __init__(self, relays: Sequence[tuple[Transport, str]], breakers: Sequence[Breaker]):
        self.relays = list(zip(relays, breakers, strict=True))

    def check(self) -> None:
        """Read the relays' OAuth2 key and certificate files now (``OSError``, ``ValueError``)."""
        for (transport, _), _ in self.relays:
            check = getattr(transport, "check", None)
            if check is not None:
                check()

    def handoff(self, data: Data, sender: str, recipients: list[str]) -> Handoff:
        """Send through the first relay that takes the e-mail; see the module for when the
        next one is tried."""
        order = [item for item in self.relays if not item[1].skipped]
        order += [item for item in self.relays if item[1].skipped]  # last, not never
        failures: list[tuple[str, DeliveryError]] = []
        for (transport, name), breaker in order:
            try:
                reply = transport.send(data, sender, recipients)
            except DeliveryError as exc:
                if not exc.unsent:
                    breaker.worked()  # it answered: the e-mail's own outcome
                    raise
                if breaker.failed():
                    log.warning(
                        "relay %s failed %d times in a row (%s): skipped for %g s",
                        name,
                        breaker.failures,
                        exc.reason,
                        breaker.skip_seconds,
                    )
                failures.append((name, exc))
                continue
            breaker.worked()
            return Handoff(reply, name)
        raise _every_relay_failed(failures)


def _every_relay_failed(failures: list[tuple[str, DeliveryError]]) -> DeliveryError:
    """One error for a route none of whose relays could be used: final only if each relay's
    failure was (a rejected login everywhere); retried otherwise."""
    if len(failures) == 1:
        return failures[0][1]
    reason = "; ".join(f"{name}: {exc.reason}" for name, exc in failures)
    response = next((exc.smtp_response for _, exc in failures if exc.smtp_response), None)
    if all(isinstance(exc, PermanentDelivery) for _, exc in failures):
        return PermanentDelivery(f"every relay refused: {reason}", response, unsent=True)
    return TransientDelivery(f"no relay available: {reason}", response, unsent=True)


class Relays:
    """Every route of this worker process: the default, and each account's own, built when
    first used and kept (with their sessions and tokens) while the route stays the same."""

    def __init__(
        self,
        default: Route,
        timeout: float,
        failures: int = 3,
        skip_seconds: float = 60.0,
        users: UserStore | None = None,
        transport: Callable[[SmtpTarget, float], Transport] = SmtpTransport,
    ) -> None:
        self.timeout = timeout
        self.failures = failures
        self.skip_seconds = skip_seconds
        self.users = users
        self._transport = transport
        self._lock = threading.Lock()
        self._chains: dict[str, RelayChain] = {}
        self.default = self._chain(default)

    def handoff(self, owner: str, data: Data, sender: str, recipients: list[str]) -> Handoff:
        """Send an e-mail of account ``owner`` through its route."""
        return self.route(owner).handoff(data, sender, recipients)

    def send(self, data: Data, sender: str, recipients: list[str]) -> str:
        """The plain :class:`Transport`: through the default route."""
        return self.default.handoff(data, sender, recipients).reply

    def route(self, owner: str) -> RelayChain:
        """The account's own route if it has one, else the default."""
        try:
            account = self.users.get(owner) if self.users is not None and owner else None
        except (OSError, ValueError) as exc:  # unreadable, or half-edited by hand
            # Not the default route: the account may have its own, and its mail must not
            # leave by another tenant's relay.
            raise TransientDelivery(
                f"cannot read the accounts file for the account's route: {type(exc).__name__}"
            ) from None
        text = account.smtp if account is not None else None
        if not text:
            return self.default
        with self._lock:
            chain = self._chains.get(text)
        if chain is not None:
            return chain
        try:
            route = parse_route(text, f"the smtp of account {owner}")
            chain = self._chain(route)
            chain.check()
        except ConfigError as exc:
            raise TransientDelivery(f"the account's relay is unusable: {exc}") from None
        except (OSError, ValueError) as exc:  # its OAuth2 key or certificate file
            raise TransientDelivery(
                f"the account's relay is unusable: cannot read its OAuth2 key file "
                f"({getattr(exc, 'strerror', None) or type(exc).__name__})"
            ) from None
        with self._lock:
            # An account's route changed or went: its old chain is dropped with its sessions.
            if len(self._chains) > 1000:
                self._chains.clear()
            return self._chains.setdefault(text, chain)

    def _chain(self, route: Route) -> RelayChain:
        relays = [(self._transport(target, self.timeout), target.name) for target in route]
        breakers = [Breaker(self.failures, self.skip_seconds) for _ in route]
        return RelayChain(relays, breakers)


def default_relays(
    settings: Settings, users: UserStore | None = None, check: bool = True
) -> Relays:
    """The worker's routes from its settings. With ``check``, an OAuth2 key or certificate
    file of the default route that cannot be read stops start-up (:class:`ConfigError`)."""
    relays = Relays(
        settings.smtp,
        settings.smtp_timeout_seconds,
        settings.relay_failures,
        settings.relay_skip_seconds,
        users,
    )
    try:
        if check:
            relays.default.check()
        return relays
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConfigError(
            "MAILGATE_SMTP_URL", f"cannot read an OAuth2 key or certificate file: {reason}"
        ) from None
