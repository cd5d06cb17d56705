"""``mailgate web``: the API served by granian's WSGI interface (a Rust HTTP server; why
granian: docs/operations.md, "API server").

- settings checked before anything starts (a bad variable stops start-up with one line);
- prometheus-client's multiprocess folder: a fresh one per server start, removed on exit;
- no query string in any log line (granian's access log is off; ``--access-log`` turns on
  a line with the path only, each field escaped so a path cannot forge others);
- bounded request heads: the request line and headers together may be
  ``MAILGATE_MAX_REQUEST_BYTES`` plus :data:`HEAD_ALLOWANCE`, so an Ozeki GET carrying its whole
  message in the URL reaches mailgate's own check (Code 413 in XML) while anything far larger
  is refused by the server before it is buffered. granian answers what it refuses itself (a
  URL over 64 KiB, a head over that size, over 100 header fields) with a bare HTTP status: a
  front proxy turns those into Code 413 (docs/operations.md, "Front proxy");
- a slow client must send its whole request head within :data:`HEADER_READ_TIMEOUT_MS`
  (slowloris);
- request threads per process: ``--threads`` or granian's own default, stated here
  (:func:`default_threads`) and handed to the app (``MAILGATE_WEB_THREADS``), whose Redis
  pools hold one connection per thread;
- a worker process that dies is started again; on SIGTERM requests in flight get
  :data:`GRACEFUL_SECONDS` to finish.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailgate.config import Settings
from mailgate.errors import ConfigError
from mailgate.logs import TEXT_FORMAT

HEADER_READ_TIMEOUT_MS = 5_000
"""The whole request head must arrive within this time, or the connection is closed."""
HEAD_ALLOWANCE = 128 * 1024
"""Room for the request line's method and path and for the headers, beyond the query string."""
GRACEFUL_SECONDS = 20
ACCESS_LOG_FORMAT = '%(addr)s "%(method)s %(path)s" %(status)d %(dt_ms).1fms'
"""The path only: the query string can carry the password, so it is never logged. Every
field is escaped (mailgate.logs.QuotedFieldsFilter): a ``"`` in the path shows as ``\\"``."""
BACKLOG = 1024
"""Connections waiting to be accepted (granian's default, stated: the threads derive from it)."""
APP = "api:create_app"
"""Named, not imported: the core imports neither api nor worker; granian's workers load it."""


@dataclass(frozen=True)
class ServerOptions:
    """How ``mailgate web`` serves the API."""

    host: str
    port: int
    workers: int
    max_head_bytes: int
    threads: int
    access_log: bool = False


def default_threads(workers: int) -> int:
    """granian's default request threads per process for WSGI: half its per-process share of
    :data:`BACKLOG` (256 each with 2 processes)."""
    return max(1, BACKLOG // max(1, workers) // 2)


def request_threads(settings: Settings) -> int:
    """The request threads of an API process: ``MAILGATE_WEB_THREADS``, which ``mailgate web``
    sets for its processes, else what granian would run with one process per core."""
    return settings.web_threads or default_threads(settings.web_workers or os.cpu_count() or 1)


def listen_port(settings: Settings, environ: Mapping[str, str]) -> int:
    """``$PORT`` when a process manager sets it (honcho, Heroku-style platforms), else
    ``MAILGATE_PORT``."""
    raw = environ.get("PORT", "").strip()
    if not raw:
        return settings.port
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError("PORT", f"must be a port from 1 to 65535, got {raw!r}")
    return int(raw)


def options(
    settings: Settings,
    environ: Mapping[str, str],
    workers: int | None = None,
    threads: int | None = None,
    access_log: bool = False,
) -> ServerOptions:
    """The server's options from the settings, the environment and the command line."""
    workers = workers or os.cpu_count() or 1
    return ServerOptions(
        host=settings.host,
        port=listen_port(settings, environ),
        workers=workers,
        max_head_bytes=settings.max_request_bytes + HEAD_ALLOWANCE,
        threads=threads or default_threads(workers),
        access_log=access_log,
    )


THREADS_WARNING = "Configuration allows spawning up to"
"""The start of granian's warning about its default thread pool, which mailgate keeps on
purpose (measured: see docs/operations.md, "API server"); it is not printed on every start."""


class KnownWarnings(logging.Filter):
    """Drops granian's warning about the thread pool that mailgate chose to keep."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(THREADS_WARNING)


def log_config(json_lines: bool) -> dict[str, Any]:
    """granian's own log lines (start, stop, worker deaths) in mailgate's format."""
    formatter: dict[str, str] = (
        {"()": "mailgate.logs.JsonFormatter", "process": "web"}
        if json_lines
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mailgate": formatter},
        "filters": {
            "redact": {"()": "mailgate.logs.RedactingFilter"},
            "quoted": {"()": "mailgate.logs.QuotedFieldsFilter"},
            "known": {"()": "mailgate.cli.server.KnownWarnings"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "mailgate",
                "filters": ["known", "redact"],
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "granian.access": {
                "handlers": ["console"],
                "filters": ["quoted"],
                "level": "INFO",
                "propagate": False,
            },
        },
    }


def build_server(opts: ServerOptions, json_lines: bool) -> Any:
    """The granian server for the API (not started)."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    return Server(
        APP,
        address=opts.host,
        port=opts.port,
        interface=Interfaces.WSGI,
        factory=True,
        workers=opts.workers,
        backlog=BACKLOG,
        blocking_threads=opts.threads,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEADER_READ_TIMEOUT_MS,
            keep_alive=True,
            max_buffer_size=opts.max_head_bytes,
        ),
        log_dictconfig=log_config(json_lines),
        log_access=opts.access_log,
        log_access_format=ACCESS_LOG_FORMAT if opts.access_log else None,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_SECONDS,
    )


def serve(opts: ServerOptions, json_lines: bool) -> None:
    """Run the API until SIGINT or SIGTERM, with a fresh metrics folder for this run."""
    # The app's processes size their Redis pools to the threads that share them.
    os.environ["MAILGATE_WEB_THREADS"] = str(opts.threads)
    own_metrics = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own_metrics:
        # prometheus-client's multiprocess mode: each worker writes its metrics to files in
        # this folder and /metrics adds them up. Fresh per start, so counters begin at zero.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mailgate-metrics-")
    try:
        build_server(opts, json_lines).serve()
    finally:
        if own_metrics:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
        sys.stderr.flush()
