"""Recording one report: read it, find its e-mail, write each recipient's bounce.

Both ways in (the SMTP listener, the IMAP poller) hand every message here and act on the
:class:`Verdict`: only ``recorded``, ``ignored``, ``not-a-bounce`` and ``unknown`` are done
with; ``early`` (and a Redis error, which is raised) mean "keep it and try again later".
A report for an unknown or expired EmailId is logged and counted, never an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from mailgate.bounces.report import read
from mailgate.config import Settings
from mailgate.status import StatusStore

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    """What became of one message (also the ``bounce_report:<verdict>`` counter's name)."""

    RECORDED = "recorded"
    """Its bounces are in the e-mail's record (or were already: a report delivered twice)."""
    IGNORED = "ignored"
    """About an e-mail that was never sent (Failed, Cancelled): nothing to record."""
    NOT_A_BOUNCE = "not-a-bounce"
    """An auto-reply, a success notice, a person's mail."""
    UNKNOWN = "unknown"
    """A bounce that names no e-mail mailgate still knows (none at all, or expired)."""
    EARLY = "early"
    """About an e-mail whose 250 the worker has not recorded yet: try again later."""

    @property
    def done(self) -> bool:
        """Nothing more will come of this message: the listener answers 250, the poller moves
        it on (``recorded``, ``ignored``) or leaves it alone for good."""
        return self is not Verdict.EARLY


@dataclass
class Recorder:
    """Reads reports and records them in the status store."""

    store: StatusStore
    settings: Settings
    clock: Callable[[], float] = field(default=time.time)

    def record(self, data: bytes, envelope_to: Sequence[str] = ()) -> Verdict:
        """Record the report in ``data``; ``envelope_to``: who it was sent to (SMTP RCPT).
        Redis errors pass (the message must then be kept and offered again)."""
        verdict = self._record(data, envelope_to)
        self.store.count(f"bounce_report:{verdict.value}")
        return verdict

    def _record(self, data: bytes, envelope_to: Sequence[str]) -> Verdict:
        s = self.settings
        report = read(data, s.message_id_host, s.bounce_address, envelope_to, now=self.clock())
        if report is None:
            log.info("not a bounce report (an auto-reply, a success notice or mail): ignored")
            return Verdict.NOT_A_BOUNCE
        suppression = s.suppression_seconds if s.suppression else 0
        early = False
        for email_id in report.email_ids:
            outcome, settled = self.store.record_bounces(
                email_id, list(report.recipients), self.clock(), suppression
            )
            if outcome == "missing":
                continue
            if outcome == "early":
                early = True
                continue
            if outcome == "unsent" or settled is None:
                log.info("bounce report for %s, which was never sent: ignored", email_id)
                return Verdict.IGNORED
            codes = ", ".join(f"{b.action} {b.code}" for _, b in settled.written) or "known"
            log.info("bounce report for %s (%s): %s", email_id, codes, settled.status.value)
            if settled.unmatched:
                log.warning(
                    "bounce report for %s names %d address(es) it was not sent to",
                    email_id,
                    len(settled.unmatched),
                )
            return Verdict.RECORDED
        if early:
            log.info("bounce report for %s before its 250 was recorded: later", report.email_ids)
            return Verdict.EARLY
        named = ", ".join(report.email_ids) or "no EmailId"
        log.warning("bounce report for an unknown or expired e-mail (%s): ignored", named)
        return Verdict.UNKNOWN
