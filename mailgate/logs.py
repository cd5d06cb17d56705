"""Logging set-up shared by every process, with a last-line filter against leaked secrets.

mailgate never logs a password, a body or a query string on purpose; the filter masks
``password=...`` and the local part of e-mail addresses in any record (an SMTP reply that names
the recipient, a library's message) as a second line of defence.
"""

from __future__ import annotations

import logging
import re

_SECRET = re.compile(r"(?i)(password[\"']?\s*[=:]\s*[\"']?)([^&\s\"',;]+)")
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:@]+@(?=[A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def redact(text: str) -> str:
    """Mask every ``password=`` / ``password:`` value and the local part of every address."""
    return _ADDRESS.sub("***@", _SECRET.sub(r"\1***", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record's final message with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Install the redacting filter on the root handlers (once)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
