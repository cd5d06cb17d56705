"""gunicorn settings for the API (``gunicorn -c python:api.gunicorn_conf 'api:create_app()'``).

Settings are checked here first, so a bad variable stops start-up with one line.
"""

import os
import sys
import tempfile

from api.bind import bind_address
from mailgate.config import Settings
from mailgate.errors import ConfigError

try:
    _settings = Settings.from_env()
    bind = bind_address(_settings, os.environ)
except ConfigError as _exc:
    sys.exit(f"mailgate: {_exc}")

workers = 2
# gthread, except that the event loop reads each request before a thread takes it: slow
# clients (slowloris) cost a socket, never a thread (see api/gunicorn_worker.py).
worker_class = "api.gunicorn_worker.BufferingThreadWorker"
threads = 8
worker_connections = 500
keepalive = 5
# No query string (it holds the password) and no raw control character in any line gunicorn
# writes, in either log format (see api/gunicorn_log.py).
logger_class = "api.gunicorn_log.SafeLogger"
# Long Ozeki GET requests carry the whole message in the URL; mailgate applies its own limit
# (MAILGATE_MAX_REQUEST_BYTES) and answers Code 413 rather than gunicorn's HTML 400.
limit_request_line = 0
limit_request_field_size = 65536
accesslog = "-"
if _settings.log_format == "json":
    # gunicorn's own lines as JSON too; the access line is still the format below.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "mailgate.logs.JsonFormatter", "process": "web"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json"},
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }
# The path only (%(U)s), never the query string: it holds the Password parameter.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
graceful_timeout = 20
# gunicorn 23+ opens a control socket at one fixed path per user; several mailgate servers on a
# host (tests, benchmarks) would fight over it, and mailgate does not use it.
control_socket_disable = True

# prometheus-client's multiprocess mode: each gunicorn worker writes its metrics to files in
# this folder and /metrics adds them up. A fresh folder per server start, so counters begin at
# zero and dead workers' files do not pile up.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mailgate-metrics-")


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges (counters and histograms are kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined,no-untyped-call]
