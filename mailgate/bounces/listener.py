"""The SMTP listener for reports (aiosmtpd): the bounce domain's MX, or a relay's forward.

It accepts RCPT only for the bounce address (``MAILGATE_BOUNCE_ADDRESS``, with any ``+tag``),
messages up to ``MAILGATE_BOUNCE_MAX_BYTES`` (552 above), at most ``MAILGATE_BOUNCE_RATE``
messages per client address (451 above), and answers DATA with 250 only once the report is
recorded in Redis (or known to need nothing). While Redis is away, or when the e-mail's 250
is not recorded yet, it answers 451 and the sending MTA tries again later, as MTAs do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from mailgate.bounces.recorder import Recorder
from mailgate.bounces.verp import is_bounce_recipient

log = logging.getLogger(__name__)


class BounceHandler:
    """The aiosmtpd handler: see the module."""

    def __init__(self, recorder: Recorder, bounce_address: str, rate: str) -> None:
        self.recorder = recorder
        self.bounce_address = bounce_address
        self.rate = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if not self.limiter.hit(self.rate, "bounces", peer):
            return "451 4.7.1 Too many reports from your address; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if not is_bounce_recipient(address, self.bounce_address):
            return "550 5.1.1 No such recipient here: this server takes bounce reports only"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        loop = asyncio.get_running_loop()
        try:
            verdict = await loop.run_in_executor(
                None, self.recorder.record, bytes(data), list(envelope.rcpt_tos)
            )
        except RedisError as exc:
            log.warning("could not record a bounce report: %s", type(exc).__name__)
            return "451 4.3.0 Cannot record the report now; try again later"
        except Exception:
            log.exception("unexpected error reading a bounce report")
            return "451 4.3.0 Cannot read the report now; try again later"
        if not verdict.done:
            return "451 4.3.0 The e-mail is not recorded as sent yet; try again later"
        return f"250 2.0.0 Ok: {verdict.value}"


def controller(recorder: Recorder, host: str, port: int, max_bytes: int, rate: str) -> Any:
    """The aiosmtpd Controller of the listener (not started). aiosmtpd comes with the
    ``bounces`` extra: imported here, so nothing else needs it."""
    from aiosmtpd.controller import Controller

    handler = BounceHandler(recorder, recorder.settings.bounce_address, rate)
    return Controller(
        handler,
        hostname=host,
        port=port,
        data_size_limit=max_bytes,
        decode_data=False,
        ident="mailgate bounces",
    )
