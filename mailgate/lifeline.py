"""Nothing outlives the command that started it (``mailgate run``, ``mailgate supervise``, honcho).

A closed terminal sends SIGHUP to its session only, and a SIGKILL reaches one process: children
in sessions of their own (honcho's, and ``mailgate supervise``'s) would live on, holding their
ports, and a supervisor would even start them again. So each link of a process tree is tied to
the one above it:

- :func:`die_with_parent`: a child we start gets a signal from Linux when we die
  (``PR_SET_PDEATHSIG``, set between fork and exec; it survives the exec);
- :func:`bind_to_parent`: the same for the calling process itself;
- :func:`watch_owners`: a thread that notices when the processes that started us are gone, also
  those above our parent. honcho's reader of each process is a fork of honcho that does not
  die with it, and a ``sh -c`` line (the Procfile's, run by honcho) stays between it and us.

Linux only: elsewhere these do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

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
