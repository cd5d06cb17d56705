"""Session-wide real parts: Redis, an SMTP server, accounts, a Celery worker, the API over HTTP.

Every test talks to the same servers; tests stay independent because each e-mail has its own
EmailId and the SMTP server's behaviour is chosen by recipient (see ScriptedHandler).

The Flask app is built here only, the flaskr way: ``app`` and ``client`` from the module's
``settings`` (a module with parts of its own overrides ``settings`` and ``users``), and
``make_app(base=None, **changes)`` for a test that needs another configuration or a fresh process.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import hypothesis
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from mailgate import cli
from mailgate.config import Settings
from mailgate.users import UserStore
from tests.support import (
    FAST_EXAMPLES,
    RedisServer,
    Service,
    SmtpServer,
    free_port,
    wait_for,
    web_args,
    worker_args,
)

# Property tests: every example in `make test`; `make test-fast` sets HYPOTHESIS_PROFILE=fast,
# which caps each test's examples (tests.support.examples caps those that set their own).
hypothesis.settings.register_profile("fast", max_examples=FAST_EXAMPLES)
if os.environ.get("HYPOTHESIS_PROFILE") == "fast":
    hypothesis.settings.load_profile("fast")

# The accounts every test can use. Passwords here are test fixtures, never real secrets.
SEED_USER, SEED_PASSWORD = "HTTP_User_1", "qwe123"
OTHER_USER, OTHER_PASSWORD = "other", "other-secret-pw"
LIMITED_USER, LIMITED_PASSWORD = "limited", "limited-secret-pw"
PASSWORDS = (SEED_PASSWORD, OTHER_PASSWORD, LIMITED_PASSWORD)

# Tests that start processes live in tests/system/ (integration by place). The few elsewhere that
# use the session's worker or web process are integration tests too, by that fixture.
PROCESS_FIXTURES = frozenset({"worker", "api_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mailgate")


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def attachment_root(workdir: Path) -> Path:
    root = workdir / "attachments"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def env(
    workdir: Path, redis_server: RedisServer, smtp_server: SmtpServer, attachment_root: Path
) -> dict[str, str]:
    """The environment every mailgate process of the session runs with."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATE_", "FLOWER_"))}
    base.pop("PORT", None)  # `mailgate web` would listen there rather than on MAILGATE_PORT
    return {
        **base,
        "MAILGATE_REDIS_URL": redis_server.url,
        "MAILGATE_SMTP_URL": smtp_server.url,
        "MAILGATE_USERS_FILE": str(workdir / "users.toml"),
        "MAILGATE_ATTACHMENT_ROOTS": str(attachment_root),
        # Windows paths of an Ozeki box onto folders under the root (system/test_addresses.py).
        "MAILGATE_ATTACHMENT_PATH_MAP": f"C:\\Recordings={attachment_root}/recordings;"
        f"\\\\pbx\\share={attachment_root}/pbx",
        "MAILGATE_RETRY_BASE_SECONDS": "0.2",
        "MAILGATE_MAX_ATTEMPTS": "4",
        "MAILGATE_REDELIVERY_SECONDS": "15",
        "MAILGATE_SMTP_TIMEOUT_SECONDS": "3",
        "MAILGATE_MAX_MESSAGE_BYTES": "100000",
        "MAILGATE_MAX_ATTACHMENT_BYTES": "300000",
        # On a loaded test machine an argon2 check can take seconds: the suite's logins wait
        # their turn instead of a 503 (the cap's own tests set a short bound).
        "MAILGATE_PASSWORD_CHECK_WAIT_SECONDS": "60",
        "MAILGATE_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def users(settings: Settings) -> UserStore:
    store = UserStore(settings.users_file)
    store.add(SEED_USER, SEED_PASSWORD, ("*@domain.com",))
    store.add(OTHER_USER, OTHER_PASSWORD)
    store.add(LIMITED_USER, LIMITED_PASSWORD, rate="2/minute")
    return store


class MakeApp(Protocol):
    def __call__(self, base: Settings | None = None, **changes: Any) -> Flask: ...


@pytest.fixture(scope="module")
def make_app(settings: Settings) -> MakeApp:
    """A fresh app (as a fresh API process would be) on ``base`` (this module's settings by
    default) with ``changes`` to its Settings fields."""

    def make(base: Settings | None = None, **changes: Any) -> Flask:
        return create_app(replace(base or settings, **changes))

    return make


@pytest.fixture(scope="module")
def app(make_app: MakeApp, users: UserStore) -> Flask:
    """The API app of this module, its accounts in place."""
    return make_app()


def new_address() -> str:
    """A client address of its own, so failed-login throttles of other tests never count."""
    a, b = os.urandom(2)
    return f"198.18.{a}.{b % 254 + 1}"


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the app, from a client address of this test's own."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = new_address()
    return client


class RunCli(Protocol):
    def __call__(
        self, *args: str, env: dict[str, str] | None = None, input: str = ""
    ) -> Result: ...


@pytest.fixture
def mailgate(monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """The ``mailgate`` command run in this process by click's CliRunner, its environment
    this process's without any MAILGATE_/FLOWER_ variable, plus ``env``."""
    for name in list(os.environ):
        if name.startswith(("MAILGATE_", "FLOWER_")):
            monkeypatch.delenv(name)

    def run(*args: str, env: dict[str, str] | None = None, input: str = "") -> Result:
        return CliRunner().invoke(cli.main, list(args), env=env, input=input)

    return run


@pytest.fixture(scope="session")
def worker(env: dict[str, str], workdir: Path, users: UserStore) -> Iterator[Service]:
    service = Service("worker", worker_args(), env, workdir / "worker.log").start()
    service.wait_output(r"ready\.", 60)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def api_url(env: dict[str, str], workdir: Path, users: UserStore) -> Iterator[str]:
    """The API served as the Procfile runs it (``mailgate web``)."""
    service = Service("web", web_args(), env, workdir / "web.log").start()
    url = f"http://127.0.0.1:{env['MAILGATE_PORT']}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(healthy, 30, "the API to answer /healthz")
    yield url
    service.stop()


@pytest.fixture(scope="session")
def logs(workdir: Path) -> list[Path]:
    """Every log file the session's processes write."""
    return [workdir / "worker.log", workdir / "web.log"]
