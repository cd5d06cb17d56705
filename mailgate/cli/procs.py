"""Process tooling of the production commands: ``mailgate worker``'s fan-out over processes,
``mailgate supervise``, and the lifeline that ties each process to the one that started it.

**Worker fan-out** (:func:`run_workers`): one Celery worker process per core (the GIL binds a
process to one), sharing our process group, dying with us, stopped together.

**Supervise** (:func:`supervise`, ``mailgate supervise [--name NAME] -- CMD ...``): run a
command and start it again whenever it exits. For process managers that give up when a child
exits: under honcho (the Procfile, ``mailgate run``) one process exiting stops all the others, so
a worker that died would take the API with it. Here the command is started again after a pause
(1 s, doubling up to 30 s while it keeps exiting quickly); SIGTERM or SIGINT is passed on to it
once (SIGHUP as SIGTERM), and then this process exits with its exit code. The child runs in its
own process group, so a signal to ours (honcho sends to the whole group) reaches it exactly
once, through us. Nothing outlives the supervisor, nor the supervisor the process manager that
started it: the child gets SIGTERM if we die, and when whatever started us is gone (a closed
terminal, a SIGKILL to honcho or ``mailgate run``) we stop the child as on SIGTERM.

**Lifeline**: nothing outlives the command that started it (``mailgate run``, ``mailgate
supervise``, honcho). A closed terminal sends SIGHUP to its session only, and a SIGKILL reaches
one process: children in sessions of their own (honcho's, and ``mailgate supervise``'s) would
live on, holding their ports, and a supervisor would even start them again. So each link of a
process tree is tied to the one above it:

- :func:`die_with_parent`: a child we start gets a signal from Linux when we die
  (``PR_SET_PDEATHSIG``, set between fork and exec; it survives the exec);
- :func:`bind_to_parent`: the same for the calling process itself;
- :func:`watch_owners`: a thread that notices when the processes that started us are gone, also
  those above our parent. honcho's reader of each process is a fork of honcho that does not
  die with it, and a ``sh -c`` line (the Procfile's, run by honcho) stays between it and us.

Linux only: elsewhere the lifeline does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from mailgate.config import Settings
from mailgate.jobs import QUEUE

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5
"""How often :func:`watch_owners` looks at the processes that started us."""
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash", "busybox"})
"""Shells whose ``-c`` line may stand between a process manager and the command it runs."""
_ON_LINUX = sys.platform.startswith("linux")


def _prctl_deathsig(sig: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig))


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the child ``sig`` when we die (None elsewhere)."""
    if not _ON_LINUX:
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:  # between fork and exec: as little Python as possible
        libc.prctl(PR_SET_PDEATHSIG, int(sig))

    return preexec


def bind_to_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have Linux send this process ``sig`` when its parent dies; when the caller knows its
    parent's pid (``parent``) and that one is gone already, send it now."""
    if not _ON_LINUX:
        return
    _prctl_deathsig(sig)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in (...) may hold spaces
    if fields[0] == "Z":  # a zombie: dead, only not yet reaped
        return None
    return int(fields[1]), fields[19]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _passes_through(pid: int, parent: int) -> bool:
    """True when ``pid`` only carries out its parent's will: a ``sh -c`` line, or a fork of its
    parent that never ran a program of its own (honcho's reader of one process)."""
    line = _cmdline(pid)
    if len(line) >= 2 and os.path.basename(line[0]) in SHELLS and line[1] == "-c":
        return True
    return bool(line) and line == _cmdline(parent)


def owners(pid: int | None = None) -> list[tuple[int, str]]:
    """The processes ``pid`` (this one by default) lives for, as (pid, start time): its parent,
    and past a shell line or a forked helper, the one above, up to (not including) pid 1."""
    found: list[tuple[int, str]] = []
    if not _ON_LINUX:
        return found
    current = os.getpid() if pid is None else pid
    stat = _stat(current)
    while stat is not None and stat[0] > 1:
        parent = stat[0]
        parent_stat = _stat(parent)
        if parent_stat is None:
            break
        found.append((parent, parent_stat[1]))
        if not _passes_through(parent, parent_stat[0]):
            break
        stat = parent_stat
    return found


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie does not)."""
    return _stat(pid) is not None


def watch_owners(
    on_gone: Callable[[], None], also: int | None = None, interval: float = WATCH_SECONDS
) -> None:
    """Call ``on_gone`` (once, from a daemon thread) when any of :func:`owners`, or process
    ``also``, is gone."""
    watched = owners()
    extra = _stat(also) if also is not None else None
    if also is not None and extra is not None:
        watched.append((also, extra[1]))
    if not watched:
        return

    def watch() -> None:
        while True:
            time.sleep(interval)
            for pid, started in watched:
                stat = _stat(pid)
                if stat is None or stat[1] != started:  # gone, or its pid reused
                    on_gone()
                    return

    threading.Thread(target=watch, name="mailgate-lifeline", daemon=True).start()


FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
HEALTHY_SECONDS = 30.0
"""A child that ran this long was healthy: the next pause starts again from FIRST_PAUSE."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def passed_on(signum: int) -> int:
    """The signal a child gets for our stop signal: the same, but SIGTERM for SIGHUP, which
    a Celery worker without a terminal takes as "restart" rather than "stop"."""
    return signal.SIGTERM if signum == signal.SIGHUP else signum


def process_name(argv: Sequence[str]) -> str:
    """What to call a supervised command in log lines: ``web`` for ``mailgate web``, else its
    program's name."""
    program = os.path.basename(argv[0]) if argv else "?"
    if program == "mailgate" and len(argv) > 1:
        return argv[1]
    return program


def supervise(
    argv: list[str], say: Callable[[str], None], name: str | None = None, owner: int | None = None
) -> int:
    """Run ``argv`` until a stop signal arrives (or whatever started us is gone: our parent, the
    process manager above it, or process ``owner``); the child's last exit code."""
    name = name or process_name(argv)
    if owner is not None and not alive(owner):  # it went while we were starting
        say(f"process {owner} that started {name} is gone; not starting {name}")
        return 0
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(passed_on(signum))

    def orphaned() -> None:
        say(f"the process that started {name} is gone; stopping {name}")
        on_signal(signal.SIGTERM, None)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    bind_to_parent(signal.SIGTERM)  # our parent dies: stop as on SIGTERM
    watch_owners(orphaned, owner)  # and the ones above it (honcho past its reader, a shell line)
    pause = FIRST_PAUSE
    while True:
        started = time.monotonic()
        child = subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent())
        if stop.is_set():  # the signal came while it was being started
            child.terminate()
        code = child.wait()
        if stop.is_set():
            return code
        if time.monotonic() - started >= HEALTHY_SECONDS:
            pause = FIRST_PAUSE
        say(f"{name} exited with code {code}; starting it again in {pause:g} s")
        if stop.wait(pause):
            return code
        pause = min(pause * 2, MAX_PAUSE)


def worker_argv(settings: Settings, name: str, extra: Sequence[str] = ()) -> list[str]:
    """One worker process: Celery's threads pool, ``MAILGATE_WORKER_CONCURRENCY`` e-mails in
    flight (worker.pool), the mailgate queue, task events on for Flower, node name ``name``;
    ``extra``: more Celery options."""
    return [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "worker.app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(settings.worker_concurrency),
        "-Q",
        QUEUE,
        "-E",
        "-n",
        name,
        "--loglevel",
        "INFO",
        *extra,
    ]


def flower_argv(address: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """Flower on the worker app (which hands it MAILGATE_FLOWER_BASIC_AUTH and refuses an
    address beyond loopback without one); ``extra``: more Flower options."""
    return [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "worker.app",
        "flower",
        f"--address={address}",
        f"--port={port}",
        *extra,
    ]


def run_workers(settings: Settings, name: str, extra: Sequence[str] = ()) -> int:
    """``mailgate worker``: ``settings.worker_processes`` worker processes (one process is
    bound to one core by the GIL), node names ``<name>-<n>@%h``.

    One process: this one becomes the worker (exec), so signals reach Celery itself. Several:
    they share this process group (a signal to the group reaches each once), die with this
    process, and are stopped together; the exit code is that of the first to stop.
    """
    count = settings.worker_processes or os.cpu_count() or 1
    if count <= 1:
        argv = worker_argv(settings, f"{name}@%h", extra)
        os.execv(argv[0], argv)  # noqa: S606 (no shell: the arguments as they are)
    children: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()

    def stop_all(signum: int, frame: FrameType | None = None) -> None:
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(passed_on(signum))

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop_all)
    for index in range(1, count + 1):
        argv = worker_argv(settings, f"{name}-{index}@%h", extra)
        children.append(subprocess.Popen(argv, preexec_fn=die_with_parent()))
    code = os.waitpid(-1, 0)  # the first to stop (or all of them, on a stop signal)
    first = next((c for c in children if c.pid == code[0]), None)
    if first is not None:
        first.returncode = os.waitstatus_to_exitcode(code[1])
    if not stopping.is_set():
        stop_all(signal.SIGTERM)
    for child in children:
        child.wait()
    return int(first.returncode if first is not None else 0)
