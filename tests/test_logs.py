"""Log helpers every process shares: secrets masked, query strings dropped, no forged lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mailgate.cli.procs import process_name
from mailgate.cli.server import THREADS_WARNING
from mailgate.logs import escape_controls, redact
from tests.support import (
    VENV_BIN,
    RedisServer,
    Service,
    answers,
    free_port,
    mailgate_env,
    wait_for,
)
from worker.logs import role


@pytest.mark.parametrize(
    "text",
    ["Password=hunter2", "PASSWORD: hunter2", "Pass%77ord=hunter2", "%50assword%3Dhunter2",
     "p%41ssword='hunter2'"],
    ids=["plain", "colon", "encoded-letter", "encoded-first-and-equals", "quoted"],
)  # fmt: skip
def test_password_is_masked_in_any_spelling(text: str) -> None:
    assert "hunter2" not in redact(f"GET /api?x=1&{text}&y=2")


@pytest.mark.parametrize(
    "char", ["\n", "\r", "\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
)
def test_control_characters_are_escaped(char: str) -> None:
    escaped = escape_controls(f"a{char}FORGED")
    assert escaped.isprintable() and escaped.endswith("FORGED") and len(escaped) > 7


def _json_lines(service: Service) -> list[dict[str, object]]:
    """Every line the process wrote, each of which must be one JSON object."""
    entries = []
    for line in service.output().splitlines():
        entry = json.loads(line)  # a plain line fails here, and names itself
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


@pytest.mark.integration
def test_every_process_writes_one_json_object_per_line(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The default format, from the first line to the last: the worker (Celery's warnings,
    banner, mingle and shutdown lines), Flower (tornado's lines), the API (granian's) and a
    supervisor, each line naming its process. Known start-up noise is gone: Flower's warnings
    for inspections no worker answered yet, granian's about its thread pool."""
    url = redis_server.url.rsplit("/", 1)[0] + "/6"  # a database no other worker consumes
    env = mailgate_env(tmp_path, url, "smtp://127.0.0.1:9")
    assert "MAILGATE_LOG_FORMAT" not in env  # the production default
    mailgate = str(VENV_BIN / "mailgate")
    flower_port = free_port()
    services = {
        "flower": Service(
            "flower", [mailgate, "flower", "--port", str(flower_port)], env, tmp_path / "flower.log"
        ),
        "worker": Service(
            "worker",
            [
                mailgate,
                "worker",
                "--processes",
                "1",
                "--name",
                f"json-{os.getpid()}",
                "--without-gossip",
            ],
            env,
            tmp_path / "worker.log",
        ),
        "web": Service("web", [mailgate, "web", "--workers", "1"], env, tmp_path / "web.log"),
        "exiter": Service(
            "supervise",
            [
                mailgate,
                "supervise",
                "--name",
                "exiter",
                "--",
                sys.executable,
                "-c",
                "raise SystemExit(3)",
            ],
            env,
            tmp_path / "supervise.log",
        ),
    }
    try:
        services["flower"].start()
        services["flower"].wait_output(r"Connected to redis", 60)  # before any worker runs
        for name in ("worker", "web", "exiter"):
            services[name].start()
        services["worker"].wait_output(r"ready\.", 90)
        wait_for(lambda: answers(f"http://127.0.0.1:{env['MAILGATE_PORT']}/healthz"), 60, "web")
        services["exiter"].wait_output(r"exited with code 3", 30)
        wait_for(lambda: answers(f"http://127.0.0.1:{flower_port}/healthcheck"), 30, "Flower")
    finally:
        for service in services.values():
            service.stop()
    for name, service in services.items():
        entries = _json_lines(service)
        assert entries, f"{name} wrote nothing"
        assert {entry.get("process") for entry in entries} == {name}, service.output()
    worker = " ".join(str(e["message"]) for e in _json_lines(services["worker"]))
    for seen in (
        "mingle: searching for neighbors",
        "transport: redis://",
        "ready.",
        "Warm shutdown",
    ):
        assert seen in worker
    assert "Visit me at" in services["flower"].output()
    assert "Inspect method" not in services["flower"].output()
    assert THREADS_WARNING not in services["web"].output()
    assert "Listening at" in services["web"].output()


@pytest.mark.parametrize(
    ("argv", "name"),
    [(["mailgate", "web"], "web"), (["/srv/mailgate/.venv/bin/mailgate", "worker"], "worker"),
     (["/usr/bin/redis-server", "--port", "1"], "redis-server")],
    ids=["mailgate-web", "mailgate-worker-by-path", "other-program"],
)  # fmt: skip
def test_a_supervised_command_is_named_in_log_lines(argv: list[str], name: str) -> None:
    assert process_name(argv) == name


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["/v/bin/celery", "-A", "worker.app", "worker", "-n", "a@%h"], "worker"),
     (["/v/bin/celery", "-A", "worker.app", "flower", "--port=5555"], "flower"),
     (["/v/bin/celery", "-A", "worker.app", "inspect", "ping"], None),
     (["/v/bin/pytest", "-k", "worker"], None)],
    ids=["worker", "flower", "inspect", "a-test-run"],
)  # fmt: skip
def test_which_celery_process_gets_json_lines(argv: list[str], expected: str | None) -> None:
    assert role(argv) == expected
