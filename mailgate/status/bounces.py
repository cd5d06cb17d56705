"""What a bounce report does to a status record: pure logic, applied by
:meth:`mailgate.status.StatusStore.record_bounces` in one transaction.

Each reported recipient is matched to one of the e-mail's envelope recipients (by the report's
final or original recipient address, or, when the e-mail had a single accepted recipient, to
that one: relays rewrite addresses). ``Action: failed`` makes it bounced; ``Action: delayed``
is recorded but changes nothing final, and never overwrites a failure. Then the e-mail is
``Bounced`` when every recipient the relay accepted has bounced, ``PartlyBounced`` when some
have, and stays as it was otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mailgate.status.records import Bounce, Record, Status

ADDRESS_CODES = re.compile(r"5\.1\.\d+|5\.2\.1|5\.4\.4")
"""Enhanced status codes that say the address itself is no good (RFC 3463): bad mailbox or
domain (5.1.x: 5.1.1 user unknown, 5.1.2 bad domain, 5.1.10 null MX), mailbox disabled
(5.2.1), no route to the domain (5.4.4, Postfix's "Host or domain name not found"). A full
mailbox (5.2.2), a policy refusal (5.7.x) or a message too large (5.3.4) is not."""
_USER_UNKNOWN = re.compile(
    r"user unknown|unknown (user|recipient)|not recognized|no such (user|mailbox|recipient)|"
    r"does not exist|recipient not found|address rejected|invalid (recipient|mailbox)|no mailbox|"
    r"mailbox unavailable|account .{0,40}(disabled|does not exist)|domain not found",
    re.IGNORECASE,
)
"""The words of a user-unknown failure, for reports without a specific code (5.0.0)."""


def suppresses(bounce: Bounce) -> bool:
    """True for a hard bounce that says the address does not work ("user unknown" class)."""
    if bounce.kind != "hard":
        return False
    if ADDRESS_CODES.fullmatch(bounce.code):
        return True
    return bounce.code == "5.0.0" and bool(_USER_UNKNOWN.search(bounce.reason))


@dataclass(frozen=True)
class Reported:
    """One recipient of a report: the addresses it names it by (final, original), and what
    the report says."""

    addresses: tuple[str, ...]
    bounce: Bounce


@dataclass
class Settled:
    """The record after a report: its new ``bounces`` map and status, and what changed."""

    bounces: dict[str, dict[str, Any]]
    status: Status
    written: list[tuple[str, Bounce]] = field(default_factory=list)
    """(envelope address, bounce) for each entry new or changed by this report."""
    unmatched: list[str] = field(default_factory=list)
    """Addresses the report names that are none of the e-mail's recipients."""

    @property
    def latest(self) -> tuple[str, Bounce] | None:
        """The last failure this report wrote (for BounceCode, BounceReason, BouncedAt)."""
        failed = [item for item in self.written if item[1].failed]
        return failed[-1] if failed else None


def settle(record: Record, reported: Sequence[Reported]) -> Settled:
    """Apply ``reported`` to ``record`` (see the module); the record itself is not changed."""
    recipients = record.recipients
    by_address = {r.address.lower(): r.address for r in recipients}
    accepted = [r.address for r in recipients if r.accepted is not False]
    current = dict(_entries(record))
    settled = Settled(bounces={k: v.to_dict() for k, v in current.items()}, status=record.status)
    for item in reported:
        address = next(
            (by_address[a.lower()] for a in item.addresses if a.lower() in by_address), None
        )
        if address is None and len(accepted) == 1:
            address = accepted[0]  # the relay rewrote it (an alias, a forward): still ours
        if address is None and not recipients and item.addresses:
            address = item.addresses[0]  # nothing known to match against: keep it as named
        if address is None:
            settled.unmatched.append(item.addresses[0] if item.addresses else "")
            continue
        before = current.get(address.lower())
        if before is not None and before.failed and not item.bounce.failed:
            continue  # a late "delayed" never undoes a failure
        if before is not None and (before.action, before.code) == (
            item.bounce.action,
            item.bounce.code,
        ):
            continue  # the same report again (a retried delivery of it): nothing new
        current[address.lower()] = item.bounce
        settled.bounces[address.lower()] = item.bounce.to_dict()
        settled.written.append((address, item.bounce))
    failed = {a for a, b in current.items() if b.failed}
    if not failed:
        return settled
    if not recipients:
        settled.status = Status.PARTLY_BOUNCED  # who else got it is not known
    elif all(a.lower() in failed for a in accepted):
        settled.status = Status.BOUNCED
    else:
        settled.status = Status.PARTLY_BOUNCED
    return settled


def _entries(record: Record) -> list[tuple[str, Bounce]]:
    return [(a, Bounce.from_dict(e)) for a, e in json.loads(record.bounces or "{}").items()]
