"""Settings: defaults, parsing, and one clear line naming a bad variable."""

from __future__ import annotations

import subprocess

import pytest

from mailgate.config import Settings, SmtpTarget
from mailgate.errors import ConfigError
from tests.support import VENV_BIN


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
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_smtp_url_forms() -> None:
    plain = SmtpTarget.parse("smtp://mx.example:2525")
    assert (plain.host, plain.port, plain.ssl, plain.starttls) == ("mx.example", 2525, False, False)
    tls = SmtpTarget.parse("smtp://u%40x:p%3Ass@mx.example:587?starttls=true")
    assert (tls.username, tls.password, tls.starttls, tls.verify) == ("u@x", "p:ss", True, True)
    assert SmtpTarget.parse("smtps://mx.example").port == 465
    assert SmtpTarget.parse("smtps://mx.example?verify=false").verify is False
    assert "p:ss" not in repr(tls)


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
