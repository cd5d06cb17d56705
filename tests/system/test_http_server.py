"""Hostile HTTP against the real API server, `mailgate web` (granian) as the Procfile runs it:
slow clients, odd request lines whose logs must not show the password or forge a field,
parallel password guessing, bursts of more requests than a default Redis pool holds."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="module", params=["json", "text"])
def server(
    request: pytest.FixtureRequest,
    env: dict[str, str],
    workdir: Path,
    users: UserStore,
    redis_server: RedisServer,
) -> Iterator[Server]:
    """A server per log format, its access log on (every request, ours and the marker, leaves
    a line to check); its login throttles in a Redis database of their own."""
    fmt = request.param
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
    log = workdir / f"web-hostile-{fmt}.log"
    service = Service(f"web-{fmt}", [*web_args(), "--access-log"], own, log).start()
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

    rounds: list[int] = []

    def trickle() -> None:
        n = 0
        while not stop.wait(0.5):
            n += 1
            sent = 0
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                    sent += 1
            rounds.append(sent)

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        # Under way: two rounds sent a header line on every one of the 50 connections.
        wait_for(lambda: rounds[-2:] == [50, 50], 5, "two rounds of the trickle")
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


ACCESS_LINE = re.compile(r'(\S+) "((?:[^"\\]|\\.)*)" (\d{3}) ([\d.]+)ms')
"""``addr "METHOD path" status 1.2ms`` with ``\\`` and ``"`` escaped inside the quotes."""


def access_lines(log: str) -> list[str]:
    """The access log's messages, from JSON or text lines."""
    found = []
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "granian.access":
                found.append(entry["message"])
        elif "granian.access: " in line:
            found.append(line.split("granian.access: ", 1)[1])
    return found


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/x%22%20500%200.1ms%20%22GET%20/forged", '/x" 500 0.1ms "GET /forged'),
        ('/x"%20500%200.1ms%20"GET%20/forged', '/x" 500 0.1ms "GET /forged'),
        ("/x%5C%22%20500%200.1ms%20%22GET%20/forged", '/x\\" 500 0.1ms "GET /forged'),
    ],
    ids=["encoded-quote", "raw-quote", "backslash-before-quote"],
)
def test_a_path_cannot_forge_fields_of_its_access_line(
    server: Server, target: str, path: str
) -> None:
    marker = uuid.uuid4().hex
    _exchange(server.port, f"GET {target}/{marker} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    wait_for(lambda: marker in server.log(), 10, "the access line")
    [line] = [line for line in access_lines(server.log()) if marker in line]
    parsed = ACCESS_LINE.fullmatch(line)
    assert parsed is not None, line
    request = re.sub(r"\\(.)", r"\1", parsed.group(2))
    assert (request, parsed.group(3)) == (f"GET {path}/{marker}", "404")


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
            url = (
                f"{server.url}/api?command=SendEmail&Recipient=a@x.example&Message=m"
                f"&Username={name}&Password=guess-{thread}-{i}"
            )
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


# --- bursts larger than redis-py's default pool of 100 connections -------------------------------

BURST = 150


@pytest.fixture(scope="module")
def paused_redis(workdir: Path) -> Iterator[RedisServer]:
    """A Redis of its own: the burst test pauses it."""
    server = RedisServer(workdir / "redis-burst")
    server.start()
    yield server
    server.stop()


def test_a_burst_larger_than_a_default_redis_pool_is_served(
    env: dict[str, str], workdir: Path, users: UserStore, paused_redis: RedisServer
) -> None:
    # One process with granian's default threads (512): every request thread may hold a
    # Redis connection at once. Redis paused, the burst's requests all wait on their
    # connection together, then all go on when it resumes: first /readyz (the status store's
    # pool), then SendEmail from an account with a send rate (the rate limiter's pools).
    name = f"burst-{uuid.uuid4().hex[:12]}"
    users.add(name, "burst-pw", rate="10000/minute")
    port = free_port()
    own = {**env, "MAILGATE_PORT": str(port), "MAILGATE_REDIS_URL": paused_redis.url}
    service = Service("web-burst", [*web_args(), "--workers", "1"], own, workdir / "web-burst.log")
    service.start()
    url = f"http://127.0.0.1:{port}"
    send = (
        f"{url}/api?command=SendEmail&Recipient=burst@x.example&Message=m"
        f"&Username={name}&Password=burst-pw"
    )
    try:
        wait_for(lambda: answers(f"{url}/readyz"), 30, "the API to answer /readyz")
        assert _code(send) == "200"  # the credentials are in the process's cache from now on
        assert _burst(paused_redis, lambda: _status(f"{url}/readyz")) == ["200"] * BURST
        assert _burst(paused_redis, lambda: _code(send)) == ["200"] * BURST
        # They did overlap: the API holds more connections than redis-py's default pool.
        assert len(paused_redis.client().client_list()) > 100
    finally:
        service.stop()


def _status(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)


def _code(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(ET.fromstring(response.read()).findtext("Code"))


def _burst(redis_server: RedisServer, call: Callable[[], str]) -> list[str]:
    """BURST calls at once while Redis is paused for 3 s; their answers."""
    start = threading.Barrier(BURST + 1)
    found: list[str] = []

    def one() -> None:
        start.wait()
        found.append(call())

    threads = [threading.Thread(target=one) for _ in range(BURST)]
    for thread in threads:
        thread.start()
    redis_server.client().execute_command("CLIENT", "PAUSE", "3000", "ALL")
    start.wait()
    for thread in threads:
        thread.join(60)
    return sorted(found)
