"""Each setting is declared once (mailgate/config.py); the docs' table and every variable that
shipped code or its process files name are checked against those declarations."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mailgate.config import Settings, settings_table
from mailgate.errors import ConfigError
from mailgate.options import options
from tests.support import VENV_BIN

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
DECLARED = {option.variable for _, option in options(Settings)}


def documented_table() -> str:
    """The table between the markers, in README.md or a docs/*.md page (exactly one of them)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [page for page in pages if page.exists() and START in page.read_text("utf-8")]
    assert len(found) == 1, f"the settings table markers should be in one page, not {found}"
    text = found[0].read_text("utf-8")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def test_the_docs_table_is_the_declarations() -> None:
    # On failure: python -m mailgate.config --markdown, and paste it between the markers.
    assert documented_table() == settings_table()


def test_the_table_is_printed_by_the_module() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "mailgate.config", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout == settings_table()
    assert result.stdout.count("\n") == len(DECLARED) + 2


def shipped_variables() -> dict[str, set[str]]:
    """Every MAILGATE_* name in shipped code and in the files that start its processes."""
    files = [
        *ROOT.glob("mailgate/**/*.py"),
        *ROOT.glob("api/**/*.py"),
        *ROOT.glob("worker/**/*.py"),
    ]
    files += [ROOT / name for name in ("Procfile", "docker-compose.yml", "Dockerfile")]
    found: dict[str, set[str]] = {}
    for path in files:
        if path.exists():
            for name in re.findall(r"MAILGATE_[A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_variable_in_use_is_declared() -> None:
    undeclared = {k: v for k, v in shipped_variables().items() if k not in DECLARED}
    assert not undeclared, f"declare these in mailgate/config.py Settings: {undeclared}"


@pytest.mark.parametrize(
    ("field", "variable"),
    [("port", "MAILGATE_PORT"), ("smtp", "MAILGATE_SMTP_URL"),
     ("web_workers", "MAILGATE_WEB_WORKERS"), ("log_format", "MAILGATE_LOG_FORMAT")],
    ids=["derived", "named", "web", "logs"],
)  # fmt: skip
def test_the_variable_is_derived_from_the_field(field: str, variable: str) -> None:
    assert dict(options(Settings))[field].variable == variable


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("MAILGATE_SINK_PORT", "2600", "sink_port", 2600),
        ("MAILGATE_EMBEDDED_REDIS_PORT", " 6400 ", "embedded_redis_port", 6400),
        ("MAILGATE_FLOWER_PORT", "", "flower_port", 5555),
        ("MAILGATE_WEB_WORKERS", "3", "web_workers", 3),
        ("MAILGATE_WEB_THREADS", "", "web_threads", None),
        ("MAILGATE_LOG_FORMAT", "TEXT", "log_format", "text"),
        ("MAILGATE_LOG_FORMAT", "anything", "log_format", "json"),
        ("MAILGATE_REDIS_SENTINEL_MASTER", "mymaster", "redis_sentinel_master", "mymaster"),
    ],
    ids=["sink", "redis-spaces", "flower-empty", "workers", "threads-unset", "text", "json",
         "sentinel-master"],
)  # fmt: skip
def test_settings_once_read_elsewhere(
    variable: str, value: str, field: str, expected: object
) -> None:
    assert getattr(Settings.from_env({variable: value}), field) == expected


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("MAILGATE_SINK_PORT", "70000", "must be a port from 1 to 65535, got '70000'"),
        ("MAILGATE_FLOWER_PORT", "x", "must be a whole number, got 'x'"),
        ("MAILGATE_EMBEDDED_REDIS_PORT", "0", "must be at least 1, got '0'"),
        ("MAILGATE_WEB_WORKERS", "0", "must be at least 1, got '0'"),
        ("MAILGATE_WEB_THREADS", "many", "must be a whole number, got 'many'"),
    ],
    ids=["sink-big", "flower-word", "redis-zero", "workers-zero", "threads-word"],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    variable: str, value: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value) == f"{variable}: {reason}"


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "MAILGATE_CALLBACK_SECRET": "s3cret-a",
            "MAILGATE_FLOWER_BASIC_AUTH": "u:s3cret-b",
            "MAILGATE_REDIS_SENTINEL_PASSWORD": "s3cret-c",
        }
    )
    assert "s3cret" not in repr(settings)
