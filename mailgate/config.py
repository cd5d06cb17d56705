"""Settings, read once from the environment (and a ``.env`` file beneath it).

Every setting is declared once, below, as a field of :class:`Settings`: its default, the parser
that checks it, and its help. The variable is ``MAILGATE_`` + the field's name in capitals
(see :mod:`mailgate.options`). A bad value raises :class:`ConfigError` naming the variable; the
entry points turn that into one line on stderr and a non-zero exit. The configuration table of
the docs is generated from these declarations (``python -m mailgate.config --markdown``), and a
test keeps the two equal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dotenv import dotenv_values

from mailgate import parsers as p
from mailgate.errors import ConfigError
from mailgate.options import markdown, options, setting
from mailgate.redisconn import SentinelTarget, is_sentinel
from mailgate.relays import Route, SmtpTarget, parse_route

__all__ = ["Route", "Settings", "SmtpTarget"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
"""Redis outside ``mailgate run`` (which starts an embedded one when this is unset)."""

DEFAULT_SINK_PORT = 2525
"""Port of the local SMTP sink that ``mailgate run`` starts when no SMTP server is set."""

DEFAULT_SMTP_URL = f"smtp://127.0.0.1:{DEFAULT_SINK_PORT}"
"""SMTP outside ``mailgate run``: the local sink's address."""


@dataclass(frozen=True)
class ImapTarget:
    """The mailbox ``mailgate bounces`` polls for reports: parsed from
    ``MAILGATE_BOUNCE_IMAP_URL``."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    ssl: bool = True
    starttls: bool = False
    verify: bool = True

    @classmethod
    def parse(cls, url: str, variable: str = "MAILGATE_BOUNCE_IMAP_URL") -> ImapTarget:
        """Read ``imaps://user:password@host[:port][/FOLDER][?verify=false]`` (or ``imap://``
        with ``?starttls=true``, or plain on loopback only)."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps"):
            raise ConfigError(variable, "must start with imaps:// or imap://")
        if not parts.hostname:
            raise ConfigError(variable, "has no host")
        if not parts.username or parts.password is None:
            raise ConfigError(variable, "needs user:password@ before the host")
        try:
            port = parts.port or (993 if parts.scheme == "imaps" else 143)
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
        ssl = parts.scheme == "imaps"
        if ssl and flags["starttls"]:
            raise ConfigError(variable, "imaps:// and starttls=true exclude each other")
        if not ssl and not flags["starttls"] and parts.hostname not in _LOOPBACK:
            # The password would cross the network in clear text.
            raise ConfigError(variable, "plain imap:// only on loopback: use imaps://")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username),
            password=unquote(parts.password),
            folder=unquote(parts.path.strip("/")) or "INBOX",
            ssl=ssl,
            starttls=flags["starttls"],
            verify=flags["verify"],
        )


_LOOPBACK = ("127.0.0.1", "::1", "localhost")

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything configurable: one declaration per setting. Built by :meth:`from_env`."""

    # Where things are: Redis, the broker, SMTP, files.
    redis_url: str = setting(
        DEFAULT_REDIS_URL,
        p.redis_url,
        "Celery broker, status store and rate-limit counters. `redis://`, `rediss://`, "
        "`unix://`, or Redis Sentinel: "
        "`redis+sentinel://[:password@]host:port[,host:port…]/master_name[/db]` "
        "(`sentinel://` is the same; see [High availability](design.md#high-availability))",
        shown="embedded under `mailgate run`, else `redis://127.0.0.1:6379/0`",
    )
    redis_sentinel_master: str = setting(
        "",
        p.text,
        "the Sentinel master group's name, when the URL does not end in `/master_name` "
        "(kombu's `sentinel://h1:26379;sentinel://h2:26379` notation)",
        shown="none",
    )
    redis_sentinel_password: str = setting(
        "",
        p.text,
        "the sentinels' own password (`requirepass` in sentinel.conf), if they have one; the "
        "URL's password is the master's and its replicas'. Also `?sentinel_password=` in the URL",
        shown="none",
        secret=True,
    )
    redis_min_replicas: int = setting(
        0,
        p.non_negative_int,
        "replicas that must hold an accepted e-mail (Redis `WAIT`, 1 s) before the API answers "
        "200, and a worker's claim before it talks SMTP. Short of that: Code 503, the e-mail "
        "withdrawn",
    )
    smtp: Route = setting(
        parse_route(DEFAULT_SMTP_URL),
        parse_route,
        "where the workers deliver: one relay, or several separated by spaces, tried in order "
        "(see [Relays and failover](#relays-and-failover)); each a URL as in "
        "[SMTP URLs](#smtp-urls), with a password or OAuth2",
        shown="the local sink under `mailgate run`, else `smtp://127.0.0.1:2525`",
        variable="MAILGATE_SMTP_URL",
    )
    users_file: Path = setting(
        Path("var/users.toml"), Path, "the accounts file (argon2id password hashes)"
    )
    attachment_roots: tuple[Path, ...] = setting(
        (),
        p.roots,
        "`:`-separated absolute folders. An attachment must resolve, with symlinks followed, "
        "inside one of them",
        shown="empty (path attachments refused); `var/attachments` under `mailgate run`",
    )
    default_sender: str = setting(
        "mailgate@localhost",
        p.text,
        "From address when `Sender` is absent. Every account may use it",
    )
    # The API server.
    host: str = setting("127.0.0.1", p.text, "API bind address")
    port: int = setting(
        9509,
        p.port,
        "API port (`$PORT` wins when set, for `mailgate web` under honcho or a platform; not "
        "under `mailgate run`)",
    )
    web_workers: int | None = setting(
        None, p.positive_int, "`mailgate web`: API processes", shown="one per core"
    )
    web_threads: int | None = setting(
        None,
        p.positive_int,
        "`mailgate web`: request threads per API process; each Redis client of the process may "
        "open one connection per thread",
        shown="granian's: 512 / processes",
    )
    spool_dir: Path = setting(
        Path("var/spool"),
        Path,
        "where uploaded attachments wait for delivery (made `0700`). API and worker must share "
        "it; each file is deleted once its e-mail is `Sent`, `Failed` or `Cancelled`, and any "
        "left older than `MAILGATE_STATUS_TTL_SECONDS` are swept by the worker",
        shown="`spool/` next to `MAILGATE_USERS_FILE`",
    )
    flower_basic_auth: str | None = setting(
        None,
        p.basic_auth,
        "`user:password` for Flower (see [Flower](operations.md#flower))",
        secret=True,
    )
    # Delivery and retries.
    retry_base_seconds: float = setting(
        30.0,
        p.positive_float,
        "first retry delay. Each later delay doubles, with ±50 % jitter",
    )
    retry_max_delay_seconds: float = setting(
        3600.0, p.positive_float, "upper limit for any single retry delay"
    )
    max_attempts: int = setting(
        10, p.positive_int, "delivery attempts before the e-mail becomes `Failed`"
    )
    retry_deadline_seconds: float = setting(
        86400.0,
        p.positive_float,
        'an e-mail not sent this long after it was accepted becomes `Failed` ("expired")',
    )
    redelivery_seconds: float = setting(
        300.0,
        p.positive_float,
        "an e-mail held by a worker that died is delivered by another worker (or the restarted "
        "one) within this time",
    )
    status_ttl_seconds: int = setting(
        7 * 86400,
        p.positive_int,
        "how long a status record is kept after its last change. After that, `GetEmailStatus` "
        "answers 404. Must exceed `MAILGATE_RETRY_DEADLINE_SECONDS` by an hour",
        shown="`604800` (7 days)",
    )
    smtp_timeout_seconds: float = setting(
        30.0, p.positive_float, "SMTP connect and read time-out; also an OAuth2 token request's"
    )
    relay_failures: int = setting(
        3,
        p.positive_int,
        "a relay that failed this many times in a row (no connection, a time-out, a 4xx before "
        "MAIL, a refused login) is skipped for `MAILGATE_RELAY_SKIP_SECONDS` while a route has "
        "other relays (per worker process)",
    )
    relay_skip_seconds: float = setting(
        60.0, p.positive_float, "how long a failing relay is skipped; then it gets one try"
    )
    dkim_keys: tuple[tuple[str, str, Path], ...] = setting(
        (),
        p.dkim_keys,
        "DKIM keys per sender domain: space-separated `domain=selector:/path/to/key.pem` "
        "entries (RSA, PEM). The worker signs each e-mail whose From domain (or a parent "
        "domain) has one; a key it cannot read stops it at start-up. See [DKIM](#dkim)",
        shown="empty (no signing)",
    )
    # Limits on what one request may carry.
    max_recipients: int = setting(50, p.positive_int, "recipients per e-mail")
    max_message_bytes: int = setting(
        MIB,
        p.positive_int,
        "size of `Message` in UTF-8. A larger one gets Code 413",
        shown="`1048576` (1 MiB)",
    )
    max_request_bytes: int = setting(
        2 * MIB,
        p.positive_int,
        "size of the query string, and separately of the request body. A larger one gets Code "
        "413. `mailgate web` (granian) itself answers a URL over 64 KiB, or a head over this "
        "plus 128 KiB, with a bare HTTP 414 or 431: put the front proxy of docs/operations.md "
        "before it to answer those with Code 413 too",
        shown="`2097152` (2 MiB)",
    )
    max_attachments: int = setting(20, p.positive_int, "files per e-mail")
    max_attachment_bytes: int = setting(
        25 * MIB,
        p.positive_int,
        "total size of all the attachments of one e-mail, as files on disk",
        shown="`26214400` (25 MiB)",
    )
    max_email_bytes: int = setting(
        25 * MIB,
        p.positive_int,
        "size of the whole e-mail as sent, attachments in base64 (about 4/3 of their size): "
        "what a relay's size limit measures. The API refuses (302) an e-mail whose estimated "
        "encoded size is over it; the worker measures the real message before sending and "
        "makes it `Failed` if it is over. Set it to your relay's limit",
        shown="`26214400` (25 MiB)",
    )
    auth_cache_seconds: float = setting(
        60.0,
        p.positive_float,
        "each API process remembers a successful password check for this long, to skip the "
        "slow argon2 check on repeat calls. Removing an account or changing its password takes "
        "effect at once anyway",
    )
    password_checks: int = setting(
        2,
        p.positive_int,
        "argon2 password checks one API process runs at once; each takes 64 MiB of memory while "
        "it runs (see [Security](security.md#protections)). Credentials in the cache never wait "
        "for one",
    )
    password_check_wait_seconds: float = setting(
        3.0,
        p.positive_float,
        "how long a password check waits for a free one of `MAILGATE_PASSWORD_CHECKS`; then the "
        "request gets Code 503 (REST: 503 with `Retry-After`) and nothing is queued",
    )
    # Processes.
    worker_concurrency: int = setting(
        32,
        p.positive_int,
        "e-mails (SMTP sessions) in flight per worker process (`mailgate worker`, which the "
        "Procfile, `mailgate run` and docker-compose.yml start; `--concurrency` wins)",
    )
    worker_processes: int | None = setting(
        None,
        p.positive_int,
        "`mailgate worker`: worker processes (`--processes` wins)",
        shown="one per core",
    )
    message_id_host: str = setting(
        "mailgate.local",
        p.hostname,
        "right-hand side of every `Message-ID: <EmailId@host>`",
    )
    embedded_redis_port: int = setting(
        6399, p.port, "`mailgate run` only: port of the embedded Redis"
    )
    redis_appendfsync: str = setting(
        "everysec",
        p.appendfsync,
        "`mailgate run` only: the embedded Redis's `appendfsync`. `always` loses nothing even "
        "if the machine crashes, but writes are much slower",
    )
    sink_port: int = setting(
        DEFAULT_SINK_PORT, p.port, "`mailgate run` only: port of the local SMTP sink"
    )
    flower_port: int = setting(5555, p.port, "`mailgate run` and the Procfile: Flower's port")
    flower_address: str = setting("127.0.0.1", p.text, "the Procfile only: Flower's bind address")
    broker_url: str = setting(
        "",
        p.broker_url,
        "the Celery broker: `amqp://…` for RabbitMQ (see [RabbitMQ](operations.md#rabbitmq)), "
        "or a Sentinel URL; the status store stays in Redis",
        shown="the Redis URL",
    )
    # What is accepted.
    recipient_domains: tuple[str, ...] = setting(
        (),
        p.domain_globs,
        "comma-separated, case-insensitive domain globs (`*.example.com,corp.local`) every "
        "`Recipient`, `Cc` and `Bcc` address must match; otherwise Code 302 naming the "
        "parameter. `*.example.com` does not match `example.com` itself",
        shown="empty (any domain)",
    )
    strict_parameters: bool = setting(
        False,
        p.flag,
        "`1`: an Ozeki parameter mailgate does not know is Code 302 naming it, instead of a "
        "warning (the REST API always refuses an unknown field with 400)",
    )
    legacy_charset: str = setting(
        "windows-1252",
        p.charset,
        "the charset of a query string or form body (urlencoded or multipart) that is not valid "
        "UTF-8 and declares none (no Content-Type `charset=`, no `_charset_` parameter); a WHATWG "
        "label, so `iso-8859-1` means windows-1252, as browsers read it",
    )
    attachment_path_map: tuple[tuple[str, str], ...] = setting(
        (),
        p.path_map,
        "`;`-separated `WINDOWS_PREFIX=/local/folder` entries, e.g. "
        "`C:\\Recordings=/srv/recordings;\\\\pbx\\share=/mnt/pbx`: Windows drive and UNC "
        "attachment paths under a prefix are read from the folder, as Windows reads them: "
        "`..` resolved first (a climb out of the prefix is refused), file names in any case "
        "(still inside `MAILGATE_ATTACHMENT_ROOTS`)",
    )
    broker_quorum_queues: bool = setting(
        False,
        p.flag,
        "`1`: on RabbitMQ, declare the `mailgate` queue as a quorum queue (`x-queue-type: quorum`)",
    )
    log_format: str = setting(
        "json",
        p.log_format,
        "`json` (one object per line) or `text`",
        shown="`json` (`text` under `mailgate run`)",
    )
    idempotency_seconds: int = setting(
        86400,
        p.positive_int,
        "how long an `IdempotencyKey` keeps answering with its first EmailId; at most "
        "`MAILGATE_STATUS_TTL_SECONDS`",
    )
    max_pending_emails: int = setting(
        10_000,
        p.non_negative_int,
        "e-mails one account may have not yet final (`Scheduled`, `Queued`, `Sending`, "
        "`Retrying`); one more is Code 429 (REST: 429) naming the limit. `0`: no limit. "
        "`mailgate user add/update --max-pending` gives an account its own",
    )
    max_pending_bytes: int = setting(
        1024 * MIB,
        p.non_negative_int,
        "the bytes those e-mails may hold together: each one's stored content (text, "
        "recipients, ...) and attachments. Over it, Code 429 naming the limit. `0`: no limit. "
        "`--max-pending-bytes` gives an account its own",
        shown="`1073741824` (1 GiB)",
    )
    # Delivery reports and login protection.
    callback_allowed: tuple[str, ...] = setting(
        (),
        p.hosts,
        "where a `DeliveryReportURL` may point: `host` (its scheme's default port, 80 or 443, "
        "only), `host:port`, `host:*` (any port), `[v6]:port`; hosts may be globs. E.g. "
        "`hooks.pbx.example *.crm.example:8443`",
        shown="empty (no delivery reports)",
    )
    callback_secret: str = setting(
        "", p.text, "key of the HMAC signature on delivery reports", secret=True
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        p.networks,
        "networks (CIDR, space- or comma-separated) of reverse proxies whose `X-Forwarded-For` "
        "is believed. Everyone else's is ignored",
    )
    login_failures_per_client: str = setting(
        "5/minute",
        p.rate,
        "failed logins one address may make for one user name before Code 429",
    )
    login_failures_per_address: str = setting(
        "20/minute", p.rate, "failed logins one address may make over all user names"
    )
    login_failures_per_user: str = setting(
        "100/hour", p.rate, "failed logins for one user name from all addresses together"
    )
    # Bounces (`mailgate bounces`, see [Bounces](operations.md#bounces)) and suppression.
    bounce_address: str = setting(
        "",
        p.bounce_address,
        "the return path: the envelope sender of every e-mail becomes `local+<EmailId>@domain` "
        "(VERP; the From header stays), and `mailgate bounces` takes reports for it over SMTP",
        shown="none (the envelope sender is the From address)",
    )
    bounce_smtp_host: str = setting(
        "127.0.0.1",
        p.text,
        "`mailgate bounces`: bind address of the SMTP listener for reports, which runs when "
        "`MAILGATE_BOUNCE_ADDRESS` is set",
    )
    bounce_smtp_port: int = setting(2526, p.port, "`mailgate bounces`: the listener's port")
    bounce_max_bytes: int = setting(
        10 * MIB,
        p.positive_int,
        "largest report the listener takes (a larger one gets 552)",
        shown="`10485760` (10 MiB)",
    )
    bounce_rate: str = setting(
        "120/minute",
        p.rate,
        "messages one client address may hand the listener (more get 421, try later)",
    )
    bounce_imap: ImapTarget | None = setting(
        None,
        ImapTarget.parse,
        "`mailgate bounces`: a mailbox to poll for reports, "
        "`imaps://user:password@host[:port][/FOLDER][?verify=false]` (folder `INBOX` unless "
        "given; `imap://` with `?starttls=true`, or plain on loopback only)",
        variable="MAILGATE_BOUNCE_IMAP_URL",
        secret=True,
    )
    bounce_imap_processed: str = setting(
        "mailgate-processed",
        p.text,
        "IMAP folder the poller moves each report it recorded into (created when missing); "
        "what it cannot match stays where it is",
    )
    bounce_imap_poll_seconds: float = setting(
        60.0, p.positive_float, "how often the poller looks for new messages"
    )
    suppression: bool = setting(
        True,
        p.flag,
        "`0`: a hard bounce suppresses nothing. `1`: SendEmail from the same account to an "
        "address that hard-bounced is Code 302 (REST 422) for `MAILGATE_SUPPRESSION_SECONDS`",
    )
    suppression_seconds: int = setting(
        30 * 86400,
        p.positive_int,
        "how long a hard bounce suppresses its address (`mailgate suppressions remove` ends "
        "it sooner)",
        shown="`2592000` (30 days)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``MAILGATE_*`` variable; ``.env`` in the working folder fills gaps."""
        env = environment() if environ is None else environ
        settings = cls(**{name: option.read(env) for name, option in options(cls)})
        if not env.get("MAILGATE_SPOOL_DIR", "").strip():
            # Next to the accounts file: both are the gateway's private state.
            settings = replace(settings, spool_dir=settings.users_file.parent / "spool")
        # Sentinel URLs carry the master's name and the sentinels' password from here on.
        master, secret = settings.redis_sentinel_master, settings.redis_sentinel_password
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


def _sentinel_url(variable: str, url: str, master: str, password: str) -> str:
    """A Sentinel URL in its canonical form, with the master and password settings folded in."""
    if not is_sentinel(url):
        return url
    try:
        return SentinelTarget.parse(url, master, password).url()
    except ValueError as exc:
        raise ConfigError(variable, str(exc)) from None


def settings_table() -> str:
    """The docs' configuration table (Markdown), generated from the declarations above."""
    return markdown(Settings)


def main(argv: list[str]) -> int:
    """``python -m mailgate.config --markdown``: print the settings table."""
    if argv != ["--markdown"]:
        print("usage: python -m mailgate.config --markdown", file=sys.stderr)
        return 2
    print(settings_table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
