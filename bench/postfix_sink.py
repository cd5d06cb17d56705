"""Postfix's ``smtp-sink``, a C SMTP sink far lighter than any Python one, as a bench sink.

It runs with ``-c``: after each message it writes its running count (``... mesg=N``) to its
output, which goes to its log. A thread follows the log and notes when the count first moved
and when it last moved since the last :meth:`PostfixSink.reset`, so drains are timed from the
first to the last 250 as with :mod:`bench.sink`. smtp-sink does not look at Message-IDs:
:meth:`times` is empty and duplicates cannot be told apart (the end-to-end phase takes its
250 times from the status records' ``sent_at`` instead).

Debian ships it in the ``postfix`` package: ``apt-get install postfix`` (``make bench`` does
that as root when it is missing).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

from bench.servers import BenchError, Process, Stack, wait_for
from mailgate.cli.dev.embedded import free_port

_COUNT = re.compile(rb"mesg=(\d+)")
SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
)


class PostfixSink:
    """smtp-sink in its own process, with the counting interface of ``bench.sink.SinkClient``."""

    def __init__(self, stack: Stack) -> None:
        if SMTP_SINK is None:
            raise BenchError("smtp-sink not found: install Debian's postfix package")
        self.smtp_port = free_port()
        args = [SMTP_SINK, "-c", "-u", "nobody", f"127.0.0.1:{self.smtp_port}", "1024"]
        self.process: Process = stack.start("smtp-sink", args)
        self._lock = threading.Lock()
        self._seen = 0
        self._base = 0
        self._first = 0.0
        self._last = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._follow, daemon=True).start()
        wait_for(self._answers, 15, "smtp-sink")

    def _answers(self) -> bool:
        import socket

        self.process.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1) as conn:
                return conn.recv(64).startswith(b"220")
        except OSError:
            return False

    def _follow(self) -> None:
        offset, tail = 0, b""
        while not self._stop.is_set():
            try:
                with open(self.process.log, "rb") as log:
                    log.seek(offset)
                    chunk = log.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                found = _COUNT.findall(tail + chunk)
                tail = chunk[-32:]
                if found:
                    now = time.time()
                    with self._lock:
                        count = int(found[-1])
                        if count > self._seen:
                            if self._seen == self._base:
                                self._first = now
                            self._seen, self._last = count, now
            time.sleep(0.005)

    def count(self) -> dict[str, float]:
        with self._lock:
            n = self._seen - self._base
            return {"total": n, "unique": n, "first": self._first, "last": self._last}

    def unique(self) -> int:
        return int(self.count()["unique"])

    def times(self) -> dict[str, float]:
        return {}

    def reset(self) -> None:
        time.sleep(0.05)  # let the follower catch up with what was already written
        with self._lock:
            self._base = self._seen
            self._first = self._last = 0.0

    def close(self) -> None:
        self._stop.set()
