"""The processes a benchmark run starts: Redis, the SMTP sink, HTTP servers, Celery workers.

Every child runs in its own process group (its own session) with its output in a log file, and
:class:`Stack` stops whatever is still running, newest first, on any exit: the end of the run,
an exception or Ctrl-C. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

from mailgate.cli.dev.embedded import free_port, redis_args

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
"""The checkout: children get it on PYTHONPATH so that ``bench.*`` imports there too."""


class BenchError(RuntimeError):
    """A run that cannot go on: a process died, a wait timed out, a count did not add up."""


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check`` every 50 ms until it is truthy; :class:`BenchError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class Process:
    """One child process (a whole process group) with its output in ``log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} was not started")
        return self.proc.pid

    def start(self, cwd: Path) -> Process:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    def check_alive(self) -> None:
        """Raise with the end of the log if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def wait_output(self, pattern: str, timeout: float) -> None:
        """Wait until the log matches ``pattern`` (e.g. Celery's ``ready.``)."""

        def seen() -> bool:
            self.check_alive()
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            return re.search(pattern, text) is not None

        wait_for(seen, timeout, f"{self.name} to print {pattern!r}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the leader (a graceful stop), then SIGKILL to what is left in its group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children the leader left behind
        self.proc.wait(10)


class Stack:
    """The run's children; :meth:`close` stops all still running, newest first."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self._running: list[Process] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.workdir / f"{name}.log"
        process = Process(name, args, {**self.env, **(env or {})}, log)
        self._running.append(process)
        return process.start(self.workdir)

    def stop(self, process: Process) -> None:
        if process in self._running:
            self._running.remove(process)
        process.stop()

    def close(self) -> None:
        while self._running:
            self._running.pop().stop()


def child_env() -> dict[str, str]:
    """This environment without mailgate's variables, with the checkout on PYTHONPATH."""
    skip = ("MAILGATE_", "FLOWER_", "PROMETHEUS_", "NAIVE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_redis(stack: Stack) -> redis.Redis:
    """redis-server as ``mailgate run`` starts it: AOF with appendfsync everysec, loopback."""
    data = stack.workdir / "redis"
    data.mkdir()
    port = free_port()
    stack.start("redis", redis_args(port, data, "everysec"))
    client = redis.Redis(port=port, decode_responses=True)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_for(pings, 15, "redis to answer")
    return client


def redis_url(client: redis.Redis, db: int = 0) -> str:
    port = client.connection_pool.connection_kwargs["port"]
    return f"redis://127.0.0.1:{port}/{db}"


def start_web(stack: Stack, name: str, env: dict[str, str]) -> tuple[Process, str]:
    """mailgate's API as the Procfile's ``web`` line starts it (``mailgate web``: granian, one
    process per core), and its base URL."""
    port = free_port()
    server_env = {k: v for k, v in env.items() if k != "PORT"} | {"MAILGATE_PORT": str(port)}
    return _serve(stack, name, [str(VENV_BIN / "mailgate"), "web"], server_env, port)


GUNICORN_SYNC_WORKERS = 2


def start_gunicorn_sync(
    stack: Stack, name: str, app: str, env: dict[str, str]
) -> tuple[Process, str]:
    """``app`` the stock way to serve Flask: gunicorn's sync workers, one per core (2). The
    control socket (one fixed path per user) is off, so servers elsewhere on the host keep
    theirs."""
    port = free_port()
    args = [str(VENV_BIN / "gunicorn"), "--workers", str(GUNICORN_SYNC_WORKERS),
            "--bind", f"127.0.0.1:{port}", "--no-control-socket", app]  # fmt: skip
    return _serve(stack, name, args, env, port)


def _serve(
    stack: Stack, name: str, args: list[str], env: dict[str, str], port: int
) -> tuple[Process, str]:
    process = stack.start(name, args, env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        process.check_alive()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(healthy, 60, f"{name} to answer /healthz")
    return process, url


def mailgate_worker_args() -> list[str]:
    """The Procfile's ``worker`` line: ``mailgate worker`` (one Celery process per core, or
    ``MAILGATE_WORKER_PROCESSES``)."""
    return [str(VENV_BIN / "mailgate"), "worker"]


def naive_worker_args() -> list[str]:
    """Celery's defaults: prefork, one child per core, the ``celery`` queue."""
    app = "bench.baselines.naive_celery"
    return [str(VENV_BIN / "celery"), "-A", app, "worker", "-n", "naive@%h", "--loglevel", "INFO"]
