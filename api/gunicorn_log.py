"""gunicorn's logger for the API (``logger_class`` in api.gunicorn_conf): no query string and no
raw control character in any line it writes, in either log format.

The query string of an Ozeki request carries the password, in any spelling the API accepts
(``Pass%77ord``), so masking by name is not enough: gunicorn's own lines (``Invalid request
from ip=...: Invalid HTTP request line: 'GET /api?...'``, ``Error handling request ...``) lose
everything from the ``?`` on, and access-log fields never carry one. Control characters and
line breaks in any field are escaped, so a ``%0a`` in a path cannot forge a line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gunicorn.glogging import Logger

from mailgate.logs import escape_controls, redact, strip_query

# Access-log atoms that hold the query string or a whole URL with one.
_WITH_QUERY = ("r", "q", "f", "{raw_uri}e", "{query_string}e", "{referer}i", "{request_uri}e")


def clean(text: str) -> str:
    """One log text without query strings, secrets or raw control characters."""
    return escape_controls(redact(strip_query(text)))


class _CleanRecord(logging.Filter):
    """Formats a record's message with its arguments, then cleans it (a message whose
    arguments do not fit keeps both, so nothing is lost)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if record.args:
            try:
                text = text % record.args
            except (TypeError, ValueError):
                text = f"{text} {record.args!r}"
        record.msg, record.args = clean(text), None
        return True


class SafeLogger(Logger):  # type: ignore[misc]
    """gunicorn's Logger with every message and access-log field cleaned."""

    def atoms(self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: Any) -> Any:
        atoms = super().atoms(resp, req, environ, request_time)
        for key in _WITH_QUERY:
            if key in atoms:
                atoms[key] = "-"
        atoms["r"] = "{} {} {}".format(
            environ.get("REQUEST_METHOD", "-"),
            environ.get("PATH_INFO", "-"),
            environ.get("SERVER_PROTOCOL", "-"),
        )
        return {
            key: clean(value) if isinstance(value, str) else value for key, value in atoms.items()
        }

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        # Every line of the error log (critical to debug, exception, log) passes this filter,
        # once: gunicorn's error logger is one logging.Logger for all instances.
        if not any(isinstance(f, _CleanRecord) for f in self.error_log.filters):
            self.error_log.addFilter(_CleanRecord())
