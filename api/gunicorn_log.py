"""gunicorn's logger for the API (``logger_class`` in api.gunicorn_conf): no query string and no
raw control character in any line it writes, in either log format.

The query string of an Ozeki request carries the password, in any spelling the API accepts
(``Pass%77ord``), so masking by name is not enough: gunicorn's own lines (``Invalid request
from ip=...: Invalid HTTP request line: 'GET /api?...'``, ``Error handling request ...``) lose
everything from the ``?`` on, and access-log fields never carry one. Control characters and
line breaks in any field are escaped, so a ``%0a`` in a path cannot forge a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gunicorn.glogging import Logger

from mailgate.logs import escape_controls, redact, strip_query

# Access-log atoms that hold the query string or a whole URL with one.
_WITH_QUERY = ("r", "q", "f", "{raw_uri}e", "{query_string}e", "{referer}i", "{request_uri}e")


def clean(text: str) -> str:
    """One log text without query strings, secrets or raw control characters."""
    return escape_controls(redact(strip_query(text)))


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

    def _clean(self, msg: object, args: tuple[object, ...]) -> str:
        text = str(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):
                text = f"{text} {args!r}"
        return clean(text)

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.error_log.critical(self._clean(msg, args), **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.error_log.error(self._clean(msg, args), **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.error_log.warning(self._clean(msg, args), **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.error_log.info(self._clean(msg, args), **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.error_log.debug(self._clean(msg, args), **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.error_log.exception(self._clean(msg, args), **kwargs)

    def log(self, lvl: Any, msg: object, *args: object, **kwargs: Any) -> None:
        if isinstance(lvl, str):
            lvl = self.LOG_LEVELS.get(lvl.lower(), 20)
        self.error_log.log(lvl, self._clean(msg, args), **kwargs)
