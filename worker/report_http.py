"""A delivery report on the wire: the form body, its HMAC signature, the POST, what an answer means.

The body is ``application/x-www-form-urlencoded``, like Ozeki's SMS delivery reports. The
signature, when ``MAILGATE_CALLBACK_SECRET`` is set::

    X-Mailgate-Timestamp: <unix seconds>
    X-Mailgate-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

where ``body`` is the exact request body. Each attempt is signed afresh with its own timestamp
(the body stays the same), so a receiver may refuse timestamps older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import IO, Protocol
from urllib.parse import urlencode, urlsplit

from mailgate import __version__
from mailgate.status import Record, ReportStatus, Status

NOTIFICATION_NAME = "EmailDeliveryReport"
TIMEOUT_SECONDS = 10.0
USER_AGENT = f"mailgate/{__version__}"


@dataclass(frozen=True)
class Answer:
    """The endpoint's HTTP status, or None when none came (time-out, refused, reset)."""

    status: int | None
    error: str = ""


class Poster(Protocol):
    """Sends one POST; never raises for network trouble, answers an :class:`Answer`."""

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Answer: ...


def classify(status: int | None) -> ReportStatus:
    """What an HTTP answer makes of the report: 2xx Delivered; 408, 429, 5xx and no answer
    Retrying (worth another try); anything else Failed."""
    if status is None or status in (408, 429) or 500 <= status < 600:
        return ReportStatus.RETRYING
    if 200 <= status < 300:
        return ReportStatus.DELIVERED
    return ReportStatus.FAILED  # other 4xx, and 3xx: redirects are not followed


def form_body(record: Record) -> bytes:
    """The report's form body for a final record (Sent, Failed, Bounced...), from the record's
    own fields."""
    shown = dict(record.fields())
    sent = record.status is Status.SENT
    # mark_failed leaves no failed_at; updated_at dates it, as reports never move updated_at.
    at = shown["SentAt"] if sent and shown["SentAt"] else shown["UpdatedAt"]
    reason = "" if sent else shown["LastError"] or ""
    if record.status in (Status.BOUNCED, Status.PARTLY_BOUNCED):
        at, reason = shown["BouncedAt"] or at, shown["BounceReason"] or ""
    fields = [
        ("NotificationName", NOTIFICATION_NAME),
        ("EmailId", shown["EmailId"]),
        ("Status", shown["Status"]),
        ("Attempts", shown["Attempts"]),
        ("Time", at),
        ("Reason", reason),
        ("SmtpResponse", shown["SmtpResponse"] or ""),
    ]
    if shown["BounceCode"]:  # a bounce report: its code too (absent from the first report)
        fields.append(("BounceCode", shown["BounceCode"]))
    return urlencode(fields).encode("ascii")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``timestamp + "." + body`` keyed with ``secret``."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def report_headers(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The request headers; no signature header when no secret is configured."""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": USER_AGENT,
        "X-Mailgate-Timestamp": str(timestamp),
    }
    if secret:
        headers["X-Mailgate-Signature"] = sign(secret, timestamp, body)
    return headers


def safe_url(url: str) -> str:
    """The URL for a log line: no credentials, query string or fragment (they may be tokens)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # not .port: it raises on a port out of range
    return f"{parts.scheme}://{host}{parts.path}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """An allowed host must not bounce the report to one that is not (an internal address)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None  # urllib then raises HTTPError with the 3xx code


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """POST with urllib, no redirects followed; network errors become an :class:`Answer`."""
    opener = urllib.request.build_opener(_NoRedirects())
    # S310: the URL passed check_callback_url (http or https only, on an allowed host).
    request = urllib.request.Request(  # noqa: S310
        url, data=body, headers=dict(headers), method="POST"
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            # The body is not read: a slow endpoint cannot hold the worker past the timeout.
            return Answer(int(response.status))
    except urllib.error.HTTPError as exc:
        exc.close()
        return Answer(exc.code, f"HTTP {exc.code}")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Answer(None, f"no answer: {reason or type(exc).__name__}")
