"""The CLI finds the gateway it belongs to: in the folder of a `mailgate run` it asks that run's
embedded Redis, it always names the Redis it asked, and an unreachable one is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.cli.dev.embedded import URL_FILE, remember_url
from tests.conftest import RunCli
from tests.support import RedisServer, free_port

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder where `mailgate run` ran: var/ with the note of its embedded Redis."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    return tmp_path


def test_in_a_run_folder_the_cli_asks_its_embedded_redis(
    project: Path, redis_server: RedisServer, mailgate: RunCli
) -> None:
    remember_url(project / "var", redis_server.url)
    result = mailgate("status", UNKNOWN)
    assert result.exit_code == 1
    assert f"Redis {redis_server.url} (the embedded Redis of `mailgate run` here" in result.stderr
    assert f"no e-mail {UNKNOWN} in that Redis" in result.stderr
    assert "Traceback" not in result.output


def test_the_environment_wins_over_the_run_folder(
    project: Path, redis_server: RedisServer, mailgate: RunCli
) -> None:
    remember_url(project / "var", f"redis://127.0.0.1:{free_port()}/0")  # not running
    result = mailgate("status", UNKNOWN, env={"MAILGATE_REDIS_URL": redis_server.url})
    assert result.exit_code == 1
    assert f"Redis {redis_server.url} (MAILGATE_REDIS_URL)" in result.stderr


def test_elsewhere_it_names_the_default_it_asked(
    tmp_path: Path, mailgate: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "var" / URL_FILE).exists()
    result = mailgate("status", UNKNOWN)
    assert "Redis redis://127.0.0.1:6379/0 (the default: MAILGATE_REDIS_URL is unset" in (
        result.stderr
    )


@pytest.mark.parametrize(
    "command",
    [("status", UNKNOWN), ("requeue", "--failed"), ("requeue", UNKNOWN)],
    ids=["status", "requeue-failed", "requeue-one"],
)
def test_an_unreachable_redis_is_one_line(
    project: Path, mailgate: RunCli, command: tuple[str, ...]
) -> None:
    url = f"redis://:secret-redis-pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    remember_url(project / "var", url)
    result = mailgate(*command)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mailgate: cannot reach Redis at redis://:***@127.0.0.1:"), lines
    assert len(lines) == 2  # which Redis it asks, then why that failed: no traceback
    assert "secret-redis-pw" not in result.output
