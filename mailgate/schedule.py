"""Moments given as text: ``SendAt`` (when a scheduled e-mail is due, checked against what the
status store can keep), and the window of a listing (``--since``, ``?since=``)."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

from mailgate.config import Settings
from mailgate.errors import InvalidParameter

PAST_GRACE_SECONDS = 300.0
"""A SendAt this far in the past is taken as "now" (clock skew between PBX and gateway)."""

_SECONDS = re.compile(r"\d{1,12}(\.\d{1,6})?")
_AGE = re.compile(r"(\d{1,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def parse_moment(text: str, now: float | None = None) -> float:
    """The Unix time ``text`` names: an ISO 8601 time (UTC when it has no offset) or an age
    before now such as ``90s``, ``30m``, ``2h``, ``7d``. ValueError says what is accepted."""
    now = time.time() if now is None else now
    text = text.strip()
    age = _AGE.fullmatch(text)
    if age:
        return now - int(age.group(1)) * _UNITS[age.group(2)]
    try:
        moment = datetime.fromisoformat(text) if len(text) <= 64 else None
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(f"{text[:64]!r} is neither an ISO 8601 time nor an age like 2h or 30m")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
