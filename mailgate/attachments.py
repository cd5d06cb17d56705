"""The attachment sandbox: which files may be attached, checked by the API and the worker.

A path must be absolute, resolve (symlinks followed) inside one of the configured roots, and
name a regular readable file with a single link (a hard link could reach a file outside the
roots) and a file name a header can carry. The worker opens the file with ``O_NOFOLLOW`` and
checks what it actually opened (device, inode, ctime, size, mtime), so a file swapped after the
API's check is refused rather than sent.
"""

from __future__ import annotations

import io
import mimetypes
import ntpath
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from mailgate.headers import NotCarried, check_filename
from mailgate.jobs import Attachment
from mailgate.text import control_reason

_KERNEL_TREES = ("/proc/", "/sys/", "/dev/")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WINDOWS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
"""A drive path (``C:\\...``) or a UNC path (``\\\\host\\share...``)."""
_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
OPAQUE = "application/octet-stream"
_CONTAINERS = ("message/", "multipart/")
"""Types whose body is itself MIME: the file's bytes would have to be parsed and nested, not
attached as they are (in base64), so an ``.eml`` file goes as opaque bytes with its name."""
_MAX_NAMED = 5
"""Files named in one refusal of a path that several files match in any case."""
PathMap = tuple[tuple[str, str], ...]
"""(Windows prefix in :func:`windows_key` form, local folder), from MAILGATE_ATTACHMENT_PATH_MAP."""


class AttachmentRefused(ValueError):
    """The path is not one mailgate may read; the message says why (without file contents)."""


def windows_key(path: str) -> str:
    """A Windows or UNC path in the form prefixes are compared in: ``/`` separators, lower
    case (Windows drive and folder names are case-insensitive), no trailing separator."""
    return path.replace("\\", "/").rstrip("/").lower()


def map_path(raw: str, path_map: PathMap, roots: Sequence[Path] = ()) -> str:
    """The local path of a Windows or UNC path; any other path unchanged. The result still goes
    through :func:`check_path`.

    The path is read as Windows reads it: ``.`` and ``..`` resolved first (never above the drive
    or the share), so a climb out of a mapped prefix is refused rather than mapped; the longest
    matching prefix wins; and the rest finds its file as Windows would, in any case
    (:func:`_find_in_any_case`).
    """
    if not _WINDOWS.match(raw):
        return raw
    resolved = ntpath.normpath(raw)
    names = resolved.replace("\\", "/").split("/")
    for prefix, folder in sorted(path_map, key=lambda entry: len(entry[0]), reverse=True):
        wanted = prefix.split("/")
        if [name.lower() for name in names[: len(wanted)]] == wanted:
            rest = [name for name in names[len(wanted) :] if name]
            return _find_in_any_case(folder, rest, roots)
    shown = (
        f" ({raw} is {resolved} on Windows)" if ".." in raw.replace("\\", "/").split("/") else ""
    )
    raise AttachmentRefused(
        f"a Windows or UNC path with no matching entry in MAILGATE_ATTACHMENT_PATH_MAP{shown}"
    )


def _find_in_any_case(folder: str, names: Sequence[str], roots: Sequence[Path]) -> str:
    """The local path of ``names`` under ``folder``, each name found as Windows finds it: the
    entry of that exact name, else the one entry that differs only in case. Where several do,
    the path is refused naming them. Folders outside the roots are never listed (their names
    are nobody's business; check_path refuses the path anyway)."""
    path = folder.rstrip("/") or "/"
    for name in names:
        exact = os.path.join(path, name)
        if os.path.lexists(exact) or not _inside(os.path.realpath(path), roots):
            path = exact
            continue
        try:
            with os.scandir(path) as entries:
                found = sorted(e.name for e in entries if _upper(e.name) == _upper(name))
        except (OSError, ValueError):
            found = []
        if len(found) > 1:
            listed = ", ".join(found[:_MAX_NAMED]) + (", ..." if len(found) > _MAX_NAMED else "")
            raise AttachmentRefused(f"{len(found)} files match {name} in any case: {listed}")
        path = os.path.join(path, found[0] if found else name)
    return path


def _upper(name: str) -> str:
    # Windows compares names character by character in upper case (its $UpCase table): "ß" is
    # not "SS" there, so a character whose upper case is longer stays as it is.
    return "".join(u if len(u := c.upper()) == 1 else c for c in name)


def content_type(declared: str, filename: str) -> str:
    """The MIME type an attachment is sent as: the one an upload declared, else the one its
    file name suggests, else ``application/octet-stream``; never a ``message/*`` or
    ``multipart/*`` type, which no file can be attached as (see :data:`_CONTAINERS`)."""
    found = declared.split(";", 1)[0].strip().lower()
    if not _TYPE.fullmatch(found) or found == OPAQUE:
        guessed, encoding = mimetypes.guess_type(filename)
        found = OPAQUE if guessed is None or encoding is not None else guessed.lower()
    return OPAQUE if found.startswith(_CONTAINERS) else found


def check_path(raw: str, roots: Sequence[Path]) -> Attachment:
    """Validate one attachment path at request time and describe the file found there."""
    if not roots:
        raise AttachmentRefused("attachments are disabled (MAILGATE_ATTACHMENT_ROOTS is empty)")
    reason = control_reason(raw)
    if reason:
        raise AttachmentRefused(f"{reason} in the path")
    if raw.startswith("\\\\") or _SCHEME.match(raw):
        raise AttachmentRefused("only local absolute paths are accepted")
    if not raw.startswith("/"):
        raise AttachmentRefused("path is not absolute")
    real = os.path.realpath(raw)
    if real.startswith(_KERNEL_TREES):
        raise AttachmentRefused("kernel and device files are never attached")
    if not _inside(real, roots):
        raise AttachmentRefused("path is outside the attachment roots")
    try:
        info = os.stat(real)
    except OSError:
        raise AttachmentRefused("file does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise AttachmentRefused("not a regular file")
    if info.st_nlink > 1:
        raise AttachmentRefused("the file has more than one hard link")
    if not os.access(real, os.R_OK):
        raise AttachmentRefused("file is not readable")
    try:
        check_filename(os.path.basename(real))
    except NotCarried as exc:
        raise AttachmentRefused(f"file name: {exc}") from None
    return Attachment(
        path=real,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        device=info.st_dev,
        inode=info.st_ino,
        ctime_ns=info.st_ctime_ns,
    )


def open_checked(attachment: Attachment, roots: Sequence[Path]) -> io.BufferedReader:
    """Open a file accepted earlier for reading, refusing it if it moved, changed or left the
    sandbox (the reader still checks that it reads exactly ``attachment.size`` bytes)."""
    try:
        fd = os.open(attachment.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise AttachmentRefused("file vanished or became a link") from None
    try:
        _check_opened(fd, attachment, roots)
    except BaseException:
        os.close(fd)
        raise
    # Checked before fdopen: open() itself refuses a folder with IsADirectoryError.
    return os.fdopen(fd, "rb")


def read_checked(attachment: Attachment, roots: Sequence[Path]) -> bytes:
    """Read a file accepted earlier, refusing it if it moved, changed or left the sandbox."""
    with open_checked(attachment, roots) as handle:
        data = handle.read(attachment.size + 1)
    if len(data) != attachment.size:
        raise AttachmentRefused("file changed after the e-mail was accepted")
    return data


def _check_opened(fd: int, attachment: Attachment, roots: Sequence[Path]) -> None:
    """What was opened must be the file accepted: regular, inside the roots, unchanged."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise AttachmentRefused("not a regular file")
    opened = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None
    if opened is not None and not _inside(opened, roots):
        raise AttachmentRefused("path is outside the attachment roots")
    if info.st_nlink > 1:
        raise AttachmentRefused("the file has more than one hard link")
    if not _same_file(info, attachment):
        raise AttachmentRefused("file changed after the e-mail was accepted")


def _same_file(info: os.stat_result, attachment: Attachment) -> bool:
    seen = (info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino, info.st_ctime_ns)
    kept = (
        attachment.size,
        attachment.mtime_ns,
        attachment.device,
        attachment.inode,
        attachment.ctime_ns,
    )
    # Older records lack device, inode and ctime (None): compare what they hold.
    return all(want is None or want == got for got, want in zip(seen, kept, strict=True))


def _inside(real: str, roots: Sequence[Path]) -> bool:
    path = Path(real)
    return any(path.is_relative_to(root) for root in roots)
