"""Settings, read once from the environment (and a ``.env`` file beneath it).

Every tunable has its default here. A bad value raises :class:`ConfigError` naming the
variable; the entry points turn that into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from dotenv import dotenv_values
from limits import parse as parse_rate

from mailgate.errors import ConfigError
from mailgate.redisconn import SentinelTarget, is_redis, is_sentinel

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Redis outside ``mailgate run`` (which starts an embedded one when this is unset)."""

DEFAULT_SINK_PORT = 2525
"""Port of the local SMTP sink that ``mailgate run`` starts when no SMTP server is set."""

DEFAULT_SMTP_URL = f"smtp://127.0.0.1:{DEFAULT_SINK_PORT}"
"""SMTP outside ``mailgate run``: the local sink's address."""


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how the worker delivers: parsed from ``MAILGATE_SMTP_URL``."""

    host: str
    port: int
    ssl: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify: bool = True

    @classmethod
    def parse(cls, url: str, variable: str = "MAILGATE_SMTP_URL") -> SmtpTarget:
        """Read ``smtp://[user:pass@]host:port[?starttls=true]`` or ``smtps://...``."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ConfigError(variable, "must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ConfigError(variable, "has no host")
        try:
            port = parts.port or (465 if parts.scheme == "smtps" else 25)
        except ValueError as exc:
            raise ConfigError(variable, "has an invalid port") from exc
        query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"starttls", "verify"}
        if unknown:
            raise ConfigError(variable, f"unknown option {sorted(unknown)[0]!r}")
        flags = {}
        for name in ("starttls", "verify"):
            value = query.get(name, "true" if name == "verify" else "false")
            if value not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(variable, f"option {name} must be true or false")
            flags[name] = value in ("true", "1", "yes")
        if parts.scheme == "smtps" and flags["starttls"]:
            raise ConfigError(variable, "smtps:// and starttls=true exclude each other")
        return cls(
            host=parts.hostname,
            port=port,
            ssl=parts.scheme == "smtps",
            starttls=flags["starttls"],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            verify=flags["verify"],
        )


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with its default. Built by :meth:`from_env`."""

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = ""
    """The Celery broker: MAILGATE_BROKER_URL (amqp:// for RabbitMQ), else the Redis URL."""
    smtp: SmtpTarget = field(default_factory=lambda: SmtpTarget.parse(DEFAULT_SMTP_URL))
    users_file: Path = Path("var/users.toml")
    attachment_roots: tuple[Path, ...] = ()
    spool_dir: Path = Path("var/spool")
    """Where uploaded attachments wait for delivery (private, 0700); next to the users file."""
    default_sender: str = "mailgate@localhost"
    host: str = "127.0.0.1"
    port: int = 9509
    flower_basic_auth: str | None = field(default=None, repr=False)
    retry_base_seconds: float = 30.0
    """First retry delay; each later one doubles, with jitter, up to retry_max_delay_seconds."""
    retry_max_delay_seconds: float = 3600.0
    max_attempts: int = 10
    retry_deadline_seconds: float = 86400.0
    """After this long since acceptance an e-mail still not sent ends Failed ("expired")."""
    redelivery_seconds: float = 300.0
    """An e-mail held by a dead worker is published again within this time."""
    status_ttl_seconds: int = 7 * 86400
    """How long a status record lives after its last change."""
    smtp_timeout_seconds: float = 30.0
    max_recipients: int = 50
    max_message_bytes: int = 1024 * 1024
    max_request_bytes: int = 2 * 1024 * 1024
    max_attachments: int = 20
    max_attachment_bytes: int = 25 * 1024 * 1024
    """Total size of all attachments of one e-mail."""
    max_email_bytes: int = 25 * 1024 * 1024
    """The whole e-mail as sent (attachments in base64): what a relay's size limit measures."""
    auth_cache_seconds: float = 60.0
    worker_concurrency: int = 32
    """E-mails (SMTP sessions) in flight per worker process."""
    worker_processes: int = 1
    """Worker processes ``mailgate worker`` starts (from the environment: one per core)."""
    message_id_host: str = "mailgate.local"
    """The right-hand side of every Message-ID: ``<EmailId@message_id_host>``."""
    callback_allowed: tuple[str, ...] = ()
    """Host globs delivery reports may be sent to (SSRF guard); empty: no callbacks."""
    callback_secret: str = field(default="", repr=False)
    """Key of the HMAC-SHA256 signature on every delivery report."""
    idempotency_seconds: int = 86400
    """How long an IdempotencyKey keeps answering with its first EmailId."""
    trusted_proxies: tuple[str, ...] = ()
    """Networks whose X-Forwarded-For is believed; anyone else's is ignored."""
    login_failures_per_client: str = "5/minute"
    """Failed logins one address may make for one user name before Code 429."""
    login_failures_per_address: str = "20/minute"
    """Failed logins one address may make across all user names."""
    login_failures_per_user: str = "100/hour"
    """Failed logins for one user name from anywhere (a distributed guess)."""
    redis_appendfsync: str = "everysec"
    """The embedded Redis's AOF fsync policy: everysec (default) or always."""
    redis_min_replicas: int = 0
    """Replicas that must hold an accepted e-mail (Redis WAIT) before the API answers 200."""
    broker_quorum_queues: bool = False
    """On RabbitMQ, declare the mailgate queue as a quorum queue (replicated, durable)."""
    recipient_domains: tuple[str, ...] = ()
    """Domain globs Recipient, Cc and Bcc addresses must match (lower case); empty: any."""
    strict_parameters: bool = False
    """Refuse (302) a request with a parameter mailgate does not know, instead of a warning."""
    attachment_path_map: tuple[tuple[str, str], ...] = ()
    """Windows or UNC prefixes (lower case, ``/`` separators) and the local folder of each."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``MAILGATE_*`` variable; ``.env`` in the working folder fills gaps."""
        env = _Reader(environment() if environ is None else environ)
        settings = cls(
            redis_url=env.get("MAILGATE_REDIS_URL", DEFAULT_REDIS_URL, _redis_url),
            broker_url=env.get("MAILGATE_BROKER_URL", "", _broker_url),
            smtp=SmtpTarget.parse(env.raw("MAILGATE_SMTP_URL") or DEFAULT_SMTP_URL),
            users_file=Path(env.raw("MAILGATE_USERS_FILE") or "var/users.toml"),
            attachment_roots=env.get("MAILGATE_ATTACHMENT_ROOTS", (), _roots),
            spool_dir=Path(
                env.raw("MAILGATE_SPOOL_DIR")
                or Path(env.raw("MAILGATE_USERS_FILE") or "var/users.toml").parent / "spool"
            ),
            default_sender=env.raw("MAILGATE_DEFAULT_SENDER") or cls.default_sender,
            host=env.raw("MAILGATE_HOST") or cls.host,
            port=env.get("MAILGATE_PORT", cls.port, _port),
            flower_basic_auth=env.get("MAILGATE_FLOWER_BASIC_AUTH", None, _basic_auth),
            retry_base_seconds=env.number("MAILGATE_RETRY_BASE_SECONDS", cls.retry_base_seconds),
            retry_max_delay_seconds=env.number(
                "MAILGATE_RETRY_MAX_DELAY_SECONDS", cls.retry_max_delay_seconds
            ),
            max_attempts=env.integer("MAILGATE_MAX_ATTEMPTS", cls.max_attempts),
            retry_deadline_seconds=env.number(
                "MAILGATE_RETRY_DEADLINE_SECONDS", cls.retry_deadline_seconds
            ),
            redelivery_seconds=env.number("MAILGATE_REDELIVERY_SECONDS", cls.redelivery_seconds),
            status_ttl_seconds=env.integer("MAILGATE_STATUS_TTL_SECONDS", cls.status_ttl_seconds),
            smtp_timeout_seconds=env.number(
                "MAILGATE_SMTP_TIMEOUT_SECONDS", cls.smtp_timeout_seconds
            ),
            max_recipients=env.integer("MAILGATE_MAX_RECIPIENTS", cls.max_recipients),
            max_message_bytes=env.integer("MAILGATE_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            max_request_bytes=env.integer("MAILGATE_MAX_REQUEST_BYTES", cls.max_request_bytes),
            max_attachments=env.integer("MAILGATE_MAX_ATTACHMENTS", cls.max_attachments),
            max_attachment_bytes=env.integer(
                "MAILGATE_MAX_ATTACHMENT_BYTES", cls.max_attachment_bytes
            ),
            max_email_bytes=env.integer("MAILGATE_MAX_EMAIL_BYTES", cls.max_email_bytes),
            auth_cache_seconds=env.number("MAILGATE_AUTH_CACHE_SECONDS", cls.auth_cache_seconds),
            worker_concurrency=env.integer("MAILGATE_WORKER_CONCURRENCY", cls.worker_concurrency),
            worker_processes=env.integer("MAILGATE_WORKER_PROCESSES", os.cpu_count() or 1),
            message_id_host=env.get("MAILGATE_MESSAGE_ID_HOST", cls.message_id_host, _hostname),
            callback_allowed=env.get("MAILGATE_CALLBACK_ALLOWED", (), _hosts),
            callback_secret=env.raw("MAILGATE_CALLBACK_SECRET"),
            idempotency_seconds=env.integer(
                "MAILGATE_IDEMPOTENCY_SECONDS", cls.idempotency_seconds
            ),
            trusted_proxies=env.get("MAILGATE_TRUSTED_PROXIES", (), _networks),
            login_failures_per_client=env.get(
                "MAILGATE_LOGIN_FAILURES_PER_CLIENT", cls.login_failures_per_client, _rate
            ),
            login_failures_per_address=env.get(
                "MAILGATE_LOGIN_FAILURES_PER_ADDRESS", cls.login_failures_per_address, _rate
            ),
            login_failures_per_user=env.get(
                "MAILGATE_LOGIN_FAILURES_PER_USER", cls.login_failures_per_user, _rate
            ),
            redis_appendfsync=env.get(
                "MAILGATE_REDIS_APPENDFSYNC", cls.redis_appendfsync, _appendfsync
            ),
            redis_min_replicas=env.get("MAILGATE_REDIS_MIN_REPLICAS", 0, _non_negative_int),
            broker_quorum_queues=env.get("MAILGATE_BROKER_QUORUM_QUEUES", False, _flag),
            recipient_domains=env.get("MAILGATE_RECIPIENT_DOMAINS", (), _domain_globs),
            strict_parameters=env.get("MAILGATE_STRICT_PARAMETERS", False, _flag),
            attachment_path_map=env.get("MAILGATE_ATTACHMENT_PATH_MAP", (), _path_map),
        )
        # Sentinel URLs carry the master's name and the sentinels' password from here on.
        master = env.raw("MAILGATE_REDIS_SENTINEL_MASTER")
        secret = env.raw("MAILGATE_REDIS_SENTINEL_PASSWORD")
        settings = replace(
            settings,
            redis_url=_sentinel_url("MAILGATE_REDIS_URL", settings.redis_url, master, secret),
            broker_url=_sentinel_url("MAILGATE_BROKER_URL", settings.broker_url, master, secret),
        )
        if not settings.broker_url:
            settings = replace(settings, broker_url=settings.redis_url)
        if settings.status_ttl_seconds < settings.retry_deadline_seconds + 3600:
            raise ConfigError(
                "MAILGATE_STATUS_TTL_SECONDS",
                "must outlast MAILGATE_RETRY_DEADLINE_SECONDS by an hour at least",
            )
        if settings.idempotency_seconds > settings.status_ttl_seconds:
            raise ConfigError(
                "MAILGATE_IDEMPOTENCY_SECONDS",
                "must not outlast MAILGATE_STATUS_TTL_SECONDS (a repeat would get an id whose "
                "status is gone)",
            )
        return settings


def environment() -> dict[str, str]:
    """The process environment over the ``.env`` file of the working folder (if any)."""
    dotenv = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    return {**dotenv, **os.environ}


class _Reader:
    """Reads one variable at a time and names it in any error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str:
        return self.environ.get(name, "").strip()

    def get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        value = self.raw(name)
        if not value:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None

    def number(self, name: str, default: float) -> float:
        return self.get(name, default, _positive_float)

    def integer(self, name: str, default: int) -> int:
        return self.get(name, default, _positive_int)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be a positive number, got {value!r}")
    return number


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"must be a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return number


def _port(value: str) -> int:
    port = _positive_int(value)
    if port > 65535:
        raise ValueError(f"must be a port from 1 to 65535, got {value!r}")
    return port


def _redis_url(value: str) -> str:
    if not is_redis(value):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
    return value


def _broker_url(value: str) -> str:
    if not is_redis(value) and urlsplit(value).scheme not in ("amqp", "amqps", "pyamqp"):
        raise ValueError(
            "must start with redis://, rediss://, redis+sentinel://, amqp:// or amqps://"
        )
    return value


def _sentinel_url(variable: str, url: str, master: str, password: str) -> str:
    """A Sentinel URL in its canonical form, with the master and password settings folded in."""
    if not is_sentinel(url):
        return url
    try:
        return SentinelTarget.parse(url, master, password).url()
    except ValueError as exc:
        raise ConfigError(variable, str(exc)) from None


def _non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"must be a whole number, 0 or more, got {value!r}")
    return int(value)


def _flag(value: str) -> bool:
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"must be 1 or 0, got {value!r}")
    return value.lower() in ("1", "true", "yes")


def _roots(value: str) -> tuple[Path, ...]:
    roots = []
    for part in value.split(":"):
        if not part:
            continue
        path = Path(part)
        if not path.is_absolute():
            raise ValueError(f"{part!r} is not an absolute path")
        roots.append(Path(os.path.realpath(path)))
    return tuple(roots)


def _domain_globs(value: str) -> tuple[str, ...]:
    globs = tuple(part.strip().lower() for part in value.split(",") if part.strip())
    for glob in globs:
        if not re.fullmatch(r"[^\s@,;]+", glob):
            raise ValueError(f"{glob!r} is not a domain or domain glob (e.g. *.example.com)")
    return globs


def _path_map(value: str) -> tuple[tuple[str, str], ...]:
    r"""``C:\Recordings=/srv/recordings;\\pbx\share=/mnt/pbx``: Windows prefix = local folder."""
    entries = []
    for part in value.split(";"):
        if not part.strip():
            continue
        prefix, sep, folder = part.partition("=")
        prefix, folder = prefix.strip(), folder.strip()
        if not sep or not re.match(r"^(?:[A-Za-z]:|\\\\[^\\/]+)", prefix):
            raise ValueError(f"{part!r} is not WINDOWS_PREFIX=/local/folder (C:\\X=/srv/x)")
        if not Path(folder).is_absolute():
            raise ValueError(f"{folder!r} is not an absolute path")
        entries.append((prefix.replace("\\", "/").rstrip("/").lower(), folder))
    return tuple(entries)


def _networks(value: str) -> tuple[str, ...]:
    networks = []
    for part in value.replace(",", " ").split():
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(f"{part!r} is not a network (use CIDR, e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(part.lower() for part in value.replace(",", " ").split())
    for entry in hosts:
        host, port = split_host_port(entry)
        if not re.fullmatch(r"[a-z0-9*.:-]+", host) or not (
            port is None or port == "*" or (port.isdigit() and 0 < int(port) < 65536)
        ):
            raise ValueError(f"{entry!r} is not a host, host:port or host pattern")
    return hosts


def split_host_port(entry: str) -> tuple[str, str | None]:
    """An allow-list entry as (host pattern, port, ``*`` or None for the default port).

    ``hooks.example:8443``, ``*.crm.example``, ``[::1]:8080``; a bare IPv6 address has no port.
    """
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, None


def _rate(value: str) -> str:
    try:
        parse_rate(value)
    except ValueError:
        raise ValueError(f"must be a rate such as 5/minute, got {value!r}") from None
    return value


def _hostname(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value):
        raise ValueError(f"must be a host name, got {value!r}")
    return value


def _appendfsync(value: str) -> str:
    if value not in ("everysec", "always"):
        raise ValueError(f"must be everysec or always, got {value!r}")
    return value


def _basic_auth(value: str) -> str:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("must be user:password")
    return value
