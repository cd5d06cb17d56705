"""Flower, a real process on the real worker's events: through its HTTP API and in a browser."""

from __future__ import annotations

import base64
import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailgate.broker import make_celery, publish
from mailgate.config import Settings
from mailgate.status import StatusStore
from tests.conftest import SEED_PASSWORD, SEED_USER
from tests.support import VENV_BIN, Service, free_port, wait_for

pytestmark = pytest.mark.integration  # real processes of its own

FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-browser-pw"
BODY = "Flower must not show this body 4471"
RECIPIENT = "flower-recipient@shop.example"
REFUSED = "reject-flower@shop.example"
"""The test SMTP server answers 550 to this recipient: the e-mail ends Failed at once."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def fetch(url: str) -> bytes:
    token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return bytes(response.read())


def answers(url: str) -> bool:
    try:
        return bool(json.loads(fetch(url)))
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def flower(
    env: dict[str, str], worker: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log = Path(tmp_path_factory.mktemp("flower")) / "flower.log"
    flower_env = {**env, "MAILGATE_FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    args = [str(VENV_BIN / "mailgate"), "flower", "--address", "127.0.0.1", "--port", str(port)]
    service = Service("flower", args, flower_env, log).start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(f"{url}/api/workers"), 60, "Flower to see the worker")
    yield url
    service.stop()


def send(api_url: str, recipient: str) -> str:
    """The EmailId of a SendEmail through the real API."""
    query = urllib.parse.urlencode(
        {
            "command": "SendEmail",
            "Recipient": recipient,
            "Message": BODY,
            "Subject": "flower",
            "Username": SEED_USER,
            "Password": SEED_PASSWORD,
        }
    )
    with urllib.request.urlopen(f"{api_url}/api?{query}", timeout=10) as response:
        text = response.read().decode()
    return text.split("<EmailId>")[1].split("</EmailId>")[0]


def flower_task(flower: str, email_id: str) -> dict[str, Any]:
    task: dict[str, Any] = json.loads(fetch(f"{flower}/api/tasks")).get(email_id) or {}
    return task


def wait_state(flower: str, email_id: str, state: str) -> dict[str, Any]:
    return wait_for(
        lambda: (task := flower_task(flower, email_id)).get("state") == state and task,
        30,
        f"Flower to list the task as {state}",
    )


@pytest.fixture(scope="module")
def delivered(flower: str, api_url: str) -> str:
    """An e-mail sent after Flower started, so Flower saw its task's events."""
    email_id = send(api_url, RECIPIENT)
    wait_state(flower, email_id, "SUCCESS")
    return email_id


@pytest.fixture(scope="module")
def failed(flower: str, api_url: str) -> str:
    """An e-mail the SMTP server refuses for good (550), so it ends Failed."""
    email_id = send(api_url, REFUSED)
    wait_state(flower, email_id, "FAILURE")
    return email_id


def test_flower_requires_its_login(flower: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{flower}/api/tasks", timeout=5)
    assert caught.value.code == 401


def test_flower_api_lists_the_task_without_secrets(flower: str, delivered: str) -> None:
    task = json.loads(fetch(f"{flower}/api/tasks"))[delivered]
    assert task["name"] == "mailgate.deliver"
    assert task["state"] == "SUCCESS"
    shown = json.dumps(task) + fetch(f"{flower}/task/{delivered}").decode()
    for secret in (BODY, RECIPIENT, SEED_PASSWORD):
        assert secret not in shown


def test_a_failed_email_is_a_failed_task_with_its_cause(
    flower: str, failed: str, delivered: str, settings: Settings
) -> None:
    record = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds).get(failed)
    assert record is not None and record.status.value == "Failed" and record.last_error
    task = flower_task(flower, failed)
    assert task["state"] == "FAILURE"
    assert record.last_error in task["exception"]
    assert "550 5.1.1 No such user here" in task["exception"]
    # Flower's state filter (its Failed view) and its per-worker counts find it; Sent stays
    # SUCCESS.
    failures = json.loads(fetch(f"{flower}/api/tasks?state=FAILURE"))
    successes = json.loads(fetch(f"{flower}/api/tasks?state=SUCCESS"))
    assert failed in failures and delivered not in failures
    assert delivered in successes and failed not in successes
    workers = json.loads(fetch(f"{flower}/workers?json=1"))["data"]
    assert sum(worker.get("task-failed", 0) for worker in workers) >= 1


def test_a_failed_email_redelivered_stays_a_failure(
    flower: str, failed: str, settings: Settings
) -> None:
    """A task message that comes again for an e-mail already Failed (a redelivery after a
    crash) ends in FAILURE again, with the same cause, not in SUCCESS."""
    before = flower_task(flower, failed)
    app = make_celery(settings)
    try:
        publish(app, failed)
    finally:
        app.close()

    def ran_again() -> dict[str, Any] | None:
        task = flower_task(flower, failed)
        done = task.get("state") in ("SUCCESS", "FAILURE")
        return task if done and task.get("received", 0) > before["received"] else None

    task = wait_for(ran_again, 30, "the worker to run the task again")
    assert task["state"] == "FAILURE"
    assert task["exception"] == before["exception"]


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
def test_a_person_sees_the_task_page_without_secrets(
    flower: str, delivered: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            context = browser.new_context(
                http_credentials={"username": FLOWER_USER, "password": FLOWER_PASSWORD}
            )
            page = context.new_page()
            page.goto(f"{flower}/task/{delivered}")
            page.wait_for_selector("text=SUCCESS", timeout=15_000)
            text = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "flower-task.png"), full_page=True)
            page.goto(f"{flower}/tasks")
            page.wait_for_selector(f"text={delivered}", timeout=15_000)
            listing = page.inner_text("body")
        finally:
            browser.close()
    assert "mailgate.deliver" in text
    assert delivered in text
    assert "SUCCESS" in text
    for secret in (BODY, RECIPIENT, SEED_PASSWORD):
        assert secret not in text
        assert secret not in listing
