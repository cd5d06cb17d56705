"""Hostile HTTP against the real API servers: `mailgate web` (granian) as the Procfile runs it,
and gunicorn with api.gunicorn_conf, the documented alternative: slow clients, odd request
lines whose logs must not show the password, parallel password guessing."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import redis

from mailgate.users import UserStore
from tests.support import (
    RedisServer,
    Service,
    answers,
    free_port,
    gunicorn_args,
    wait_for,
    web_args,
)

pytestmark = pytest.mark.integration  # real processes of its own


class Server:
    """One API server of this module, with its own log file."""

    def __init__(self, service: Service, port: int) -> None:
        self.service = service
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.service.output()


SERVERS = {
    # With its access log on, so that every request (ours, the marker) leaves a line to check.
    "granian": lambda: [*web_args(), "--access-log"],
    "gunicorn": gunicorn_args,
}


@pytest.fixture(
    scope="module",
    params=[(name, fmt) for name in SERVERS for fmt in ("json", "text")],
    ids=lambda p: "-".join(p),
)
def server(
    request: pytest.FixtureRequest,
    env: dict[str, str],
    workdir: Path,
    users: UserStore,
    redis_server: RedisServer,
) -> Iterator[Server]:
    """A server per kind and log format; its login throttles in a Redis database of their own."""
    kind, fmt = request.param
    port = free_port()
    own = {
        **env,
        "MAILGATE_PORT": str(port),
        "MAILGATE_LOG_FORMAT": fmt,
        "MAILGATE_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/3",
    }
    # Each server starts with no failed logins on record: the guesses of the servers before it
    # (all from 127.0.0.1) would otherwise fill the per-address limit within the minute.
    redis.Redis.from_url(own["MAILGATE_REDIS_URL"]).flushdb()
    log = workdir / f"web-hostile-{kind}-{fmt}.log"
    service = Service(f"web-{kind}-{fmt}", SERVERS[kind](), own, log).start()
    found = Server(service, port)
    wait_for(lambda: answers(f"{found.url}/healthz"), 30, "the API to answer /healthz")
    yield found
    service.stop()


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, return everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_slow_clients_do_not_starve_normal_requests(server: Server) -> None:
    stop = threading.Event()
    sockets = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)

    def trickle() -> None:
        n = 0
        while not stop.wait(0.5):
            n += 1
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        wait_for(lambda: stop.wait(0) or True, 1)  # the trickle is under way
        for _ in range(3):
            started = time.monotonic()
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as response:
                assert response.status == 200
            assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        dripper.join(5)
        for sock in sockets:
            sock.close()


def test_a_request_head_that_never_ends_is_cut_off(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 18:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            sock.settimeout(1)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed


SECRET_REQUESTS = {
    "raw-byte": b"GET /api?command=SendEmail&Username=u&Password={s}\x01 HTTP/1.1\r\n\r\n",
    "raw-byte-encoded-name": b"GET /api?command=SendEmail&Pass%77ord={s}\x7f HTTP/1.1\r\n\r\n",
    "space-in-query": b"GET /api?Password={s} and more HTTP/1.1\r\n\r\n",
    "bad-header": b"GET /api?PASSWORD={s} HTTP/1.1\r\nBad Header\r\n\r\n",
    "bad-version": b"GET /api?Pass%77ord={s} HTTP/9\r\n\r\n",
    "encoded-name": b"GET /api?command=SendEmail&Username=u&Pass%77ord={s} HTTP/1.1\r\n"
    b"Connection: close\r\n\r\n",
    "newline-in-path": b"GET /api%0aFORGED%0d%0aFORGED line?Password={s} HTTP/1.1\r\n"
    b"Connection: close\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(SECRET_REQUESTS.values()), ids=list(SECRET_REQUESTS))
def test_no_password_or_forged_line_in_the_logs(server: Server, raw: bytes) -> None:
    secret = f"S3cret{uuid.uuid4().hex}"
    _exchange(server.port, raw.replace(b"{s}", secret.encode()))
    # Requests answered after ours are logged after it: wait for one to show up.
    marker = f"/marker-{uuid.uuid4().hex}"
    _exchange(server.port, f"GET {marker} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    wait_for(lambda: marker in server.log(), 10, "the marker request in the log")
    log = server.log()
    assert secret[6:] not in log
    assert not [line for line in log.splitlines() if line.startswith("FORGED")]


def test_parallel_guesses_run_no_more_checks_than_the_limit(
    server: Server, users: UserStore
) -> None:
    name = f"victim-{uuid.uuid4().hex[:12]}"
    users.add(name, "right-pw")
    start = threading.Barrier(8)
    codes: list[str] = []

    def guess(thread: int) -> None:
        start.wait()
        for i in range(4):
            url = (f"{server.url}/api?command=SendEmail&Recipient=a@x.example&Message=m"
                   f"&Username={name}&Password=guess-{thread}-{i}")  # fmt: skip
            with urllib.request.urlopen(url, timeout=30) as response:
                codes.append(str(ET.fromstring(response.read()).findtext("Code")))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(codes) == 32
    assert codes.count("305") == 5  # the per-client limit, however the guesses interleave
    assert codes.count("429") == 27
