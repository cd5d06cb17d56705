"""``mailgate supervise [--name NAME] -- CMD ...``: run a command and start it again whenever it
exits.

For process managers that give up when a child exits: under honcho (the Procfile, ``mailgate
run``) one process exiting stops all the others, so a worker that died would take the API with
it. Here the command is started again after a pause (1 s, doubling up to 30 s while it keeps
exiting quickly); SIGTERM or SIGINT is passed on to it once (SIGHUP as SIGTERM), and then this
process exits with its exit code. The child runs in its own process group, so a signal to ours
(honcho sends to the whole group) reaches it exactly once, through us.

Nothing outlives the supervisor, nor the supervisor the process manager that started it
(mailgate.lifeline): the child gets SIGTERM if we die, and when whatever started us is gone (a
closed terminal, a SIGKILL to honcho or ``mailgate run``) we stop the child as on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from mailgate.lifeline import alive, bind_to_parent, die_with_parent, watch_owners

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
