"""Suppressed addresses: after a hard "user unknown" bounce, an account's SendEmail to that
address is refused at acceptance until the suppression's time runs out or an operator removes
it (``mailgate suppressions remove``).

One Redis string per account and address, ``mailgate:suppressed:<account>:<address>``, holding
JSON (address, code, reason, when, the EmailId that bounced, until when) with the suppression's
TTL; :meth:`mailgate.status.StatusStore.record_bounces` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import redis

from mailgate.status.keys import SUPPRESSION_PREFIX, suppression_key
from mailgate.status.records import envelope_address, iso


@dataclass(frozen=True)
class Suppression:
    """One account's suppression of one address."""

    owner: str
    address: str
    code: str
    reason: str
    at: float
    """When the address bounced."""
    until: float
    email_id: str

    def explain(self) -> str:
        """The reason a refused SendEmail gives: what bounced, when, and until when."""
        reason = f" ({self.reason})" if self.reason else ""
        return (
            f"{self.address} is suppressed: an e-mail to it bounced on {iso(self.at)} with "
            f"{self.code}{reason}; suppressed until {iso(self.until)} unless removed"
        )

    @classmethod
    def from_json(cls, text: str) -> Suppression:
        data = json.loads(text)
        return cls(
            owner=str(data["owner"]),
            address=str(data["address"]),
            code=str(data["code"]),
            reason=str(data.get("reason", "")),
            at=float(data["at"]),
            until=float(data["until"]),
            email_id=str(data.get("email_id", "")),
        )


class SuppressedRecipient(Exception):
    """Raised by :meth:`mailgate.status.StatusStore.create`: the e-mail's address at
    ``index`` (of those it was given) is suppressed for its owner, so nothing was written."""

    def __init__(self, index: int, suppression: Suppression) -> None:
        super().__init__(suppression.explain())
        self.index = index
        self.suppression = suppression


class Suppressions:
    """Reads and removes suppressions (the bounce recorder writes them)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def find(self, owner: str, addresses: Sequence[str]) -> tuple[int, Suppression] | None:
        """The first of ``addresses`` (header or envelope form) that ``owner`` may not send
        to, with its index; None when none is suppressed. One round trip."""
        if not addresses:
            return None
        keys = [suppression_key(owner, envelope_address(a)) for a in addresses]
        for index, value in enumerate(cast(list[str | None], self.redis.mget(keys))):
            if value is not None:
                return index, Suppression.from_json(value)
        return None

    def all(self, owner: str | None = None) -> Iterator[Suppression]:
        """Every suppression in force (of ``owner`` only, when given): a scan, for operators."""
        match = f"{SUPPRESSION_PREFIX}{owner + ':' if owner else ''}*"
        for key in self.redis.scan_iter(match=match, count=1000):
            value = self.redis.get(key)
            if value is not None:
                yield Suppression.from_json(str(value))

    def remove(self, address: str, owner: str | None = None) -> list[str]:
        """End the suppressions of ``address`` (of ``owner``, else of every account); the
        accounts whose suppression ended."""
        normal = envelope_address(address).lower()
        owners = [owner] if owner else [s.owner for s in self.all() if s.address.lower() == normal]
        return [o for o in owners if self.redis.delete(suppression_key(o, normal))]
