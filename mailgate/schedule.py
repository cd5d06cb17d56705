"""``SendAt``: when a scheduled e-mail is due, checked against what the status store can keep."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime

from mailgate.config import Settings
from mailgate.errors import InvalidParameter

PAST_GRACE_SECONDS = 300.0
"""A SendAt this far in the past is taken as "now" (clock skew between PBX and gateway)."""

_SECONDS = re.compile(r"\d{1,12}(\.\d{1,6})?")


def max_ahead(settings: Settings) -> float:
    """How far ahead an e-mail may be scheduled: its record (status TTL) must outlive the
    retry deadline that starts at SendAt, with an hour to spare (as config.py demands)."""
    return max(0.0, settings.status_ttl_seconds - settings.retry_deadline_seconds - 3600)


def parse_send_at(raw: str | float, settings: Settings, now: float | None = None) -> float | None:
    """The Unix time ``raw`` names (ISO 8601 with an offset, or seconds from now); None for "".

    Raises 302 naming SendAt for anything else, a time long past, or one too far ahead.
    """
    now = time.time() if now is None else now
    if isinstance(raw, int | float):
        if isinstance(raw, bool) or not math.isfinite(raw) or raw < 0:
            raise _invalid("seconds from now must be a number of at least 0")
        when = now + raw
    else:
        text = raw.strip()
        if not text:
            return None
        when = now + float(text) if _SECONDS.fullmatch(text) else _iso(text)
    if when < now - PAST_GRACE_SECONDS:
        raise _invalid("lies in the past")
    limit = max_ahead(settings)
    if when > now + limit:
        raise _invalid(f"more than {int(limit)} seconds ahead (the status record's lifetime)")
    return when


def _iso(text: str) -> float:
    if len(text) > 64:
        raise _invalid("not an ISO 8601 time or a number of seconds")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid("not an ISO 8601 time or a number of seconds") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _invalid("an ISO 8601 time needs a UTC offset (Z or +hh:mm)")
    return moment.timestamp()


def _invalid(reason: str) -> InvalidParameter:
    return InvalidParameter("SendAt", reason, "SendEmail")
