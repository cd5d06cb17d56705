"""Parsers for setting values: each takes the variable's text and returns the value, or raises
``ValueError`` with the reason (the settings reader adds the variable's name)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import webencodings
from limits import parse as parse_rate

from mailgate.redisconn import is_redis


def text(value: str) -> str:
    """Any text."""
    return value


def charset(value: str) -> str:
    """A charset label as WHATWG reads it (``latin1`` and ``ISO-8859-1`` are windows-1252, as
    browsers decode them): its canonical name. Only charsets that keep ASCII as ASCII, so the
    names, ``=`` and ``&`` of a form read the same in any of them."""
    encoding = webencodings.lookup(value)
    if encoding is None or encoding.name == "replacement":
        raise ValueError(f"unknown charset {value.strip()[:40]!r}")
    name: str = encoding.name
    if name in ("utf-16le", "utf-16be"):
        raise ValueError(f"{name} is not ASCII-compatible")
    return name


def log_format(value: str) -> str:
    """``text`` for plain lines; anything else means JSON (as mailgate always read it)."""
    return "text" if value.lower() == "text" else "json"


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be a positive number, got {value!r}")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"must be a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return number


def port(value: str) -> int:
    number = positive_int(value)
    if number > 65535:
        raise ValueError(f"must be a port from 1 to 65535, got {value!r}")
    return number


def redis_url(value: str) -> str:
    if not is_redis(value):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
    return value


def broker_url(value: str) -> str:
    if not is_redis(value) and urlsplit(value).scheme not in ("amqp", "amqps", "pyamqp"):
        raise ValueError(
            "must start with redis://, rediss://, redis+sentinel://, amqp:// or amqps://"
        )
    return value


def non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"must be a whole number, 0 or more, got {value!r}")
    return int(value)


def flag(value: str) -> bool:
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"must be 1 or 0, got {value!r}")
    return value.lower() in ("1", "true", "yes")


def roots(value: str) -> tuple[Path, ...]:
    roots = []
    for part in value.split(":"):
        if not part:
            continue
        path = Path(part)
        if not path.is_absolute():
            raise ValueError(f"{part!r} is not an absolute path")
        roots.append(Path(os.path.realpath(path)))
    return tuple(roots)


def domain_globs(value: str) -> tuple[str, ...]:
    globs = tuple(part.strip().lower() for part in value.split(",") if part.strip())
    for glob in globs:
        if not re.fullmatch(r"[^\s@,;]+", glob):
            raise ValueError(f"{glob!r} is not a domain or domain glob (e.g. *.example.com)")
    return globs


def path_map(value: str) -> tuple[tuple[str, str], ...]:
    r"""``C:\Recordings=/srv/recordings;\\pbx\share=/mnt/pbx``: Windows prefix = local folder."""
    entries = []
    for part in value.split(";"):
        if not part.strip():
            continue
        prefix, sep, folder = part.partition("=")
        prefix, folder = prefix.strip(), folder.strip()
        if not sep or not re.match(r"^(?:[A-Za-z]:|\\\\[^\\/]+)", prefix):
            raise ValueError(f"{part!r} is not WINDOWS_PREFIX=/local/folder (C:\\X=/srv/x)")
        if not Path(folder).is_absolute():
            raise ValueError(f"{folder!r} is not an absolute path")
        entries.append((prefix.replace("\\", "/").rstrip("/").lower(), folder))
    return tuple(entries)


def networks(value: str) -> tuple[str, ...]:
    networks = []
    for part in value.replace(",", " ").split():
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(f"{part!r} is not a network (use CIDR, e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(part.lower() for part in value.replace(",", " ").split())
    for entry in hosts:
        host, port = split_host_port(entry)
        if not re.fullmatch(r"[a-z0-9*.:-]+", host) or not (
            port is None or port == "*" or (port.isdigit() and 0 < int(port) < 65536)
        ):
            raise ValueError(f"{entry!r} is not a host, host:port or host pattern")
    return hosts


def split_host_port(entry: str) -> tuple[str, str | None]:
    """An allow-list entry as (host pattern, port, ``*`` or None for the default port).

    ``hooks.example:8443``, ``*.crm.example``, ``[::1]:8080``; a bare IPv6 address has no port.
    """
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, None


def rate(value: str) -> str:
    try:
        parse_rate(value)
    except ValueError:
        raise ValueError(f"must be a rate such as 5/minute, got {value!r}") from None
    return value


def hostname(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value):
        raise ValueError(f"must be a host name, got {value!r}")
    return value


def appendfsync(value: str) -> str:
    if value not in ("everysec", "always"):
        raise ValueError(f"must be everysec or always, got {value!r}")
    return value


_BOUNCE_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*/=?^_`{|}~-]+)*")


def bounce_address(value: str) -> str:
    """``bounces@bounce.example.com``: ASCII, no ``+`` (VERP adds ``+<EmailId>`` there)."""
    local, sep, domain = value.rpartition("@")
    if not sep or not _BOUNCE_LOCAL.fullmatch(local):
        raise ValueError(f"must be an ASCII address without + or quotes, got {value!r}")
    hostname(domain)
    return value


def basic_auth(value: str) -> str:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("must be user:password")
    return value


def dkim_keys(value: str) -> tuple[tuple[str, str, Path], ...]:
    """``example.com=sel1:/etc/mailgate/dkim/example.com.pem ...``: (domain, selector, key)."""
    keys: list[tuple[str, str, Path]] = []
    for entry in value.replace(",", " ").split():
        domain, sep, rest = entry.partition("=")
        selector, colon, path = rest.partition(":")
        domain = domain.lower().rstrip(".")
        if not sep or not colon or not domain or not selector:
            raise ValueError(f"{entry!r} is not domain=selector:/path/to/key.pem")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,252})", domain):
            raise ValueError(f"{domain!r} is not a domain")
        if not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,62})", selector):
            raise ValueError(f"{selector!r} is not a DKIM selector")
        if not Path(path).is_absolute():
            raise ValueError(f"{path!r} is not an absolute path")
        if any(known == domain for known, _, _ in keys):
            raise ValueError(f"{domain!r} has two keys")
        keys.append((domain, selector, Path(path)))
    return tuple(keys)
