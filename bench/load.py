"""Load generators: wrk when it is installed, else the Python client (``bench.client``).

Both run as separate processes on this machine and return a :class:`LoadResult`. wrk reports
through ``wrk_report.lua`` (its ``done`` hook prints one JSON line), so only the summary costs
Lua time, never a request. wrk cannot check the XML ``<Code>`` of each answer, so callers that
care count what the server recorded instead; the Python client checks each body itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import payload
from bench.servers import BenchError

LUA_REPORT = Path(__file__).with_name("wrk_report.lua")
JSON_MARK = "BENCH_JSON "


@dataclass(frozen=True)
class LoadResult:
    """One load run, as either generator reports it."""

    requests: int
    ok: int | None
    """Answers with Code 200 (the Python client); None when unknown (wrk)."""
    errors: int
    seconds: float
    started_at: float
    ended_at: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def wrk_version(binary: str) -> str:
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    lines = (result.stdout or result.stderr).strip().splitlines()
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer" -> "wrk debian/4.1.0-3+b2"
    return lines[0].split(" [", 1)[0].split(" Copyright", 1)[0] if lines else "wrk"


def run_wrk(
    binary: str, url: str, connections: int, seconds: float, form: str | None = None
) -> LoadResult:
    """wrk with as many threads as cores (at most one per connection) for ``seconds``; with
    ``form``, each request POSTs it (``application/x-www-form-urlencoded``) to ``url``."""
    threads = max(1, min(os.cpu_count() or 1, connections))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder:
        script = Path(folder) / "report.lua"
        script.write_text(
            post_lua(form) + LUA_REPORT.read_text() if form else LUA_REPORT.read_text()
        )
        args = [
            binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(script), url,
        ]  # fmt: skip
        started_at = time.time()
        result = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        ended_at = time.time()
    lines = [line for line in result.stdout.splitlines() if line.startswith(JSON_MARK)]
    if result.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    data = json.loads(lines[-1][len(JSON_MARK) :])
    return LoadResult(
        requests=int(data["requests"]),
        ok=None,
        errors=int(data["errors"]),
        seconds=data["duration_us"] / 1e6,
        started_at=started_at,
        ended_at=ended_at,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


def post_lua(form: str) -> str:
    """wrk's request set up as a form POST of ``form`` (once, at start: no per-request Lua)."""
    if "]==]" in form:
        raise BenchError("the form cannot be written as a Lua long string")
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f"wrk.body = [==[{form}]==]\n"
    )


def run_python(
    url: str,
    connections: int,
    seconds: float,
    count: int | None = None,
    rate: float | None = None,
    shape: str | None = None,
    voicemail: Path | None = None,
) -> LoadResult:
    """The asyncio client in a child process; ``count``, ``rate``, ``shape`` and
    ``voicemail`` as in ``bench.client``."""
    args = [sys.executable, "-m", "bench.client", url, "--connections", str(connections),
            "--seconds", str(seconds)]  # fmt: skip
    if count is not None:
        args += ["--count", str(count)]
    if rate is not None:
        args += ["--rate", f"{rate:.3f}"]
    if shape is not None:
        args += ["--shape", shape]
    if voicemail is not None:
        args += ["--voicemail", str(voicemail)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise BenchError(f"bench.client failed ({result.returncode}): {result.stderr[-2000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return LoadResult(
        requests=int(data["requests"]),
        ok=int(data["ok"]),
        errors=int(data["errors"]),
        seconds=float(data["seconds"]),
        started_at=float(data["started_at"]),
        ended_at=float(data["ended_at"]),
        p50_ms=float(data["p50_ms"]),
        p99_ms=float(data["p99_ms"]),
    )


@dataclass(frozen=True)
class Generator:
    """The closed-loop generator this run uses for the accept figures."""

    name: str
    wrk: str | None

    @classmethod
    def choose(cls, preference: str) -> Generator:
        """``auto`` takes wrk when it is on PATH; ``wrk`` insists on it; ``python`` never."""
        binary = wrk_binary() if preference in ("auto", "wrk") else None
        if preference == "wrk" and binary is None:
            raise BenchError("--generator wrk: wrk is not installed (apt-get install wrk)")
        if binary is not None:
            return cls(
                f"{wrk_version(binary)}, one thread per core, for closed-loop load; "
                "bench.client (Python) for the backlog fill and paced load",
                binary,
            )
        return cls("bench.client (Python asyncio, keep-alive, one process; wrk not installed)",
                   None)  # fmt: skip

    def run(
        self,
        url: str,
        connections: int,
        seconds: float,
        shape: str | None = None,
        voicemail: Path | None = None,
    ) -> LoadResult:
        """Closed-loop load on ``url``: its GET, or with ``shape`` that shape's SendEmail form
        POSTed (``voicemail``: the WAV the voicemail shape attaches)."""
        if self.wrk is not None:
            form = None
            if shape is not None:
                form = payload.form(payload.SHAPES[shape], voicemail)
            return run_wrk(self.wrk, url, connections, seconds, form)
        return run_python(url, connections, seconds, shape=shape, voicemail=voicemail)
