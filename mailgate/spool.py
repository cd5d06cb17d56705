"""The upload spool: a private folder where uploaded attachments wait until their e-mail is final.

Files get random names (the caller's file name travels in the job), are created 0600 in a 0700
folder, and are deleted once the e-mail is Sent, Failed or Cancelled, when the request that
brought them is refused, or by the worker's sweep once older than the status record's lifetime.
The worker reads them with the same checks as any attachment, the spool being an implicit root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from pathlib import Path

from mailgate.config import Settings
from mailgate.jobs import EmailJob

log = logging.getLogger(__name__)


def spool_root(settings: Settings) -> Path:
    """The spool folder, resolved (symlinks followed) and created private if missing."""
    folder = Path(os.path.realpath(settings.spool_dir))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def create(root: Path) -> tuple[str, int]:
    """A new empty spool file: (its path, a descriptor open for writing)."""
    path = str(root / uuid.uuid4().hex)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return path, os.open(path, flags, 0o600)


def is_spooled(path: str, root: Path) -> bool:
    """Whether ``path`` is a file of the spool (not a path attachment under some root)."""
    return Path(path).parent == root


def discard(paths: list[str]) -> None:
    """Delete spool files; one already gone is fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def discard_spooled(job: EmailJob, settings: Settings) -> None:
    """Delete the uploads of an e-mail that will never be sent (again)."""
    root = spool_root(settings)
    discard([a.path for a in job.attachments if is_spooled(a.path, root)])


def sweep(settings: Settings, now: float | None = None) -> int:
    """Delete spool files older than a status record lives: their e-mail is gone (or never
    was: a request cut off between spooling and its answer). The number deleted."""
    root = spool_root(settings)
    oldest = (time.time() if now is None else now) - settings.status_ttl_seconds
    removed = 0
    with os.scandir(root) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < oldest:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
    if removed:
        log.info("swept %d expired upload(s) from the spool", removed)
    return removed
