"""The whole path with RabbitMQ as the broker (status store still in Redis)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from mailgate.config import Settings
from mailgate.status import StatusStore
from mailgate.users import UserStore
from tests.conftest import SEED_PASSWORD, SEED_USER, MakeApp
from tests.support import Service, SmtpServer, wait_for, worker_args

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _rabbitmq_reachable(), reason="no RabbitMQ listening on 127.0.0.1:5672"),
]


@pytest.fixture(scope="module")
def amqp_env(env: dict[str, str]) -> dict[str, str]:
    # Its own Redis database: the suite's other worker (on the Redis broker) must not pick up
    # these e-mails from the shared due set.
    redis_db1 = env["MAILGATE_REDIS_URL"].rsplit("/", 1)[0] + "/1"
    return {**env, "MAILGATE_BROKER_URL": AMQP_URL, "MAILGATE_REDIS_URL": redis_db1}


@pytest.fixture(scope="module")
def amqp_worker(
    amqp_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, users: UserStore
) -> Iterator[Service]:
    log = Path(tmp_path_factory.mktemp("amqp")) / "worker.log"
    service = Service("amqp-worker", worker_args(2), amqp_env, log).start()
    service.wait_output(r"ready\.", 60)
    yield service
    service.stop()


def test_end_to_end_over_rabbitmq(
    amqp_env: dict[str, str], amqp_worker: Service, smtp_server: SmtpServer, make_app: MakeApp
) -> None:
    settings = Settings.from_env(amqp_env)
    assert settings.broker_url == AMQP_URL
    client = make_app(settings).test_client()
    response = client.get(
        "/api",
        query_string={
            "command": "SendEmail",
            "Recipient": "rabbit@shop.example",
            "Message": "via amqp",
            "Username": SEED_USER,
            "Password": SEED_PASSWORD,
        },
    )
    body = ET.fromstring(response.data)
    assert body.findtext("Code") == "200"
    email_id = str(body.findtext("EmailId"))
    received = wait_for(lambda: smtp_server.handler.find(email_id), 30, "the message")
    assert received.message.get_content().strip() == "via amqp"
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    wait_for(lambda: (r := store.get(email_id)) is not None and r.status == "Sent", 30, "Sent")
    assert "amqp://guest:**@127.0.0.1:5672//" in amqp_worker.output()  # it really used AMQP


def test_retries_over_rabbitmq_use_the_due_set(
    amqp_env: dict[str, str], amqp_worker: Service, smtp_server: SmtpServer, make_app: MakeApp
) -> None:
    settings = Settings.from_env(amqp_env)
    client = make_app(settings).test_client()
    response = client.get(
        "/api",
        query_string={
            "command": "SendEmail",
            "Recipient": "tempfail1-rabbit@shop.example",
            "Message": "m",
            "Username": SEED_USER,
            "Password": SEED_PASSWORD,
        },
    )
    email_id = str(ET.fromstring(response.data).findtext("EmailId"))
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds)
    done = wait_for(
        lambda: (r := store.get(email_id)) is not None and r.status == "Sent" and r, 30, "Sent"
    )
    assert done.attempts == 2


def test_more_emails_than_the_prefetch_all_arrive(
    amqp_env: dict[str, str], amqp_worker: Service, smtp_server: SmtpServer, make_app: MakeApp
) -> None:
    """RabbitMQ sends a worker more messages only as it acks those it holds (4 per thread, 8
    here): 24 e-mails through a worker of 2 threads arrive only if every one is acked."""
    client = make_app(Settings.from_env(amqp_env)).test_client()
    ids = []
    for number in range(24):
        response = client.get(
            "/api",
            query_string={
                "command": "SendEmail",
                "Recipient": f"prefetch{number}@shop.example",
                "Message": "acked",
                "Username": SEED_USER,
                "Password": SEED_PASSWORD,
            },
        )
        ids.append(str(ET.fromstring(response.data).findtext("EmailId")))
    for email_id in ids:
        wait_for(lambda i=email_id: smtp_server.handler.find(i), 60, "every message")


QUORUM_VHOST = "mailgate-quorum"


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl is not installed")
def test_quorum_queue_broker_delivers(
    env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    users: UserStore,
    smtp_server: SmtpServer,
    make_app: MakeApp,
) -> None:
    # A vhost of its own: the suite's other RabbitMQ tests declare a classic `mailgate` queue,
    # and a queue's type cannot change once declared.
    if QUORUM_VHOST not in _rabbitmqctl("list_vhosts").split():
        _rabbitmqctl("add_vhost", QUORUM_VHOST)
    _rabbitmqctl("set_permissions", "-p", QUORUM_VHOST, "guest", ".*", ".*", ".*")
    redis_db3 = env["MAILGATE_REDIS_URL"].rsplit("/", 1)[0] + "/3"
    quorum_env = {
        **env,
        "MAILGATE_REDIS_URL": redis_db3,
        "MAILGATE_BROKER_QUORUM_QUEUES": "1",
        "MAILGATE_BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{QUORUM_VHOST}",
    }
    log = Path(tmp_path_factory.mktemp("quorum")) / "worker.log"
    worker = Service("quorum-worker", worker_args(2), quorum_env, log).start()
    try:
        worker.wait_output(r"ready\.", 60)
        client = make_app(Settings.from_env(quorum_env)).test_client()
        ids = []
        for number in range(5):
            response = client.get(
                "/api",
                query_string={
                    "command": "SendEmail",
                    "Recipient": f"quorum{number}@shop.example",
                    "Message": "replicated",
                    "Username": SEED_USER,
                    "Password": SEED_PASSWORD,
                },
            )
            body = ET.fromstring(response.data)
            assert body.findtext("Code") == "200"
            ids.append(str(body.findtext("EmailId")))
        for email_id in ids:
            wait_for(lambda i=email_id: smtp_server.handler.find(i), 30, "the message")
        queues = dict(
            line.split("\t")[:2]
            for line in _rabbitmqctl("list_queues", "-p", QUORUM_VHOST, "name", "type").splitlines()
            if "\t" in line
        )
        assert queues.get("mailgate") == "quorum"
        assert "Unrecoverable" not in worker.output()
    finally:
        worker.stop()
