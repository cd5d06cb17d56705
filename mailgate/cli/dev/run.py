"""``mailgate run``: the whole gateway in one terminal, for a first try and for development.

Starts an embedded Redis where ``MAILGATE_REDIS_URL`` is unset and an SMTP sink where
``MAILGATE_SMTP_URL`` is unset, then the API (``mailgate web``), one worker and Flower, under
honcho: output is prefixed per process, and Ctrl-C stops every child (whole process groups).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from mailgate.cli.dev.embedded import port_is_free, private_dir, redis_command, remember_url
from mailgate.cli.dev.welcome import Console, Welcome
from mailgate.cli.procs import bind_to_parent
from mailgate.config import Settings, environment
from mailgate.errors import ConfigError

SAMPLE_NAME = "hello.txt"
STOPPED_CODES = (130, 143)
"""honcho's exit codes after it stopped everything on SIGINT (Ctrl-C) or SIGTERM. Its processes
run under ``mailgate supervise``, which only exits when stopped, so these mean a requested stop."""


def _bin(name: str) -> str:
    return shlex.quote(str(Path(sys.executable).parent / name))


def commands(settings: Settings) -> dict[str, str]:
    """The gateway's own processes, as Procfile-style command lines."""
    return {
        "web": f"{_bin('mailgate')} web",
        "worker": f"{_bin('mailgate')} worker",
        "flower": f"{_bin('mailgate')} flower --address 127.0.0.1",
    }


def run_all() -> int:
    """Start everything and wait. A stop that was asked for (Ctrl-C, SIGTERM) is exit code 0;
    otherwise the exit code of the first process to stop."""
    # honcho comes with the run extra; `mailgate worker` and `mailgate flower` (this module's
    # other commands) run in images without it.
    from honcho.manager import Manager
    from honcho.printer import Printer

    env = environment()  # .env included, so the children and this process agree
    first = Settings.from_env(env)  # a bad variable stops here with one line
    var = private_dir(Path("var"))  # bodies, recipients and password hashes live under it
    extra: list[tuple[str, str]] = []
    embedded = None
    if not env.get("MAILGATE_REDIS_URL"):
        port = first.embedded_redis_port
        if not port_is_free(port):
            raise ConfigError("MAILGATE_EMBEDDED_REDIS_PORT", f"port {port} is already in use")
        private_dir(var / "redis")
        extra.append(("redis", redis_command(port, var / "redis", first.redis_appendfsync)))
        embedded = env["MAILGATE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    remember_url(var, embedded)  # the CLI run in this folder asks the same Redis
    if not env.get("MAILGATE_SMTP_URL"):
        sink_port = first.sink_port
        if not port_is_free(sink_port):
            raise ConfigError("MAILGATE_SINK_PORT", f"port {sink_port} is already in use")
        private_dir(var / "outbox")
        python = shlex.quote(sys.executable)
        sink = f"exec {python} -m mailgate.cli.dev.sink --port {sink_port} --outbox var/outbox"
        extra.append(("smtp-sink", sink))
        env["MAILGATE_SMTP_URL"] = f"smtp://127.0.0.1:{sink_port}"
    # The banner's curl lines name MAILGATE_PORT: a PORT left in the shell must not move the API.
    env.pop("PORT", None)
    sample = None
    if not env.get("MAILGATE_ATTACHMENT_ROOTS"):
        sample = _sample_attachment(var / "attachments")
        env["MAILGATE_ATTACHMENT_ROOTS"] = str(sample.parent)
    # One terminal for every process: plain lines read better there than JSON.
    env.setdefault("MAILGATE_LOG_FORMAT", "text")
    settings = Settings.from_env(env)
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    welcome = Welcome(settings, sample, embedded)
    welcome.first_account()
    print(welcome.starting(), flush=True)
    # honcho reads each process's output in a fork of this process, which would outlive a
    # SIGKILL to us and keep the supervisors below it going: it dies with us instead.
    top = os.getpid()
    os.register_at_fork(after_in_child=lambda: bind_to_parent(signal.SIGKILL, top))
    console = Console(Printer(sys.stdout), welcome)
    manager = Manager(printer=console)
    # Each under `mailgate supervise`: a process that exits is started again, instead of
    # honcho stopping all the others; Ctrl-C still stops everything. `exec`: no shell stays
    # between honcho and the supervisor, so honcho's signal and its exit code are the
    # supervisor's own, and the supervisor dies with honcho's reader (mailgate.cli.procs).
    supervise = f"exec {_bin('mailgate')} supervise --owner {top} --name"
    for name, command in extra:
        # Shell lines (the embedded Redis sets its umask first) that end in `exec`, so the
        # supervisor's signal reaches the server itself, not a shell that would leave it behind.
        manager.add_process(name, f"{supervise} {name} -- sh -c {shlex.quote(command)}", env=env)
    for name, command in commands(settings).items():
        # The API listens on MAILGATE_PORT here (the printed curl names it), not on a $PORT
        # that the caller's shell may hold.
        own = {k: v for k, v in env.items() if k != "PORT"} if name == "web" else env
        manager.add_process(name, f"{supervise} {name} -- {command}", env=own)
    threading.Thread(target=console.announce_when_ready, args=(manager,), daemon=True).start()
    manager.loop()
    code = int(manager.returncode or 0)
    if code in STOPPED_CODES:  # Ctrl-C or SIGTERM: the stop we were asked for, not a failure
        print("mailgate run: stopped", flush=True)
        return 0
    return code


def _sample_attachment(folder: Path) -> Path:
    """The attachment root of ``mailgate run`` (created) and a small file in it to attach."""
    private_dir(folder)  # like the rest of var/: what is attached is nobody else's business
    sample = folder.resolve() / SAMPLE_NAME
    if not sample.exists():
        sample.write_text("A sample attachment from mailgate run.\n", encoding="utf-8")
        sample.chmod(0o600)
    return sample
