"""``mailgate supervise -- CMD ...``: run a command and start it again whenever it exits.

For process managers that give up when a child exits: under honcho (the Procfile, ``mailgate
run``) one process exiting stops all the others, so a worker that died would take the API with
it. Here the command is started again after a pause (1 s, doubling up to 30 s while it keeps
exiting quickly); SIGTERM, SIGINT or SIGHUP is passed on to it once, and then this process exits
with its exit code. The child runs in its own process group, so a signal to ours (honcho sends
to the whole group) reaches it exactly once, through us; on Linux it also gets SIGTERM if we
are killed outright.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
HEALTHY_SECONDS = 30.0
"""A child that ran this long was healthy: the next pause starts again from FIRST_PAUSE."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A preexec function that has Linux send the child SIGTERM when we die (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def supervise(argv: list[str], say: Callable[[str], None]) -> int:
    """Run ``argv`` until a stop signal arrives; the child's last exit code."""
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    pause = FIRST_PAUSE
    name = argv[0].rsplit("/", 1)[-1]
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
        say(f"mailgate supervise: {name} exited with code {code}; starting it again in {pause:g} s")
        if stop.wait(pause):
            return code
        pause = min(pause * 2, MAX_PAUSE)
