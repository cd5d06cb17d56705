"""gunicorn settings for the API (``gunicorn -c python:api.gunicorn_conf 'api:create_app()'``).

Settings are checked here first, so a bad variable stops start-up with one line.
"""

import sys

from mailgate.config import Settings
from mailgate.errors import ConfigError

try:
    _settings = Settings.from_env()
except ConfigError as _exc:
    sys.exit(f"mailgate: {_exc}")

bind = f"{_settings.host}:{_settings.port}"
workers = 2
worker_class = "gthread"
threads = 8
# Long Ozeki GET requests carry the whole message in the URL; mailgate applies its own limit
# (MAILGATE_MAX_REQUEST_BYTES) and answers Code 413 rather than gunicorn's HTML 400.
limit_request_line = 0
limit_request_field_size = 65536
accesslog = "-"
# The path only (%(U)s), never the query string: it holds the Password parameter.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
graceful_timeout = 20
