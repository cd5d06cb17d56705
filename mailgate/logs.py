"""Logging shared by every process: one JSON line per event, secrets masked.

mailgate never logs a password, a body or a query string on purpose; the redacting filter
masks ``password=...`` and the local part of e-mail addresses in any record (an SMTP reply
that names the recipient, a library's message) as a second line of defence. Each line carries
the EmailId it is about (from ``extra={"email_id": ...}`` or the first UUID in the message,
which also catches Celery's ``Task mailgate.deliver[<EmailId>]`` lines).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from mailgate.config import Settings
from mailgate.options import option

# Read on every record (cheaply, from the environment alone): the format each process was given.
LOG_FORMAT = option(Settings, "log_format")


def _spelled_any_way(word: str) -> str:
    """A pattern for ``word`` with any of its letters percent-encoded (``Pass%77ord``)."""
    return "".join(f"(?:{re.escape(c)}|%{ord(c.lower()):02x}|%{ord(c.upper()):02x})" for c in word)


_SECRET = re.compile(
    rf"(?i)({_spelled_any_way('password')}[\"']?\s*(?:[=:]|%3d)\s*[\"']?)([^&\s\"',;]+)"
)
# Unicode's control characters (Cc) and line/paragraph separators: each could end a log line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:@]+@(?=[A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def redact(text: str) -> str:
    """Mask every ``password=`` / ``password:`` value and the local part of every address."""
    # Cheap pre-checks first: most lines hold no "=", ":" or "%" (a secret needs one after its
    # name) and no "@" (an address needs one), and the patterns cost more than the scans.
    if "=" in text or ":" in text or "%" in text:
        text = _SECRET.sub(r"\1***", text)
    if "@" in text:
        text = _ADDRESS.sub("***@", text)
    return text


def escape_controls(text: str) -> str:
    """Control characters and line breaks as visible escapes (``\\n``, ``\\x01``, ``\\u2028``),
    so no logged value can start a forged line of its own."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def quoted_field(text: str) -> str:
    """``text`` fit to stand between double quotes in a log line: ``\\`` and ``"`` behind a
    backslash, control characters as escapes, so it cannot end its field early and forge the
    fields after it (``/x" 500 0.1ms "GET /y`` in a path)."""
    return escape_controls(text.replace("\\", "\\\\").replace('"', '\\"'))


class QuotedFieldsFilter(logging.Filter):
    """For a record formatted from a mapping (granian's access line): every text value made a
    :func:`quoted_field`, whichever of them the line's format puts between quotes."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Once per record: logging.config adds a logger's filters again on each dictConfig call.
        if isinstance(record.args, Mapping) and not getattr(record, "fields_quoted", False):
            record.fields_quoted = True
            record.args = {
                key: quoted_field(value) if isinstance(value, str) else value
                for key, value in record.args.items()
            }
        return True


class RedactingFilter(logging.Filter):
    """Rewrites a record's final message with secrets masked (and, in text mode, escaped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if not json_logs():
            cleaned = escape_controls(cleaned)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        record.redacted = cleaned  # JsonFormatter need not redact this text again
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, process, logger, message, email_id, and exc if any.

    ``process`` names the mailgate process that wrote the line (``web``, ``worker``,
    ``flower``, a supervised command's name), so the lines of several processes that share one
    log stream can be told apart.
    """

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message != getattr(record, "redacted", None):  # not the text RedactingFilter left
            message = redact(message)
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
        }
        if self.process:
            entry["process"] = self.process
        entry["logger"] = record.name
        entry["message"] = message
        email_id = getattr(record, "email_id", None)
        if email_id is None:
            found = _UUID.search(message)
            email_id = found.group(0) if found else None
        if email_id:
            entry["email_id"] = email_id
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def json_logs() -> bool:
    """JSON unless MAILGATE_LOG_FORMAT=text (handier when reading a terminal)."""
    return bool(LOG_FORMAT.read(os.environ) == "json")


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, process: str | None = None) -> None:
    """Give every root handler the redacting filter and, by default, the JSON format with
    ``process`` as the process's name."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    for handler in root.handlers:
        if json_logs():
            handler.setFormatter(JsonFormatter(process))
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
