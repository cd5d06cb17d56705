"""Celery's and Flower's own output as mailgate's log lines.

With ``MAILGATE_LOG_FORMAT=json`` (the default) a ``celery worker`` or ``celery flower`` process
on this app writes one JSON object per line, each naming the process (``worker``, ``flower``):

- the root logger gets mailgate's JSON handler before Celery or tornado would set up theirs
  (Celery leaves logging alone when a ``setup_logging`` receiver is connected; tornado adds no
  handler to a root logger that has one), so Celery's lines (mingle, ready, task errors) and
  Flower's tornado lines are JSON;
- Python warnings (Celery's SecurityWarning when run as root) become log lines;
- the worker's start-up banner (ASCII art over 25 lines on stdout) becomes one line;
- the shutdown notices Celery writes straight to the terminal become JSON lines too.

In either format, Flower's "Inspect method ... failed" warning for an inspection that no worker
answered (none running yet, as at every start) is dropped; a failed connection still shows.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from celery.signals import celeryd_after_setup, celeryd_init, setup_logging

from mailgate.library_fixes import shutdown_notices_as_json
from mailgate.logs import configure_logging, json_logs

INSPECT_UNANSWERED = "Inspect method %s failed"
"""flower.inspector's message when no worker answered an inspection (no exception attached)."""


def role(argv: Sequence[str]) -> str | None:
    """``worker`` or ``flower`` for a ``celery`` command line on this app, None for anything
    else (a test run that imports the app, ``celery inspect``)."""
    if not argv or not os.path.basename(argv[0]).startswith("celery"):
        return None
    for arg in argv[1:]:
        if arg in ("worker", "flower"):
            return arg
    return None


class UnansweredInspections(logging.Filter):
    """Drops Flower's warning that an inspection got no answer: at start no worker is up yet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != INSPECT_UNANSWERED


def setup(argv: Sequence[str]) -> None:
    """Called as worker.app is imported: set up the log lines of a worker or Flower process."""
    name = role(argv)
    if name == "flower":
        logging.getLogger("flower.inspector").addFilter(UnansweredInspections())
    if name is None or not json_logs():
        return
    configure_logging(process=name)
    logging.captureWarnings(True)
    setup_logging.connect(_keep_ours, weak=False)
    celeryd_init.connect(_no_banner, weak=False)
    celeryd_after_setup.connect(_banner_line, weak=False)
    shutdown_notices_as_json(name)  # a patch on Celery (mailgate.library_fixes)


def _keep_ours(loglevel: int | None = None, **_: Any) -> None:
    """Celery's setup_logging: ours stays (a receiver means Celery configures nothing)."""
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def _no_banner(instance: Any = None, **_: Any) -> None:
    """Celery prints its banner unless quiet: it becomes one log line (below) instead."""
    if instance is not None:
        instance.quiet = True


def _banner_line(sender: str, instance: Any = None, **_: Any) -> None:
    """What the banner tells (node, version, transport, concurrency, queues), as one line."""
    if instance is None:
        return
    text = instance.startup_info(artlines=False)
    parts = [re.sub(r"\s+", " ", line.replace(".>", "")).strip() for line in text.splitlines()]
    kept = [part for part in parts if part and not re.fullmatch(r"\[\w+\]", part)]
    logging.getLogger("celery.apps.worker").info("; ".join(kept))
