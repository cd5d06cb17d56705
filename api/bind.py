"""Where the API listens: ``$PORT`` when a platform hands one over, else ``MAILGATE_PORT``."""

from __future__ import annotations

from collections.abc import Mapping

from mailgate.config import Settings
from mailgate.errors import ConfigError


def bind_address(settings: Settings, environ: Mapping[str, str]) -> str:
    """``host:port`` for gunicorn; honcho, foreman and Heroku-style platforms set ``PORT``."""
    raw = environ.get("PORT", "").strip()
    if not raw:
        return f"{settings.host}:{settings.port}"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError("PORT", f"must be a port from 1 to 65535, got {raw!r}")
    return f"{settings.host}:{int(raw)}"
