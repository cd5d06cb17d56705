"""Connecting to Redis: one server by URL, or the master that a group of Redis Sentinels names.

A Sentinel URL lists the sentinels, then the master's name and the database::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db][?sentinel_password=...]

``sentinel://`` is the same, and kombu's own list (``sentinel://h1:26379;sentinel://h2:26379``)
is read too. The password in the URL is the master's (and its replicas'); the sentinels' own
password, if they have one, is ``sentinel_password``. The status store, the rate limiter and
the Celery broker all connect through the URL, so one value configures every side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")
REDIS_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379


def is_redis(url: str) -> bool:
    """True for a Redis URL (one server or a Sentinel group): the one answer to "is the broker
    Redis?"; anything else mailgate accepts as a broker is RabbitMQ."""
    return urlsplit(url).scheme in REDIS_SCHEMES


def is_sentinel(url: str) -> bool:
    """True for a Redis Sentinel URL."""
    return urlsplit(url).scheme in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelTarget:
    """The sentinels to ask, the master group they watch, and how to log in to each."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, master: str = "", sentinel_password: str = "") -> SentinelTarget:
        """Read a Sentinel URL; ``master`` and ``sentinel_password`` fill what it leaves out.

        Raises ValueError (with a message fit for the user) on anything malformed.
        """
        parts = [urlsplit(part.strip()) for part in url.split(";") if part.strip()]
        if not parts or any(p.scheme not in SENTINEL_SCHEMES for p in parts):
            raise ValueError("a Sentinel URL must start with redis+sentinel:// or sentinel://")
        first = parts[0]
        sentinels = []
        for part in parts:
            for location in part.netloc.rpartition("@")[2].split(","):
                host, _, port = location.rpartition(":") if ":" in location else (location, "", "")
                if not host:
                    raise ValueError("names no sentinel host")
                if port and not port.isdigit():
                    raise ValueError(f"has an invalid sentinel port {port!r}")
                sentinels.append((host.strip("[]"), int(port or DEFAULT_SENTINEL_PORT)))
        named, db = "", 0
        for segment in (s for s in first.path.split("/") if s):
            if segment.isdigit():
                db = int(segment)
            elif named:
                raise ValueError("names two masters: use /master_name/db")
            else:
                named = unquote(segment)
        if named and master and named != master:
            raise ValueError(f"names master {named!r}, MAILGATE_REDIS_SENTINEL_MASTER {master!r}")
        query = {k: v[-1] for k, v in parse_qs(first.query).items()}
        unknown = set(query) - {"sentinel_password"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
        if not (named or master):
            raise ValueError(
                "names no master: add /master_name to the URL or set MAILGATE_REDIS_SENTINEL_MASTER"
            )
        return cls(
            sentinels=tuple(sentinels),
            master=named or master,
            db=db,
            username=unquote(first.username) if first.username else None,
            password=unquote(first.password) if first.password else None,
            sentinel_password=query.get("sentinel_password") or sentinel_password or None,
        )

    def url(self) -> str:
        """The canonical ``redis+sentinel://`` URL of this target (it parses back to it)."""
        query = urlencode({"sentinel_password": self.sentinel_password or ""})
        return self._url("redis+sentinel", f"/{quote(self.master)}/{self.db}") + (
            f"?{query}" if self.sentinel_password else ""
        )

    def kombu_url(self) -> str:
        """kombu's notation: one ``sentinel://`` URL per sentinel, ``;``-separated."""
        return ";".join(
            f"sentinel://{self._auth()}{host}:{port}/{self.db}" for host, port in self.sentinels
        )

    def sentinel_kwargs(self, **timeouts: Any) -> dict[str, Any]:
        """What the connections to the sentinels themselves need (never the master's password
        unless it is theirs too)."""
        return {**timeouts, "password": self.sentinel_password}

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client of the current master; it finds the new one after a failover."""
        timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels), sentinel_kwargs=self.sentinel_kwargs(**timeouts), **kwargs
        )
        master = sentinel.master_for(  # type: ignore[no-untyped-call]
            self.master, db=self.db, username=self.username, password=self.password
        )
        return cast(redis.Redis, master)

    def identity(self) -> tuple[frozenset[tuple[str, int]], str, int]:
        """What makes two targets the same database, whatever the order of the sentinels."""
        return frozenset(self.sentinels), self.master, self.db

    def _auth(self) -> str:
        if self.password is None and self.username is None:
            return ""
        user = quote(self.username or "", safe="")
        return f"{user}:{quote(self.password or '', safe='')}@"

    def _url(self, scheme: str, path: str) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{scheme}://{self._auth()}{hosts}{path}"


_URL_PASSWORD = re.compile(r"(://[^:/@;,]*:)[^@/]*@")
_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&]*")


def display_url(url: str) -> str:
    """The URL with every password in it masked, to name a Redis in a message or a log line."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))


POOL_MARGIN = 8
"""Connections a pool may open beyond one per request or delivery thread (a scheduler, a
metrics scrape, a connection being replaced)."""


def pool_size(threads: int) -> int:
    """The most connections one client's pool may open in a process of ``threads`` threads.

    redis-py's pool opens at most 100 and answers any further thread with MaxConnectionsError
    (a 503) instead of waiting: each thread holds at most one connection of a client at a time,
    so a pool of one per thread never runs out.
    """
    return threads + POOL_MARGIN


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client for ``url``: one server, or the master of a Sentinel group."""
    if is_sentinel(url):
        return SentinelTarget.parse(url).client(**kwargs)
    return redis.Redis.from_url(url, **kwargs)


def same_redis(a: str, b: str) -> bool:
    """True when both URLs name the same Redis database."""
    if is_sentinel(a) and is_sentinel(b):
        return SentinelTarget.parse(a).identity() == SentinelTarget.parse(b).identity()
    return a == b
