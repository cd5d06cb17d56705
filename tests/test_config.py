"""Settings: defaults, parsing, and one clear line naming a bad variable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailgate.config import Settings, SmtpTarget
from mailgate.errors import ConfigError
from tests.support import VENV_BIN
from worker.flower import guard_flower


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert str(s.users_file) == "var/users.toml"
    assert s.attachment_roots == ()
    assert s.default_sender == "mailgate@localhost"
    assert (s.host, s.port) == ("127.0.0.1", 9509)
    assert s.retry_base_seconds == 30
    assert s.max_attempts == 10
    assert s.redelivery_seconds == 300
    assert s.flower_basic_auth is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAILGATE_PORT", "abc"),
        ("MAILGATE_PORT", "70000"),
        ("MAILGATE_MAX_ATTEMPTS", "0"),
        ("MAILGATE_RETRY_BASE_SECONDS", "-1"),
        ("MAILGATE_REDELIVERY_SECONDS", "soon"),
        ("MAILGATE_ATTACHMENT_ROOTS", "relative/dir"),
        ("MAILGATE_REDIS_URL", "http://x"),
        ("MAILGATE_SMTP_URL", "http://mail.example"),
        ("MAILGATE_SMTP_URL", "smtp://host:99999"),
        ("MAILGATE_SMTP_URL", "smtp://host?starttls=maybe"),
        ("MAILGATE_FLOWER_BASIC_AUTH", "no-colon"),
        ("MAILGATE_REDIS_APPENDFSYNC", "never"),
        ("MAILGATE_MESSAGE_ID_HOST", "bad host>"),
        ("MAILGATE_LEGACY_CHARSET", "x-klingon"),
        ("MAILGATE_LEGACY_CHARSET", "utf-16"),  # not ASCII-compatible: a form cannot use it
        ("MAILGATE_LEGACY_CHARSET", "iso-2022-kr"),  # WHATWG's "replacement": decodes nothing
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("windows-1252", "windows-1252"),
        ("ISO-8859-1", "windows-1252"),
        ("latin1", "windows-1252"),
        (" ISO-8859-15 ", "iso-8859-15"),
        ("Shift_JIS", "shift_jis"),
        ("utf8", "utf-8"),
    ],
)
def test_the_legacy_charset_is_a_whatwg_label(value: str, name: str) -> None:
    assert Settings.from_env({"MAILGATE_LEGACY_CHARSET": value}).legacy_charset == name


def test_smtp_url_forms() -> None:
    plain = SmtpTarget.parse("smtp://mx.example:2525")
    assert (plain.host, plain.port, plain.ssl, plain.starttls) == ("mx.example", 2525, False, False)
    tls = SmtpTarget.parse("smtp://u%40x:p%3Ass@mx.example:587?starttls=true")
    assert (tls.username, tls.password, tls.starttls, tls.verify) == ("u@x", "p:ss", True, True)
    assert SmtpTarget.parse("smtps://mx.example").port == 465
    assert SmtpTarget.parse("smtps://mx.example?verify=false").verify is False
    assert "p:ss" not in repr(tls)


@pytest.mark.integration  # the installed `mailgate` entry point, as a real process
def test_start_up_stops_with_one_line(tmp_path: object) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "mailgate"), "user", "list"],
        env={"MAILGATE_PORT": "not-a-port", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        cwd=str(tmp_path),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mailgate: MAILGATE_PORT: must be a whole number, got 'not-a-port'"
    ]


@pytest.mark.integration
def test_worker_start_up_stops_with_one_line(tmp_path: object) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "worker.app", "worker"],
        env={"MAILGATE_MAX_ATTEMPTS": "many", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        cwd=str(tmp_path),
        timeout=60,
    )
    assert result.returncode != 0
    assert "mailgate: MAILGATE_MAX_ATTEMPTS: must be a whole number, got 'many'" in result.stderr


def test_status_ttl_must_outlast_the_retry_deadline() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"MAILGATE_STATUS_TTL_SECONDS": "3600", "MAILGATE_RETRY_DEADLINE_SECONDS": "86400"}
        )
    assert caught.value.variable == "MAILGATE_STATUS_TTL_SECONDS"


def test_idempotency_keys_must_not_outlast_the_records() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"MAILGATE_IDEMPOTENCY_SECONDS": str(30 * 86400)})
    assert caught.value.variable == "MAILGATE_IDEMPOTENCY_SECONDS"


def test_dotenv_fills_gaps_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("MAILGATE_PORT=9999\nMAILGATE_MAX_ATTEMPTS=3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILGATE_MAX_ATTEMPTS", "5")
    settings = Settings.from_env()
    assert (settings.port, settings.max_attempts) == (9999, 5)


@pytest.mark.parametrize(
    ("argv", "auth", "refused"),
    [
        (["celery", "-A", "worker.app", "worker"], None, False),
        (["celery", "-A", "worker.app", "flower", "--address=127.0.0.1"], None, False),
        (["celery", "-A", "worker.app", "flower", "--address=0.0.0.0"], None, True),
        (["celery", "-A", "worker.app", "flower"], None, True),
        (["celery", "-A", "worker.app", "flower", "--address", "0.0.0.0"], "a:b", False),
    ],
    ids=["worker", "flower-loopback", "flower-exposed", "flower-default-all", "flower-auth"],
)
def test_flower_is_not_exposed_without_a_login(
    argv: list[str], auth: str | None, refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.delenv("FLOWER_ADDRESS", raising=False)
    env = {"MAILGATE_FLOWER_BASIC_AUTH": auth} if auth else {}
    settings = Settings.from_env(env)
    if refused:
        with pytest.raises(ConfigError, match="MAILGATE_FLOWER_BASIC_AUTH"):
            guard_flower(argv, settings)
    else:
        guard_flower(argv, settings)
        if auth:
            assert os.environ["FLOWER_BASIC_AUTH"] == auth
