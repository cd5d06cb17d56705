"""Flower runs on this app (``celery -A worker.app flower``): give it mailgate's login.

Flower reads its own ``FLOWER_*`` variables when its command starts, after this app is loaded,
so ``MAILGATE_FLOWER_BASIC_AUTH`` is passed on here; and a Flower reachable beyond loopback
without a login is refused outright, since it shows every task and can revoke them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence

from mailgate.config import Settings
from mailgate.errors import ConfigError


def flower_address(argv: Sequence[str]) -> str | None:
    """The ``--address`` a ``celery ... flower`` command line asks for; None if not Flower."""
    if "flower" not in argv:
        return None
    address = os.environ.get("FLOWER_ADDRESS", "")
    for i, arg in enumerate(argv):
        if arg.startswith("--address="):
            address = arg.split("=", 1)[1]
        elif arg == "--address" and i + 1 < len(argv):
            address = argv[i + 1]
    return address


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def guard_flower(argv: Sequence[str], settings: Settings) -> None:
    """Hand Flower its login; refuse to expose it without one."""
    address = flower_address(argv)
    if address is None:
        return
    if settings.flower_basic_auth:
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    elif not os.environ.get("FLOWER_BASIC_AUTH") and not is_loopback(address):
        # Flower with no --address listens on every interface.
        raise ConfigError(
            "MAILGATE_FLOWER_BASIC_AUTH",
            f"required when Flower listens beyond loopback (address {address or '0.0.0.0'!r})",
        )
