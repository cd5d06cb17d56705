"""What ``mailgate run`` tells the person at the terminal: the account to use, and when the
gateway is ready.

On the first start (no account yet) it creates one and prints its name, password and curl lines;
once every process is ready (the API's /readyz answers, Flower listens, each worker process has
said "ready.") it prints that again, since by then about a hundred start-up lines have scrolled
it away. On later starts the ready notice names the accounts and how to set a new password.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mailgate.config import Settings
from mailgate.users import UserStore

FIRST_USER = "ivr"
RULE = "=" * 72
NOTICE = "\0mailgate"
"""The name under which our own notices pass through honcho's queue: printed without a prefix."""
READY_LINE = re.compile(rb"@\S+ ready\.")
"""What each Celery worker process prints once it takes tasks ("mailgate-1@host ready.")."""
POLL_SECONDS = 0.5


def loopback_only(host: str) -> bool:
    """The API binds only to this machine's loopback (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cli_path() -> str:
    """How to call this ``mailgate`` from the working folder (``.venv/bin/mailgate``)."""
    program = Path(sys.executable).parent / "mailgate"
    try:
        return str(program.relative_to(Path.cwd()))
    except ValueError:
        return str(program)


class Welcome:
    """The account and ready notices of one ``mailgate run``."""

    def __init__(self, settings: Settings, sample: Path | None, embedded: str | None) -> None:
        self.settings = settings
        self.sample = sample
        self.embedded = embedded
        self.password: str | None = None
        """The first account's password, when this start created it."""
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        self.base = f"http://{host}:{settings.port}"
        self.api = f"{self.base}/api"
        self.flower = f"http://127.0.0.1:{settings.flower_port}/"
        self.local = loopback_only(settings.host)

    def first_account(self) -> None:
        """With no account at all, create one (its password is kept for the notices).

        On a local machine (the API listening on loopback only) it may use any sender, as the
        examples that clients copy carry a ``Sender``; an account that others can reach keeps
        the sender ACL, like every account ``mailgate user add`` creates.
        """
        store = UserStore(self.settings.users_file)
        if store.accounts():
            return
        self.password = secrets.token_urlsafe(12)
        store.add(FIRST_USER, self.password, ("*",) if self.local else ())

    def starting(self) -> str:
        """Printed before the processes start."""
        lines = self._account() if self.password else []
        if self.sample is not None:
            lines.append(
                f"Attachments: files under {self.sample.parent}/ may be attached"
                f" (e.g. {self.sample})"
            )
        if self.embedded:
            lines.append(f"Redis: {self.embedded}   (the CLI run in this folder uses it)")
        lines.append(f"Flower: {self.flower}   outbox: var/outbox/")
        return "\n".join(lines)

    def ready(self) -> str:
        """Printed once every process is ready."""
        lines = [RULE, f"mailgate is ready: API {self.api}   Flower {self.flower}"]
        if self.password:
            lines += self._account()[1:]
        else:
            lines += [*self._accounts_line(), RULE]
        return "\n".join(lines)

    def _account(self) -> list[str]:
        """The first account, with curl lines to try it."""
        assert self.password is not None
        password = quote(self.password, safe="")
        lines = [
            RULE,
            f"Created the first account in {self.settings.users_file}:",
            f"  user: {FIRST_USER}",
            f"  password: {self.password}",
            *(
                [
                    "  senders: any (*), as the API listens on this machine only; accounts for",
                    "  production get theirs: mailgate user add NAME --sender '*@your.domain'",
                ]
                if self.local
                else [
                    f"  senders: {self.settings.default_sender} only (the API is reachable from",
                    "  other machines): mailgate user add NAME --sender '*@your.domain' for more",
                ]
            ),
            "Send a test e-mail:",
            f"  curl '{self.api}?command=SendEmail&Recipient=you%40example.com"
            f"&Subject=Hello&Message=Hello+from+mailgate&Username={FIRST_USER}&Password={password}'",
        ]
        if self.sample is not None:
            lines += [
                "Send one with an attachment from the attachment root:",
                f"  curl '{self.api}?command=SendEmail&Recipient=you%40example.com"
                f"&Subject=Attached&Message=See+the+file"
                f"&Attachments={quote(str(self.sample), safe='')}"
                f"&Username={FIRST_USER}&Password={password}'",
            ]
        lines += [
            "Then poll it with command=GetEmailStatus&EmailId=<EmailId> and the same credentials.",
            f"A new password: {cli_path()} user passwd {FIRST_USER}",
            RULE,
        ]
        return lines

    def _accounts_line(self) -> list[str]:
        names = sorted(UserStore(self.settings.users_file).accounts())
        if not names:
            return [f"No account in {self.settings.users_file}: {cli_path()} user add NAME"]
        return [
            f"Accounts in {self.settings.users_file}: {', '.join(names)}."
            f" A new password: {cli_path()} user passwd {names[0]}"
        ]


class Console:
    """honcho's printer, which also counts the worker processes that said they are ready, and
    prints our notices (passed through honcho's queue, so lines never interleave) unprefixed."""

    def __init__(self, printer: Any, welcome: Welcome) -> None:
        self.printer = printer
        self.welcome = welcome
        self.workers_ready = 0

    @property
    def width(self) -> int:
        return int(self.printer.width)

    @width.setter
    def width(self, value: int) -> None:
        self.printer.width = value

    def write(self, message: Any) -> None:
        if message.name == NOTICE:
            print(message.data, file=self.printer.output, flush=True)
            return
        if message.name == "worker" and READY_LINE.search(_as_bytes(message.data)):
            self.workers_ready += 1
        self.printer.write(message)

    def announce_when_ready(self, manager: Any) -> None:
        """Wait for every process, then print the ready notice (from a thread)."""
        from honcho.printer import Message

        settings = self.welcome.settings
        workers = settings.worker_processes or os.cpu_count() or 1
        api = f"{self.welcome.base}/readyz"
        while not (
            self.workers_ready >= workers and _answers(api) and _listens(settings.flower_port)
        ):
            time.sleep(POLL_SECONDS)
        text = self.welcome.ready()
        manager.events.put(Message("line", text, datetime.now(), NOTICE, None))


def _as_bytes(data: Any) -> bytes:
    return data if isinstance(data, bytes) else str(data).encode()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own http URL)
            return bool(response.status == 200)
    except OSError:
        return False


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
